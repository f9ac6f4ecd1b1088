"""Per-worker file shards: which files and text each worker's pipeline reads
(train_paths / pairs / _pieces with shard=(index, count)), and when a task
falls back to every worker reading all of the data."""

import pytest

from trainers.config import TrainConfig
from trainers.tasks import get_task


def write(folder, name, text):
  path = folder / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_classification_workers_read_every_nth_file(tmp_path):
  paths = [write(tmp_path, f"part-{i}.tsv", f"sentence\tlabel\nrow {i}\ta\n"
                 f"other {i}\tb\n") for i in range(5)]
  task = get_task(TrainConfig(task="text_classification",
                              train_files=str(tmp_path / "part-*.tsv"),
                              text_column="sentence", label_column="label"))
  assert task.train_paths((0, 2)) == paths[0::2]
  assert task.train_paths((1, 2)) == paths[1::2]
  assert task.can_shard_files(5) and not task.can_shard_files(6)
  packed = get_task(TrainConfig(task="text_classification", pack_examples=True,
                                train_files=str(tmp_path / "part-*.tsv"),
                                text_column="sentence", label_column="label"))
  assert not packed.can_shard_files(2)  # packing plans over all the rows


def test_translation_workers_read_aligned_file_pairs(tmp_path):
  sources = [write(tmp_path, f"{i}.src", f"s{i}a\ns{i}b\n") for i in range(3)]
  targets = [write(tmp_path, f"{i}.tgt", f"t{i}a\nt{i}b\n") for i in range(3)]
  task = get_task(TrainConfig(task="translation",
                              train_source_files=",".join(sources),
                              train_target_files=",".join(targets)))
  assert list(task.pairs("train", (1, 2))) == [("s1a", "t1a"), ("s1b", "t1b")]
  assert list(task.pairs("train", (0, 2))) == [
      ("s0a", "t0a"), ("s0b", "t0b"), ("s2a", "t2a"), ("s2b", "t2b")]
  assert task.can_shard_files(3) and not task.can_shard_files(4)


def test_masked_lm_shards_only_with_eval_files(tmp_path):
  for i in range(2):
    write(tmp_path, f"{i}.txt", f"some text {i}\n" * 3)
  held_out = get_task(TrainConfig(task="masked_lm",
                                  train_files=str(tmp_path / "*.txt")))
  assert not held_out.can_shard_files(2)  # its dev rows end the last file
  dev = write(tmp_path, "dev.jsonl", '{"text": "dev"}\n')
  with_dev = get_task(TrainConfig(task="masked_lm", eval_files=dev,
                                  train_files=str(tmp_path / "*.txt")))
  assert with_dev.can_shard_files(2)


@pytest.mark.parametrize("eval_files", [False, True])
def test_language_model_worker_text_is_its_files_training_text(tmp_path,
                                                              eval_files):
  texts = [f"file {i} " * 40 + "\n" for i in range(3)]
  for i, text in enumerate(texts):
    write(tmp_path, f"{i}.txt", text)
  dev = write(tmp_path, "dev.txt", "dev text\n") if eval_files else ""
  task = get_task(TrainConfig(task="language_model", preset="tiny",
                              train_files=str(tmp_path / "[0-9].txt"),
                              eval_files=dev))
  whole = "".join(task._pieces(train=True))
  mine = ["".join(task._pieces(train=True, shard=(i, 2))) for i in range(2)]
  if eval_files:
    assert mine == [texts[0] + texts[2], texts[1]]
  else:  # the dev tail (last 10% of all the text) trains nowhere
    boundary = len(whole)
    assert boundary == int(sum(map(len, texts)) * 0.9)
    assert mine == [texts[0] + whole[len(texts[0]) + len(texts[1]):],
                    texts[1]]
    assert len(mine[0]) < len(texts[0]) + len(texts[2])

"""benchmarks/data_memory.py: its corpora read back through the trainer's
reader, and its peak-RSS measurement sees what a child allocates."""

import sys

import pytest

from benchmarks.data_memory import (measure, split_text,
                                    write_classification_corpus,
                                    write_text_corpus)
from trainers.data_files import RowReader

ROWS = [("a fine film", "1"), ("dull , with a comma", "0"),
        ('says "no"', "0")]


@pytest.mark.parametrize("extension", ["csv", "jsonl.gz"])
def test_the_larger_corpus_repeats_every_row_with_a_distinct_suffix(
    tmp_path, extension):
  small, large = tmp_path / f"x1.{extension}", tmp_path / f"x3.{extension}"
  assert write_classification_corpus(ROWS, 1, str(small)) == 3
  assert write_classification_corpus(ROWS, 3, str(large)) == 9

  def read(path):
    reader = RowReader([str(path)], ["sentence", "label"])
    return [(r.values["sentence"], r.values["label"]) for r in reader.rows()]

  assert read(small) == [(f"{text} r0", label) for text, label in ROWS]
  rows = read(large)
  assert rows[:3] == read(small)  # the big corpus starts with the small one
  assert len(set(rows)) == 9
  assert rows[8] == ('says "no" r2', "0")


def test_the_text_corpus_is_the_first_lines_repeated(tmp_path):
  source = tmp_path / "input.txt"
  source.write_text("".join(f"line {i}\n" for i in range(20)))
  train, dev = split_text(str(source))
  assert (train.count("\n"), dev.count("\n")) == (18, 2)
  assert train + dev == source.read_text()
  path = tmp_path / "x4.txt"
  assert write_text_corpus(train, 4, str(path)) == 4 * len(train)
  assert path.read_text() == train * 4


def test_measure_reports_the_childs_peak_and_exit_status(tmp_path):
  grab = ("b = bytearray(96 << 20)\n"
          "for i in range(0, len(b), 4096): b[i] = 1\n"
          "del b\n"
          "import time; time.sleep(0.3)\n")
  result = measure([sys.executable, "-c", grab], str(tmp_path / "log"),
                   poll_seconds=0.05)
  assert result["returncode"] == 0
  assert 96 <= result["peak_rss_mib"] < 200
  assert result["rss_timeline_mib"]  # sampled while it ran
  assert measure([sys.executable, "-c", "raise SystemExit(3)"],
                 str(tmp_path / "log2"))["returncode"] == 3

"""Bad data through the real CLI (`python -m trainers.train`): each case ends
with exit code 1 and one `Error:` line on stderr that names the file and line
(or, for a whole file, the file or flag) and what to do, never a traceback.
--skip_bad_rows instead skips such rows, trains, and records how many it
skipped in results.json."""

import json
import os

import pytest

from tests.conftest import run_module

TINY = ["--preset=tiny", "--train_steps=2", "--batch_size=4",
        "--eval_every_steps=2", "--checkpoint_every_steps=2",
        "--log_every_steps=1", "--warmup_steps=1"]


def write(folder, name, text):
  """Writes str or bytes `text` to folder/name; returns the path."""
  path = os.path.join(folder, name)
  with open(path, "wb") as f:
    f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
  return path


def train(folder, *flags):
  return run_module("trainers.train", *TINY,
                    f"--model_dir={os.path.join(folder, 'model')}", *flags)


def error_line(result):
  """The one `Error: ...` line the CLI prints for a UserError."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("Error: ")]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


DEV_CSV = "text,label\nfine,a\nawful,b\n"
DEV_JSONL = '{"text": "fine", "label": "a"}\n{"text": "awful", "label": "b"}\n'


def classification(folder, train_name, train_text, dev_name=None,
                   dev_text=None, *flags):
  """Flags of a text_classification run on the given training file (and a
  good dev file in the same format, unless dev_text is given)."""
  extension = train_name.split(".", 1)[1]
  dev_name = dev_name or "dev." + extension
  dev_text = dev_text or (DEV_JSONL if extension == "jsonl" else DEV_CSV)
  train_path = write(folder, train_name, train_text)
  dev_path = write(folder, dev_name, dev_text)
  return (["--task=text_classification", f"--train_files={train_path}",
           f"--eval_files={dev_path}", *flags], train_path, dev_path)


# (id, files and flags: folder -> (flags, where), what the message says to do)
# `where` is what the error line must start with: the file and line, or the
# file or flag for a problem of a whole file.


def csv_missing_column(folder):
  flags, path, _ = classification(folder, "train.csv",
                                  "sentence,label\nfine,a\nawful,b\n")
  return flags, f"{path}:1: no column 'text'"


def csv_empty_text(folder):
  flags, path, _ = classification(folder, "train.csv",
                                  'text,label\nfine,a\n"  ",b\nawful,b\n')
  return flags, f"{path}:3: empty text in column 'text'"


def csv_unknown_label(folder):
  flags, path, _ = classification(
      folder, "train.csv", "text,label\nfine,a\nawful,b\nmeh,c\n", None, None,
      "--labels=a,b")
  return flags, f"{path}:4: label 'c' is not one of ['a', 'b']"


def csv_broken_quote(folder):
  flags, path, _ = classification(
      folder, "train.csv", 'text,label\nfine,a\n"awful, really,b\nok,a\n')
  return flags, f"{path}:3: broken CSV"


def csv_invalid_utf8(folder):
  flags, path, _ = classification(
      folder, "train.csv", b"text,label\nfine,a\nawful,b\ncaf\xe9,a\n")
  return flags, f"{path}:4: not valid UTF-8"


def jsonl_missing_key(folder):
  flags, path, _ = classification(
      folder, "train.jsonl",
      '{"text": "fine", "label": "a"}\n{"text": "awful", "lable": "b"}\n')
  return flags, f"{path}:2: no key 'label'"


def jsonl_empty_text(folder):
  flags, path, _ = classification(
      folder, "train.jsonl", '{"text": "fine", "label": "a"}\n\n'
      '{"text": "", "label": "b"}\n')
  return flags, f"{path}:3: empty text in column 'text'"


def jsonl_invalid_utf8(folder):
  flags, path, _ = classification(
      folder, "train.jsonl", b'{"text": "fine", "label": "a"}\n'
      b'{"text": "na\xefve", "label": "b"}\n')
  return flags, f"{path}:2: not valid UTF-8"


def jsonl_unknown_label_in_eval_files(folder):
  flags, _, dev = classification(
      folder, "train.jsonl", DEV_JSONL * 3, "dev.jsonl",
      '{"text": "fine", "label": "a"}\n{"text": "so-so", "label": "c"}\n')
  return flags, f"{dev}:2: label 'c' is not one of ['a', 'b']"


def empty_file(folder):
  flags, path, _ = classification(folder, "train.jsonl", "")
  return flags, f"{path}: no rows"


def glob_matching_nothing(folder):
  flags, _, _ = classification(folder, "train.csv", DEV_CSV)
  pattern = os.path.join(folder, "train-*.csv")
  flags[1] = f"--train_files={pattern}"
  return flags, f"--train_files: the pattern '{pattern}' matches no file"


def one_class(folder):
  flags, path, _ = classification(folder, "train.csv",
                                  "text,label\nfine,a\ngood,a\n")
  return flags, f"--train_files={path}: every row has the label 'a'"


def translation(folder, source_text, target_text):
  source = write(folder, "train.de", source_text)
  target = write(folder, "train.en", target_text)
  dev_source = write(folder, "val.de", "ein Hund\n")
  dev_target = write(folder, "val.en", "a dog\n")
  return ["--task=translation", f"--train_source_files={source}",
          f"--train_target_files={target}", f"--eval_source_files={dev_source}",
          f"--eval_target_files={dev_target}"], source, target


def translation_different_lengths(folder):
  flags, source, target = translation(
      folder, "ein Hund\neine Katze\nzwei Hunde\n", "a dog\na cat\n")
  return flags, f"{source}:3: this file has more lines than {target}"


def translation_empty_line(folder):
  flags, _, target = translation(
      folder, "ein Hund\neine Katze\nzwei Hunde\n", "a dog\n \ntwo dogs\n")
  return flags, f"{target}:2: empty line"


def language_model_invalid_utf8(folder):
  lines = [f"line {i} of a plain text file\n".encode() for i in range(10)]
  lines[6] = b"caf\xc3 au lait\n"
  path = write(folder, "input.txt", b"".join(lines))
  return (["--task=language_model", f"--train_files={path}"],
          f"{path}:7: not valid UTF-8")


# What each message tells the user to do (a regular expression).
CASES = [
    (csv_missing_column, r"--text_column.*add a header line"),
    (csv_empty_text, r"write a text there or remove the row.*--skip_bad_rows"),
    (csv_unknown_label, r"add it to --labels or correct the row"),
    (csv_broken_quote, r"never closed.*must be in double quotes"),
    (csv_invalid_utf8, r"save the file as UTF-8"),
    (jsonl_missing_key, r"Add the key, or name the right one.*--label_column"),
    (jsonl_empty_text, r"write a text there or remove the row"),
    (jsonl_invalid_utf8, r"save the file as UTF-8.*--skip_bad_rows"),
    (jsonl_unknown_label_in_eval_files,
     r"the labels of the training files.*--labels"),
    (empty_file, r"add rows or remove it from the file list"),
    (glob_matching_nothing, r"check the path"),
    (one_class, r"at least two labels.*--label_column=label"),
    (translation_different_lengths, r"must match line for line"),
    (translation_empty_line, r"must both hold text.*--skip_bad_rows"),
    (language_model_invalid_utf8, r"save the file as UTF-8"),
]


@pytest.mark.parametrize("case,fix", CASES, ids=[c.__name__ for c, _ in CASES])
def test_bad_data_is_a_user_error(tmp_path, case, fix):
  import re
  flags, where = case(str(tmp_path))
  line = error_line(train(str(tmp_path), *flags))
  assert line.startswith(f"Error: {where}"), line
  assert re.search(fix, line), line


def results(folder):
  with open(os.path.join(folder, "model", "results.json")) as f:
    return json.load(f)


def test_skip_bad_rows_trains_and_counts_them(tmp_path):
  folder = str(tmp_path)
  good = [f'{{"text": "{text}", "label": "{label}"}}\n'.encode()
          for text, label in [("good film", "a"), ("bad film", "b")] * 10]
  bad = [b'{"text": "", "label": "a"}\n',  # an empty text
         b'{"text": "meh", "label": "c"}\n',  # not one of --labels
         b'{"text": "no label"}\n',  # a missing key
         b'not json\n',
         b'{"text": "caf\xe9", "label": "a"}\n']  # not UTF-8
  train_path = write(folder, "train.jsonl",
                     b"".join(good[:10] + bad + good[10:]))
  dev_path = write(folder, "dev.jsonl", DEV_JSONL)
  result = train(folder, "--task=text_classification",
                 f"--train_files={train_path}", f"--eval_files={dev_path}",
                 "--labels=a,b", "--skip_bad_rows")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Skipped 5 bad training rows" in result.stderr
  data = results(folder)["data"]
  assert data["skipped_rows"] == 5 and data["train_rows"] == len(good)


def test_skip_bad_rows_counts_translation_pairs_once(tmp_path):
  folder = str(tmp_path)
  sources = ["ein Hund", "eine Katze", "", "zwei Hunde", "ein Haus"] * 4
  targets = ["a dog", "a cat", "nothing", "two dogs", " "] * 4
  flags, _, _ = translation(folder, "\n".join(sources) + "\n",
                            "\n".join(targets) + "\n")
  result = train(folder, *flags, "--skip_bad_rows", "--vocabulary_size=20")
  assert result.returncode == 0, result.stderr[-3000:]
  data = results(folder)["data"]
  assert data["skipped_rows"] == 8 and data["train_rows"] == 12

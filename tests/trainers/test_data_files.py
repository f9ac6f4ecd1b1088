"""Unit tests of trainers/data_files.py, on small files written to tmp_path."""

import gzip

import pytest

from trainers.data_files import (RowReader, expand_files, file_format,
                                 read_text_chunks)
from trainers.errors import UserError


def write(path, text, compress=False, encoding="utf-8"):
  """Writes str (or bytes) `text` to path, gzipped when compress; returns
  the path as a str."""
  data = text if isinstance(text, bytes) else text.encode(encoding)
  if compress:
    with gzip.open(path, "wb") as f:
      f.write(data)
  else:
    path.write_bytes(data)
  return str(path)


def read(paths, columns=("text", "label"), **options):
  """[(line, values dict)] of a RowReader's rows."""
  reader = RowReader(paths if isinstance(paths, list) else [paths], columns,
                     **options)
  return [(row.line, row.values) for row in reader.rows()]


CSV = ('text,label\n'
       '"hello, world",1\n'
       '"she said ""no""",0\n'
       '"two\nlines",1\n'
       'after,0\n')


@pytest.mark.parametrize("compress", [False, True])
def test_csv_quoting_and_line_numbers(tmp_path, compress):
  path = write(tmp_path / ("a.csv.gz" if compress else "a.csv"), CSV, compress)
  assert read(path) == [
      (2, {"text": "hello, world", "label": "1"}),
      (3, {"text": 'she said "no"', "label": "0"}),
      (4, {"text": "two\nlines", "label": "1"}),
      (6, {"text": "after", "label": "0"}),  # the row after the line break
  ]


def test_csv_columns_by_name_in_any_order(tmp_path):
  path = write(tmp_path / "a.csv",
               "id,label,text\r\n7,pos,good\r\n8,neg,bad\r\n")
  assert read(path) == [(2, {"text": "good", "label": "pos"}),
                        (3, {"text": "bad", "label": "neg"})]


@pytest.mark.parametrize("compress", [False, True])
def test_tsv(tmp_path, compress):
  path = write(tmp_path / ("a.tsv.gz" if compress else "a.tsv"),
               'label\ttext\n1\tsay "hi", then go\n0\tno\n', compress)
  assert read(path) == [(2, {"text": 'say "hi", then go', "label": "1"}),
                        (3, {"text": "no", "label": "0"})]


@pytest.mark.parametrize("compress", [False, True])
def test_jsonl_numbers_become_strings(tmp_path, compress):
  path = write(tmp_path / ("a.jsonl.gz" if compress else "a.jsonl"),
               '{"text": "caf\\u00e9", "label": 1}\n'
               '{"text": "ok", "label": "pos", "other": [1, 2]}\n'
               '{"text": "t", "label": true}\n'
               '{"text": "f", "label": 2.5}\n', compress)
  assert read(path) == [(1, {"text": "café", "label": "1"}),
                        (2, {"text": "ok", "label": "pos"}),
                        (3, {"text": "t", "label": "true"}),
                        (4, {"text": "f", "label": "2.5"})]


@pytest.mark.parametrize("compress", [False, True])
def test_txt(tmp_path, compress):
  path = write(tmp_path / ("a.txt.gz" if compress else "a.txt"),
               "first line\r\n\nthird, with a comma\n", compress)
  assert read(path, columns=["text"]) == [
      (1, {"text": "first line"}), (3, {"text": "third, with a comma"})]
  # The one column of a .txt file takes the task's --text_column name.
  assert read(path, columns=["sentence"], text_column="sentence")[0] == (
      1, {"sentence": "first line"})
  with pytest.raises(UserError, match=r"a\.txt.*use a \.tsv, \.csv or \.jsonl"):
    read(path)  # text and label: not in a .txt file


@pytest.mark.parametrize("name,text", [
    ("a.csv", "text,label\nx,1\n"),
    ("a.tsv", "text\tlabel\nx\t1\n"),
    ("a.jsonl", '{"text": "x", "label": 1}\n'),
])
def test_byte_order_mark_is_not_data(tmp_path, name, text):
  path = write(tmp_path / name, "\ufeff" + text)
  assert read(path) == [(2 if name != "a.jsonl" else 1,
                         {"text": "x", "label": "1"})]


def test_blank_lines_are_not_rows(tmp_path):
  csv_path = write(tmp_path / "a.csv", "text,label\n\nx,1\n   \n\ny,0\n\n")
  assert read(csv_path) == [(3, {"text": "x", "label": "1"}),
                            (6, {"text": "y", "label": "0"})]
  tsv_path = write(tmp_path / "a.tsv", "text\tlabel\n\nx\t1\n \n")
  assert read(tsv_path) == [(3, {"text": "x", "label": "1"})]
  jsonl_path = write(tmp_path / "a.jsonl", '\n{"text": "x", "label": 1}\n\n')
  assert read(jsonl_path) == [(2, {"text": "x", "label": "1"})]


def test_globs_sorted_and_comma_lists(tmp_path):
  for name in ("train-2.jsonl", "train-10.jsonl", "train-1.jsonl", "dev.jsonl"):
    write(tmp_path / name, '{"text": "x", "label": 1}\n')
  (tmp_path / "train-dir.jsonl").mkdir()  # a directory is never a file
  pattern = str(tmp_path / "train-*.jsonl")
  expected = [str(tmp_path / n) for n in
              ("train-1.jsonl", "train-10.jsonl", "train-2.jsonl")]
  assert expand_files(pattern, "train_files") == expected
  dev = str(tmp_path / "dev.jsonl")
  assert expand_files(f"{dev}, {pattern},", "train_files") == [dev] + expected
  assert len(read(expand_files(pattern, "train_files"))) == 3


def test_file_list_errors_name_the_flag(tmp_path):
  with pytest.raises(UserError, match=r"--train_files: the pattern .*nope-\*"
                     r"\.tsv' matches no file.*check the path"):
    expand_files(str(tmp_path / "nope-*.tsv"), "train_files")
  with pytest.raises(UserError, match=r"--eval_files: .*missing\.csv: file "
                     "not found"):
    expand_files(str(tmp_path / "missing.csv"), "eval_files")
  with pytest.raises(UserError, match=r"is a directory; name its files"):
    expand_files(str(tmp_path), "train_files")
  with pytest.raises(UserError, match="--train_files=' , ' names no file"):
    expand_files(" , ", "train_files")


def test_unknown_extension(tmp_path):
  assert file_format("x/y.JSONL.gz") == "jsonl"
  for name in ("data.parquet", "data.gz", "data"):
    path = write(tmp_path / name, "text,label\nx,1\n")
    with pytest.raises(UserError, match=rf"{name}: unknown file type.*rename "
                       r"the file to end in \.tsv, \.csv, \.jsonl or \.txt"):
      expand_files(path, "train_files")
  # Line-aligned text (translation) may have any name.
  assert expand_files(str(tmp_path / "data"), "train_source_files",
                      plain_text=True) == [str(tmp_path / "data")]


def test_skip_bad_rows_counts_them(tmp_path):
  tsv = write(tmp_path / "a.tsv", "text\tlabel\nok\t1\ntoo\tmany\tfields\n"
              "fine\t0\n")
  jsonl = write(tmp_path / "b.jsonl", b'{"text": "x", "label": 1}\n'
                b'not json\n[1, 2]\n{"label": 1}\n{"text": null, "label": 1}\n'
                b'{"text": "caf\xe9", "label": 1}\n{"text": "y", "label": 0}\n')
  reader = RowReader([tsv, jsonl], ["text", "label"], skip_bad_rows=True)
  assert [(row.path, row.line) for row in reader.rows()] == [
      (tsv, 2), (tsv, 4), (jsonl, 1), (jsonl, 7)]
  assert reader.bad_rows.count == 6
  assert reader.bad_rows.examples[0].startswith(f"{tsv}:3: 3 tab-separated")
  assert len(reader.bad_rows.examples) == 5  # the first few, for the log
  # Without skip_bad_rows the first bad row stops the reader.
  with pytest.raises(UserError, match=rf"{tsv}:3: 3 tab-separated fields.*"
                     "pass --skip_bad_rows"):
    read([tsv, jsonl])


def test_a_file_of_only_bad_rows_is_not_empty(tmp_path):
  good = write(tmp_path / "a.jsonl", '{"text": "x", "label": 1}\n')
  bad = write(tmp_path / "b.jsonl", '{"text": "x"}\n')
  empty = write(tmp_path / "c.jsonl", "\n")
  reader = RowReader([good, bad], ["text", "label"], skip_bad_rows=True)
  assert len(list(reader.rows())) == 1 and reader.bad_rows.count == 1
  # An empty file after a skipped row is still an error.
  with pytest.raises(UserError, match=rf"{empty}: no rows"):
    list(RowReader([bad, empty], ["text", "label"], skip_bad_rows=True).rows())


@pytest.mark.parametrize("name,text,message", [
    ("a.csv", 'text,label\nok,1\n"unclosed,1\nx,0\n',
     r"a\.csv:3: broken CSV .*double quotes"),
    ("a.csv", 'text,label\n"a"b,1\n', r"a\.csv:2: broken CSV"),
    ("a.tsv", "sentence\tlabel\nx\t1\n",
     r"a\.tsv:1: no column 'text'; the header has \['sentence', 'label'\]"
     r".*--text_column"),
    ("a.csv", "", r"a\.csv: no rows \(the file is empty"),
    ("a.tsv", "text\tlabel\n", r"a\.tsv: no rows .*only a header"),
    ("a.jsonl", '{"text": "x", "lab": 1}\n',
     r"a\.jsonl:1: no key 'label'; the object has \['lab', 'text'\]"),
    ("a.jsonl", '{"text": "x", "label": 1}\n{"text": "x", "label": [1]}\n',
     r"a\.jsonl:2: key 'label' holds \[1\], not a string or number"),
    ("a.csv", b"text,label\nok,1\nna\xefve,1\n",
     r"a\.csv:3: not valid UTF-8 .*save the file as UTF-8"),
    ("a.tsv", b"text\tlabel\nok\t1\nna\xefve\t1\n",
     r"a\.tsv:3: not valid UTF-8"),
])
def test_errors_name_file_and_line(tmp_path, name, text, message):
  path = write(tmp_path / name, text)
  with pytest.raises(UserError, match=message):
    read(path)


def test_not_gzip_data(tmp_path):  # a .gz name on plain text
  path = write(tmp_path / "a.csv.gz", "text,label\nx,1\n")
  with pytest.raises(UserError, match=r"a\.csv\.gz: cannot read the file: "
                     "not gzip data"):
    read(path)


def test_read_text_chunks(tmp_path):
  txt = write(tmp_path / "a.txt.gz", "\ufeffone\ntwo", compress=True)
  jsonl = write(tmp_path / "b.jsonl", '{"body": "three"}\n{"x": 1}\n')
  assert list(read_text_chunks([txt, jsonl], text_column="body",
                               skip_bad_rows=True)) == [
      (txt, 1, "one\n"), (txt, 2, "two"), (jsonl, 1, "three\n")]
  bad = write(tmp_path / "c.txt", b"fine\n\xff\xfe\n")
  with pytest.raises(UserError, match=rf"{bad}:2: not valid UTF-8"):
    list(read_text_chunks([bad], skip_bad_rows=True))  # text is never torn
  empty = write(tmp_path / "d.de", "\n\n")
  with pytest.raises(UserError, match=rf"{empty}: the file is empty"):
    list(read_text_chunks([empty], plain_text=True))


def test_truncated_gzip(tmp_path):
  path = tmp_path / "a.jsonl.gz"
  write(path, '{"text": "x", "label": 1}\n' * 100, compress=True)
  path.write_bytes(path.read_bytes()[:-12])
  with pytest.raises(UserError, match=r"a\.jsonl\.gz: cannot read the file: "
                     "the gzip data ends early.*truncated"):
    read(str(path))

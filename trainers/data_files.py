"""The user's data files: naming them, reading them row by row, and checking them.

A file list is a comma-separated list of paths and globs (`data/train-*.jsonl.gz`),
expanded here, in order, each glob sorted. A file's format comes from its
name, after an optional `.gz`:
  .tsv    a header line naming the columns, then one row a line, fields
          split on tabs (no quoting: GLUE's convention)
  .csv    RFC 4180: a header row, commas, "double quotes" around fields that
          hold commas, quotes ("" inside) or line breaks
  .jsonl  one JSON object a line; a column is a key
  .txt    one text a line (the column is the whole line)
Rows are streamed, never read whole into memory. Every problem raises a
UserError naming the file, the line and the fix; a reader made with
skip_bad_rows=True skips the bad rows instead and counts them (BadRows), so
that a run can log and record how many it dropped. Blank lines are not rows.
"""

import csv
import dataclasses
import glob
import gzip
import json
import os

import tensorflow as tf

from trainers.errors import UserError

FORMATS = ("tsv", "csv", "jsonl", "txt")
TEXT_COLUMN = "text"  # the one column of a .txt file


def file_format(path):
  """'tsv', 'csv', 'jsonl' or 'txt' from the name (after an optional .gz)."""
  name = path[:-3] if path.endswith(".gz") else path
  extension = os.path.splitext(name)[1].lstrip(".").lower()
  if extension not in FORMATS:
    kind = (f"file type {extension!r}" if extension else
            "file type (no extension)")
    raise UserError(f"{path}: unknown {kind}; rename the file to end in "
                    ".tsv, .csv, .jsonl or .txt (optionally followed by .gz)")
  return extension


def expand_files(spec, flag, plain_text=False):
  """'a.tsv,dir/*.csv' -> [paths]; UserError (naming `flag`) if a path does
  not exist, a glob matches nothing, or the list is empty. plain_text: the
  files are text whatever their name (line-aligned `train.de`, `train.en.gz`)."""
  paths = []
  for item in (part.strip() for part in spec.split(",")):
    if not item:
      continue
    if glob.has_magic(item):
      matches = sorted(tf.io.gfile.glob(item))
      matches = [m for m in matches if not tf.io.gfile.isdir(m)]
      if not matches:
        raise UserError(f"--{flag}: the pattern {item!r} matches no file"
                        f"{_relative_to(item)}; check the path, and quote "
                        "the pattern so that the shell passes it unexpanded")
      paths.extend(matches)
    elif not tf.io.gfile.exists(item):
      raise UserError(f"--{flag}: {item}: file not found{_relative_to(item)}; "
                      "check the path")
    elif tf.io.gfile.isdir(item):
      raise UserError(f"--{flag}: {item} is a directory; name its files, "
                      f"e.g. {os.path.join(item, '*.tsv')}")
    else:
      paths.append(item)
  if not paths:
    raise UserError(f"--{flag}={spec!r} names no file; give comma-separated "
                    "paths or globs")
  for path in paths if not plain_text else ():
    file_format(path)  # an unknown type is an error before any reading
  return paths


def _relative_to(path):
  """' (relative to DIR)' for a relative local path, else ''."""
  if "://" in path or os.path.isabs(path):
    return ""
  return f" (relative to {os.getcwd()})"


class BadRows:
  """Counts the rows a skip_bad_rows reader dropped, and remembers the first
  few reasons (for the log)."""

  def __init__(self):
    self.count = 0
    self.examples = []

  def add(self, message):
    self.count += 1
    if len(self.examples) < 5:
      self.examples.append(message)


@dataclasses.dataclass
class Row:
  path: str  # the file the row came from
  line: int  # the line it starts on (1-based)
  values: dict  # column name -> str


def _decoded_lines(path):
  """(line number, str line with its newline) of a UTF-8 file, gzip or not;
  a line that is not UTF-8 gives (line number, UnicodeDecodeError)."""
  with tf.io.gfile.GFile(path, "rb") as raw:
    stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
    try:
      for number, line in enumerate(stream, start=1):
        try:
          text = line.decode("utf-8")
        except UnicodeDecodeError as e:
          yield number, e
          continue
        if number == 1:
          text = text.lstrip("\ufeff")  # a byte-order mark is not data
        yield number, text
    except gzip.BadGzipFile as e:
      raise UserError(f"{path}: cannot read the file: not gzip data ({e}); "
                      "a .gz file must be gzip-compressed: compress it with "
                      "gzip, or drop .gz from its name")
    except EOFError as e:
      raise UserError(f"{path}: cannot read the file: the gzip data ends "
                      f"early ({e}); it is truncated: compress or copy it "
                      "again")
    except (OSError, tf.errors.OpError) as e:
      message = getattr(e, "message", None) or str(e)
      raise UserError(f"{path}: cannot read the file ({message}); check that "
                      "it is a readable file")


def _not_utf8(path, number, error):
  return (f"{path}:{number}: not valid UTF-8 (byte {error.start} of the "
          f"line: {error.reason}); save the file as UTF-8 (e.g. `iconv -f "
          "latin1 -t utf-8`)")


class RowReader:
  """Reads `columns` from every row of a list of files.

  columns: the names a row must have (header columns of TSV/CSV, keys of
  JSONL; a .txt file has one column, `text`, which `text_column` renames).
  Values are str: JSONL numbers and booleans are written back as JSON.
  """

  def __init__(self, paths, columns, skip_bad_rows=False, text_column=None):
    self.paths = list(paths)
    self.columns = tuple(columns)
    self.skip_bad_rows = skip_bad_rows
    self.text_column = text_column
    self.bad_rows = BadRows()

  def bad(self, message):
    """Raises UserError(message), or counts the row under skip_bad_rows."""
    if not self.skip_bad_rows:
      raise UserError(message + " (or pass --skip_bad_rows to skip such rows)")
    self.bad_rows.add(message)

  def rows(self):
    """Yields Row for every good row of every file, in order."""
    for path in self.paths:
      count, skipped_before = 0, self.bad_rows.count
      kind = file_format(path)
      reader = {"tsv": self._tsv_rows, "csv": self._csv_rows,
                "jsonl": self._jsonl_rows, "txt": self._txt_rows}[kind]
      for row in reader(path):
        count += 1
        yield row
      if count == 0 and self.bad_rows.count == skipped_before:
        raise UserError(f"{path}: no rows (the file is empty or has only a "
                        "header); add rows or remove it from the file list")

  def _check_header(self, path, header):
    missing = [c for c in self.columns if c not in header]
    if missing:
      raise UserError(
          f"{path}:1: no column {missing[0]!r}; the header has "
          f"{list(header)}. Name the right column with the --*_column flags "
          f"(--text_column, --label_column, ...), or add a header line: the "
          f"first line of a .{file_format(path)} file names its columns")
    return [header.index(c) for c in self.columns]

  def _row(self, path, number, fields, width, indices, what, hint):
    """The Row of a TSV/CSV line's fields, or None (counted by `bad`) when
    it has another number of fields than the header."""
    if len(fields) != width:
      self.bad(f"{path}:{number}: {len(fields)} {what}, the header has "
               f"{width}; give every row one field per column, {hint}")
      return None
    return Row(path, number, {c: fields[i] for c, i in zip(self.columns,
                                                            indices)})

  def _tsv_rows(self, path):
    indices = None
    for number, line in _decoded_lines(path):
      if isinstance(line, UnicodeDecodeError):
        if indices is None:
          raise UserError(_not_utf8(path, number, line))
        self.bad(_not_utf8(path, number, line))
        continue
      line = line.rstrip("\r\n")
      if indices is None:
        indices = self._check_header(path, [c.strip() for c in line.split("\t")])
        width = len(line.split("\t"))
        continue
      if not line.strip():
        continue
      row = self._row(path, number, line.split("\t"), width, indices,
                      "tab-separated fields", "and a .tsv text may not "
                      "contain a tab")
      if row is not None:
        yield row

  def _csv_rows(self, path):
    lines = _decoded_lines(path)
    state = {"line": 0}

    def text_lines():
      for number, line in lines:
        state["line"] = number
        if isinstance(line, UnicodeDecodeError):
          raise UserError(_not_utf8(path, number, line) +
                          " (--skip_bad_rows cannot skip bad bytes in a "
                          ".csv file)")
        yield line

    reader = csv.reader(text_lines(), strict=True)
    indices = width = None
    start = 1
    while True:
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        problem = ("a double quote opened in this row is never closed"
                   if "unexpected end of data" in str(e) else str(e))
        raise UserError(
            f"{path}:{start}: broken CSV ({problem}); a field with commas, "
            "quotes or line breaks must be in double quotes, with \"\" for "
            "a quote inside it (--skip_bad_rows cannot skip a broken quote: "
            "where the row ends is unknown)")
      number, start = start, state["line"] + 1
      if indices is None:
        indices = self._check_header(path, [c.strip() for c in fields])
        width = len(fields)
        continue
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        continue
      row = self._row(path, number, fields, width, indices, "fields",
                      "and put double quotes around a field that contains "
                      "commas")
      if row is not None:
        yield row

  def _jsonl_rows(self, path):
    for number, line in _decoded_lines(path):
      if isinstance(line, UnicodeDecodeError):
        self.bad(_not_utf8(path, number, line))
        continue
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        self.bad(f"{path}:{number}: not a JSON object ({e.msg} at column "
                 f"{e.colno}); write one object a line")
        continue
      if not isinstance(record, dict):
        self.bad(f"{path}:{number}: a JSON {type(record).__name__}, not an "
                 "object; write one {\"key\": value} object a line")
        continue
      missing = [c for c in self.columns if c not in record]
      if missing:
        self.bad(f"{path}:{number}: no key {missing[0]!r}; the object has "
                 f"{sorted(record)}. Add the key, or name the right one with "
                 "the --*_column flags (--text_column, --label_column, ...)")
        continue
      values = {}
      for column in self.columns:
        value = record[column]
        if isinstance(value, (dict, list)) or value is None:
          break
        values[column] = value if isinstance(value, str) else json.dumps(value)
      if len(values) != len(self.columns):
        self.bad(f"{path}:{number}: key {column!r} holds "
                 f"{json.dumps(value)[:40]}, not a string or number; write "
                 "a string there")
        continue
      yield Row(path, number, values)

  def _txt_rows(self, path):
    column = self.text_column or TEXT_COLUMN
    if any(c != column for c in self.columns):
      raise UserError(f"{path}: a .txt file holds only text, one a line; "
                      f"this task needs the columns {list(self.columns)}: "
                      "use a .tsv, .csv or .jsonl file")
    for number, line in _decoded_lines(path):
      if isinstance(line, UnicodeDecodeError):
        self.bad(_not_utf8(path, number, line))
        continue
      line = line.rstrip("\r\n")
      if line.strip():
        yield Row(path, number, {column: line})


def read_text_chunks(paths, text_column=TEXT_COLUMN, skip_bad_rows=False,
                     plain_text=False, bad_rows=None):
  """Yields (path, line number, str) pieces of the raw text of a corpus,
  streamed: every line of a .txt file, newline kept; for .tsv/.csv/.jsonl
  files, the `text_column` of each row followed by a newline (plain_text:
  every file is read as .txt). Invalid UTF-8 in a text file is an error
  (skipping it would tear the text). bad_rows: a BadRows that counts the
  table rows skipped under skip_bad_rows."""
  for path in paths:
    if not plain_text and file_format(path) != "txt":
      reader = RowReader([path], [text_column], skip_bad_rows)
      if bad_rows is not None:
        reader.bad_rows = bad_rows
      for row in reader.rows():
        yield path, row.line, row.values[text_column] + "\n"
      continue
    empty = True
    for number, line in _decoded_lines(path):
      if isinstance(line, UnicodeDecodeError):
        raise UserError(_not_utf8(path, number, line))
      empty = empty and not line.strip()
      yield path, number, line
    if empty:
      raise UserError(f"{path}: the file is empty; add text or remove it "
                      "from the file list")

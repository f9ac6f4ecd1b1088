"""GPT-2 byte-level BPE tokenizer layer, entirely in the TF graph.

Reads a GPT-2 tokenizer as a keras-hub preset stores it
(`assets/tokenizer/vocabulary.json`, {token: id}, and
`assets/tokenizer/merges.txt`, one "a b" merge a line in rank order, after an
optional "#version" line) and tokenizes the way GPT-2 does (OpenAI's
`encoder.py`, which Hugging Face's GPT-2 tokenizer reproduces):
  1. invalid UTF-8 is replaced by U+FFFD (as in our other tokenizers), so no
     string raises;
  2. the text is cut at every `<|endoftext|>`, which becomes one token (as
     keras-hub's GPT2Tokenizer does by default);
  3. each part is split into words by GPT-2's pattern
       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
     with \\s Unicode whitespace. RE2 has no lookahead; what `\\s+(?!\\S)`
     does is to leave the last whitespace character of a run that a
     non-space follows to start the next word (" word", or on its own if it
     is not a space). So a first split cuts before that character: the
     pieces are "whitespace, then non-whitespace" matches and what lies
     between them, GPT-2's words never cross those cuts, and the pattern
     without the lookahead, run on each piece, gives exactly GPT-2's words.
     (tensorflow-text's regex_split stops at a NUL byte, so NULs are
     escaped into private-use characters for the split and restored.);
  4. each word's UTF-8 bytes are symbols, and the adjacent pair with the
     lowest merge rank is merged (every non-overlapping occurrence, left to
     right, like GPT-2's `bpe()`) until no pair has a merge: one
     vectorised tf.while_loop over all distinct words of the batch, on
     integer symbol ids (a merge's result is always a vocabulary token);
  5. the symbols are the ids.

Ids: our decoders keep id 0 for padding and GPT-2 has none (its id 0 is "!"),
so the layer's id k + 1 is GPT-2's token k, 0 is PAD (never produced by
`tokenize`) and `vocabulary_size` is len(vocabulary) + 1. `start_id` is
`<|endoftext|>` (GPT-2 id 50256 in the real vocabulary) + 1; `call` puts it
first, as GPT-2 reads a document after it. GPT-2 ends a document with the
same token: `end_id` == `start_id`, for a generator that stops there.
NEVER_GENERATED holds PAD only.

`detokenize` drops PAD (and ids outside the vocabulary) and keeps every
other token as its bytes, `<|endoftext|>` as that text (keras-hub's
GPT2Tokenizer keeps it too), so detokenize(tokenize(s)) == s for every
valid UTF-8 s and detokenize(call(s)) == "<|endoftext|>" + s when s fits.
A byte-level token can end inside a multi-byte character; its bytes are
returned as they are (possibly invalid UTF-8, never an error), so the text
pieces of consecutive tokens add up to the text of the whole.

Storage: the layer derives two lookup tables from the vocabulary and
merges (the merges: pair of GPT-2 ids -> rank and merged id; our id -> the
token's bytes, base64) and writes them as text files once, next to the
vocabulary file (`write_tables`; in a run, under model_dir). The tables are
initialised from those files (TextFileInitializer), so an export carries
them as SavedModel assets and reads them from its own assets/ (checked by
loading it with the source files deleted). vocabulary.json itself cannot be
a table's file (TextFileInitializer reads delimited lines, not JSON), and
the merge table is keyed by integer pairs derived from both files, hence
the derived files.

keras-hub 0.32.0's GPT2Tokenizer, for comparison (checked in the tests):
its TensorFlow path (inside tf.function / tf.data) gives the same ids on the
bundled datasets, but emulates the lookahead differently and departs from
GPT-2 on runs of whitespace before a word or at the end (e.g. "a\\n\\nb",
"trail   "), cuts the text at a NUL byte, drops U+096C (its marker
character) and reads "Ĵ" + capitals as its special-token placeholder; it
keeps invalid UTF-8 bytes instead of replacing them. Its eager path (the
`tokenizers` library) does no pre-splitting at all (its split pattern is
passed as a literal string, not a regex) and raises on invalid UTF-8. This
layer follows GPT-2 in all of these.
"""

import base64
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

PAD_ID = 0
NEVER_GENERATED = (PAD_ID,)  # by a language model (<|endoftext|> may end a text)
END_OF_TEXT = "<|endoftext|>"  # GPT-2's start and end token
VOCABULARY_FILENAME = "vocabulary.json"  # in a keras-hub preset's assets
MERGES_FILENAME = "merges.txt"

# Python's (and GPT-2's) \s: the Unicode White_Space characters. RE2's \s is
# ASCII only.
_WS = (r"\t\n\x0b\x0c\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}"
       r"\x{2029}\x{202f}\x{205f}\x{3000}")
# A run's last whitespace character and the non-whitespace after it.
_PIECE = rf"[{_WS}][^{_WS}]+"
# GPT-2's pattern without the lookahead (exact on the pieces above).
_WORD = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
         rf"| ?[^{_WS}\p{{L}}\p{{N}}]+|[{_WS}]+")
# NUL escape: private-use characters, which like NUL are neither letters,
# digits nor whitespace, so the words do not change.
_ESCAPE, _ESCAPED_ESCAPE, _ESCAPED_NUL = "\ue000", "\ue000\ue001", "\ue000\ue002"


def preset_tokenizer_files(preset_dir):
  """(vocabulary_file, merges_file) of a keras-hub GPT-2 preset directory."""
  assets = os.path.join(preset_dir, "assets", "tokenizer")
  return (os.path.join(assets, VOCABULARY_FILENAME),
          os.path.join(assets, MERGES_FILENAME))


def byte_symbols():
  """GPT-2's bytes_to_unicode: the character standing for each byte 0..255.

  Printable Latin-1 bytes stand for themselves; the others (controls, space,
  soft hyphen) for the characters from U+0100 on, in byte order.
  """
  printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  symbols, extra = {}, 0
  for byte in range(256):
    if byte in printable:
      symbols[byte] = chr(byte)
    else:
      symbols[byte] = chr(0x100 + extra)
      extra += 1
  return [symbols[byte] for byte in range(256)]


def read_vocabulary(path):
  """GPT-2's vocabulary JSON -> [token] in id order (ids must be 0..n-1)."""
  with tf.io.gfile.GFile(path, "rb") as f:
    vocabulary = json.loads(f.read().decode("utf-8"))
  tokens = sorted(vocabulary, key=vocabulary.get)
  if [vocabulary[t] for t in tokens] != list(range(len(tokens))):
    raise ValueError(f"{path}: token ids must be 0..{len(tokens) - 1}")
  return tokens


def read_merges(path):
  """merges.txt -> [(left, right)] in rank order; a "#version" line and
  blank lines are skipped."""
  with tf.io.gfile.GFile(path, "rb") as f:
    lines = f.read().decode("utf-8").split("\n")
  merges = []
  for number, line in enumerate(lines, 1):
    line = line.rstrip("\r")
    if not line or (number == 1 and line.startswith("#version")):
      continue
    pair = line.split(" ")
    if len(pair) != 2 or not all(pair):
      raise ValueError(f"{path}:{number}: expected 'left right', got {line!r}")
    merges.append(tuple(pair))
  return merges


TABLES_FOLDER = "byte_pair_tables"  # next to the vocabulary file


def write_tables(vocabulary_file, merges_file, merge_keys, merge_values,
                 token_bytes):
  """Writes the layer's two lookup tables as text files (once per pair of
  source files; named by a digest of their contents) in TABLES_FOLDER next
  to vocabulary_file, and returns their paths. merges-*.tsv: "key\tvalue"
  a line, key = left * n + right and value = rank * n + merged (GPT-2 ids,
  n tokens); token_bytes-*.tsv: "our id\tbase64 (web-safe) of its bytes".
  Tables initialised from files make them SavedModel assets, copied into
  every export, as the other tokenizers' vocabularies are."""
  digest = hashlib.sha256()
  for path in (vocabulary_file, merges_file):
    with tf.io.gfile.GFile(path, "rb") as f:
      digest.update(f.read())
  folder = os.path.join(os.path.dirname(vocabulary_file), TABLES_FOLDER)
  tag = digest.hexdigest()[:16]
  merges_table = os.path.join(folder, f"merges-{tag}.tsv")
  bytes_table = os.path.join(folder, f"token_bytes-{tag}.tsv")
  tables = ((merges_table, [f"{k}\t{v}" for k, v in zip(merge_keys,
                                                         merge_values)]),
            (bytes_table, [f"{i}\t{base64.urlsafe_b64encode(b).decode()}"
                           for i, b in enumerate(token_bytes, start=1)]))
  for path, lines in tables:
    if not tf.io.gfile.exists(path):
      tf.io.gfile.makedirs(folder)
      temporary = f"{path}.tmp-{os.getpid()}"
      with tf.io.gfile.GFile(temporary, "w") as f:
        f.write("\n".join(lines) + "\n")
      tf.io.gfile.rename(temporary, path, overwrite=True)
  return merges_table, bytes_table


def _token_bytes(token, byte_of_symbol):
  """A vocabulary token's bytes; characters that stand for no byte (in added
  tokens) are kept as their UTF-8."""
  return b"".join(bytes([byte_of_symbol[c]]) if c in byte_of_symbol
                  else c.encode("utf-8") for c in token)


@keras.saving.register_keras_serializable(package="zoo")
class GPT2LMTokenizer(keras.layers.Layer):
  """string[B] -> int32[B, sequence_length]: start_id, then GPT-2's tokens + 1,
  0-padded.

  The language-model form (like SentencePieceLMTokenizer): every text is read
  after `<|endoftext|>` and cut after sequence_length - 1 tokens.
  """

  def __init__(self, vocabulary_file, merges_file, sequence_length,
               end_of_text_as_text=True, **kwargs):
    kwargs.setdefault("trainable", False)
    kwargs.setdefault("dtype", "int32")
    super().__init__(**kwargs)
    for path in (vocabulary_file, merges_file):
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"GPT-2 tokenizer file not found: {path}")
    self.vocabulary_file = os.fspath(vocabulary_file)
    self.merges_file = os.fspath(merges_file)
    self.sequence_length = int(sequence_length)
    # False: detokenize drops <|endoftext|>, the start and end marker of a
    # language model's text (as keras-hub's GPT2CausalLM.generate does).
    self.end_of_text_as_text = bool(end_of_text_as_text)
    tokens = read_vocabulary(self.vocabulary_file)
    gpt2_id = {token: i for i, token in enumerate(tokens)}
    if END_OF_TEXT not in gpt2_id:
      raise ValueError(f"{self.vocabulary_file} has no {END_OF_TEXT}")
    symbols = byte_symbols()
    missing = [s for s in symbols if s not in gpt2_id]
    if missing:
      raise ValueError(f"{self.vocabulary_file} lacks byte symbols {missing}: "
                       "every byte must be a token")
    self.vocabulary_size = len(tokens) + 1  # + PAD
    self.start_id = gpt2_id[END_OF_TEXT] + 1
    self.end_id = self.start_id  # GPT-2 ends a text with the same token
    self._num_tokens = len(tokens)

    # Merges: key left * n + right -> rank * n + merged (GPT-2 ids).
    keys, values = [], []
    for rank, (left, right) in enumerate(read_merges(self.merges_file)):
      for token in (left, right, left + right):
        if token not in gpt2_id:
          raise ValueError(f"{self.merges_file}: merge '{left} {right}' needs "
                           f"{token!r}, which is not in the vocabulary")
      keys.append(gpt2_id[left] * len(tokens) + gpt2_id[right])
      values.append(rank * len(tokens) + gpt2_id[left + right])
    keys, first = np.unique(np.array(keys, np.int64), return_index=True)
    self._num_merges = len(values)
    self._no_merge = self._num_merges * len(tokens)  # above every value
    self._byte_ids = np.array([gpt2_id[s] for s in symbols], np.int32)  # [256]
    byte_of_symbol = {s: b for b, s in enumerate(symbols)}
    merges_table, bytes_table = write_tables(
        self.vocabulary_file, self.merges_file,
        keys, np.array(values, np.int64)[first],  # a repeated merge: first rank
        [_token_bytes(t, byte_of_symbol) for t in tokens])
    self._merges = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            merges_table, tf.int64, 0, tf.int64, 1, delimiter="\t"),
        default_value=self._no_merge)
    self._bytes = tf.lookup.StaticHashTable(  # our id -> base64 of its bytes
        tf.lookup.TextFileInitializer(
            bytes_table, tf.int64, 0, tf.string, 1, delimiter="\t"),
        default_value="")  # PAD and ids outside the vocabulary: no bytes
    self.built = True  # no weights: usable (and exportable) as constructed

  def words(self, strings):
    """string[B] -> GPT-2's words, string[B, (W)]; `<|endoftext|>` is a word
    of its own (see the module docstring)."""
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    text = tf.strings.unicode_transcode(  # invalid UTF-8 -> U+FFFD, no error
        strings, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.regex_replace(text, _ESCAPE, _ESCAPED_ESCAPE)
    text = tf.strings.regex_replace(text, r"\x00", _ESCAPED_NUL)
    special = r"<\|endoftext\|>"
    parts = tf_text.regex_split(text, special, special)  # [B, (P)]
    is_special = tf.equal(parts.flat_values, END_OF_TEXT)  # [P]
    # A special part becomes " ", which splits into exactly one word.
    parts = parts.with_flat_values(tf.where(is_special, " ", parts.flat_values))
    pieces = tf_text.regex_split(parts, _PIECE, _PIECE)  # [B, (P), (C)]
    words = tf_text.regex_split(pieces, _WORD, _WORD)  # [B, (P), (C), (W)]
    words = words.merge_dims(2, 3)  # [B, (P), (W)]
    is_special = tf.repeat(is_special, words.values.row_lengths())  # [W]
    flat = tf.strings.regex_replace(words.flat_values, _ESCAPED_NUL, "\x00")
    flat = tf.strings.regex_replace(flat, _ESCAPED_ESCAPE, _ESCAPE)
    flat = tf.where(is_special, END_OF_TEXT, flat)
    return words.merge_dims(1, 2).with_flat_values(flat)  # [B, (W)]

  def tokenize(self, strings):
    """Ragged ids without the start id or truncation: int32[B, (T)]."""
    words = self.words(strings)  # [B, (W)]
    unique, index = tf.unique(words.flat_values)  # [U], [W]
    ids = self._encode_words(unique)  # [U, (S)] GPT-2 ids
    ids = tf.gather(ids, index)  # [W, (S)]
    ids = words.with_flat_values(ids).merge_dims(1, 2)  # [B, (T)]
    return ids + 1  # our id space: 0 is PAD

  def _encode_words(self, words):
    """Distinct words string[U] -> their BPE tokens, GPT-2 ids int32[U, (S)]."""
    is_special = tf.equal(words, END_OF_TEXT)  # [U]
    words = tf.where(is_special, "\x00", words)  # one symbol, replaced below
    lengths = tf.strings.length(words)  # [U] bytes
    byte_values = tf.io.decode_raw(tf.strings.reduce_join(words), tf.uint8)
    symbols = tf.gather(self._byte_ids, tf.cast(byte_values, tf.int32))  # [N]
    symbols = tf.where(tf.repeat(is_special, lengths),
                       self.start_id - 1, symbols)
    word_ids = tf.repeat(tf.range(tf.size(words)), lengths)  # [N], sorted
    symbols, word_ids = self._merge(symbols, word_ids, tf.size(words))
    return tf.RaggedTensor.from_value_rowids(
        symbols, tf.cast(word_ids, tf.int64), nrows=tf.size(words, tf.int64))

  def _merge(self, symbols, word_ids, num_words):
    """BPE over words laid end to end: symbols int32[N] (GPT-2 ids) of the
    words word_ids int32[N] (sorted) -> the merged (symbols, word_ids)."""
    n = self._num_tokens

    def step(symbols, word_ids, unused_more):
      left, right = symbols[:-1], symbols[1:]  # [N-1] each: adjacent pairs
      pair_words = word_ids[:-1]  # [N-1]
      found = self._merges.lookup(tf.cast(left, tf.int64) * n
                                  + tf.cast(right, tf.int64))  # [N-1]
      found = tf.where(tf.equal(pair_words, word_ids[1:]), found,
                       self._no_merge)  # pairs across words never merge
      rank = found // n  # [N-1]; self._num_merges: no merge
      best = tf.math.unsorted_segment_min(rank, pair_words, num_words)  # [U]
      candidate = tf.logical_and(tf.equal(rank, tf.gather(best, pair_words)),
                                 rank < self._num_merges)  # [N-1]
      # Occurrences of the best pair overlap only as runs (x x x ...): take
      # every other one from the left of each run, as GPT-2 does.
      outside = 1 - tf.cast(candidate, tf.int32)  # [N-1]
      run = tf.cumsum(outside)  # constant along a run of candidates
      first = tf.searchsorted(run, run, side="left")  # [N-1]
      start = first + tf.gather(outside, first)  # where the run begins
      position = tf.range(tf.size(rank))
      selected = tf.logical_and(candidate,
                                tf.equal((position - start) % 2, 0))  # [N-1]
      merged = tf.where(selected, tf.cast(found % n, tf.int32), left)
      symbols = tf.concat([merged, symbols[-1:]], axis=0)  # [N]
      keep = tf.logical_not(tf.concat([[False], selected], axis=0))  # [N]
      return (tf.boolean_mask(symbols, keep), tf.boolean_mask(word_ids, keep),
              tf.reduce_any(selected))

    symbols, word_ids, _ = tf.while_loop(
        lambda unused_symbols, unused_word_ids, more: more, step,
        (symbols, word_ids, tf.size(symbols) > 0),
        shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]),
                          tf.TensorShape([])))
    return symbols, word_ids

  def call(self, strings):
    """start_id + the first sequence_length - 1 tokens, 0-padded."""
    ids = self.tokenize(strings)[:, : self.sequence_length - 1]  # [B, (<L)]
    start = tf.fill([ids.nrows(), 1], self.start_id)  # [B, 1]
    ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
    return ids.to_tensor(default_value=PAD_ID,
                         shape=[None, self.sequence_length])  # [B, L]

  def detokenize(self, ids):
    """int[B, T] (or ragged) -> string[B]: the tokens' bytes joined; PAD and
    ids outside the vocabulary are dropped, `<|endoftext|>` is kept as text
    unless end_of_text_as_text is False."""
    if isinstance(ids, tf.RaggedTensor):
      ids = ids.to_tensor(default_value=PAD_ID)
    ids = tf.cast(ids, tf.int64)  # [B, T]
    if not self.end_of_text_as_text:
      ids = tf.where(ids == self.start_id, tf.cast(PAD_ID, tf.int64), ids)
    pieces = tf.io.decode_base64(self._bytes.lookup(ids))  # [B, T] bytes
    return tf.strings.reduce_join(pieces, axis=-1)  # [B]

  def compute_output_shape(self, input_shape):
    return tuple(input_shape) + (self.sequence_length,)

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_file=self.vocabulary_file,
                  merges_file=self.merges_file,
                  sequence_length=self.sequence_length,
                  end_of_text_as_text=self.end_of_text_as_text)
    return config

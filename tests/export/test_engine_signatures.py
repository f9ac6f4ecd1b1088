"""The decoder export's engine signatures: same tokens as `generate`, slots that
join and leave, a TF1 session, and text pieces that add up for both tokenizers."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the text ops for tf.saved_model.load

from export.engine_signatures import text_pieces
from tests.export.test_decoder_export import call_generate

SLOTS = 4


@pytest.fixture(scope="module")
def loaded(exported_lm):
  return tf.saved_model.load(exported_lm)


def prefill(loaded, prompts, slots, max_new_tokens, temperature=0.0, top_k=0,
            top_p=1.0, seed=0):
  batch = len(prompts)

  def column(value, dtype):
    return tf.constant(np.broadcast_to(np.asarray(value), [batch]), dtype)
  out = loaded.signatures["engine_prefill"](
      prompt=tf.constant(prompts, tf.string), slot=tf.constant(slots, tf.int32),
      max_new_tokens=column(max_new_tokens, tf.int32),
      temperature=column(temperature, tf.float32),
      top_k=column(top_k, tf.int32), top_p=column(top_p, tf.float32),
      seed=column(seed, tf.int64))
  return {k: v.numpy() for k, v in out.items()}


class Driver:
  """A minimal scheduler: requests join at given steps, pieces collected."""

  def __init__(self, loaded, tokens_per_step=1):
    self.loaded = loaded
    self.tokens_per_step = tokens_per_step
    loaded.signatures["engine_init"](slot=tf.range(SLOTS))
    self.active = np.zeros([SLOTS], bool)
    self.texts = {}

  def join(self, slot, prompt, **settings):
    out = prefill(self.loaded, [prompt], [slot], **settings)
    self.texts[slot] = out["text"][0].decode()
    self.active[slot] = not out["done"][0]
    return out

  def step(self):
    out = self.loaded.signatures["engine_step"](
        active=tf.constant(self.active),
        steps=tf.fill([SLOTS], self.tokens_per_step))
    out = {k: v.numpy() for k, v in out.items()}
    for slot in np.nonzero(self.active)[0]:
      self.texts[slot] += out["text"][slot].decode()
    self.active &= ~out["done"]
    return out


REQUESTS = [  # (prompt, settings): greedy and sampled
    ("ROMEO:", dict(max_new_tokens=12)),
    ("KING", dict(max_new_tokens=9, temperature=1.0, top_p=0.9, seed=3)),
    ("", dict(max_new_tokens=20, temperature=0.8, top_k=5, seed=11)),
    ("First Citizen:\nBefore we", dict(max_new_tokens=5, temperature=1.2,
                                       seed=-4)),
    ("x" * 100, dict(max_new_tokens=31, temperature=1.0, seed=2)),
    ("JULIET:", dict(max_new_tokens=1)),
]


@pytest.mark.parametrize("tokens_per_step", [1, 3])
def test_engine_gives_generate_tokens_while_requests_join_and_leave(
    loaded, tokens_per_step):
  driver = Driver(loaded, tokens_per_step)
  joins = {0: [(0, 0), (1, 1)], 2: [(2, 2)], 5: [(3, 3)], 13: [(0, 4)],
           15: [(1, 5)]}  # step -> [(slot, request)]
  owner = {}
  finished = {}
  for step in range(60):
    for slot, request in joins.get(step, []):
      assert not driver.active[slot]
      if slot in owner:
        finished[owner[slot]] = driver.texts[slot]
      prompt, settings = REQUESTS[request]
      driver.join(slot, prompt, **settings)
      owner[slot] = request
    if driver.active.any():
      driver.step()
  for slot, request in owner.items():
    finished[request] = driver.texts[slot]
  assert sorted(finished) == list(range(len(REQUESTS)))
  for request, (prompt, settings) in enumerate(REQUESTS):
    expected, counts = call_generate(loaded, [prompt], **settings)
    assert finished[request] == expected[0], request
    assert len(finished[request]) == counts[0] == settings["max_new_tokens"]


def test_zero_budget_bad_settings_and_counts(loaded):
  Driver(loaded)
  out = prefill(loaded, ["ROMEO:", "KING"], [0, 1], [0, 3])
  assert out["done"].tolist() == [True, False]
  assert out["num_tokens"].tolist() == [0, 1]
  assert out["prompt_tokens"].tolist() == [7, 5]  # the start token too
  assert out["text"][0] == b""
  with pytest.raises(tf.errors.InvalidArgumentError, match="top_p"):
    prefill(loaded, ["ROMEO:"], [0], 3, top_p=0.0)
  with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens"):
    prefill(loaded, ["ROMEO:"], [0], 32)
  with pytest.raises(tf.errors.InvalidArgumentError, match="slot"):
    prefill(loaded, ["ROMEO:"], [SLOTS], 3)


def test_engine_runs_in_a_tf1_session(exported_lm, loaded):
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                      exported_lm)

    def run(key, feeds):
      signature = meta_graph.signature_def[key]
      fetches = {k: v.name for k, v in signature.outputs.items()}
      return sess.run(fetches, {signature.inputs[k].name: v
                                for k, v in feeds.items()})
    out = run("engine_init", {"slot": np.arange(2, dtype=np.int32)})
    assert out["context"].tolist() == [32, 32]
    out = run("engine_prefill", {
        "prompt": np.array([b"KING"], object), "slot": np.array([1], np.int32),
        "max_new_tokens": np.array([6], np.int32),
        "temperature": np.array([0.9], np.float32),
        "top_k": np.array([0], np.int32), "top_p": np.array([1.0], np.float32),
        "seed": np.array([7], np.int64)})
    text = out["text"][0].decode()
    while True:
      out = run("engine_step", {"active": np.array([False, True]),
                                "steps": np.array([1, 2], np.int32)})
      text += out["text"][1].decode()
      if out["done"][1]:
        break
  assert out["num_tokens"].tolist()[1] == 6
  assert text == call_generate(loaded, ["KING"], max_new_tokens=6,
                               temperature=0.9, seed=7)[0][0]


@pytest.fixture(scope="module")
def sentencepiece_lm_tokenizer(tmp_path_factory):
  from tests.conftest import REPO_ROOT
  from zoo.tokenizers.sentencepiece import (SentencePieceLMTokenizer,
                                            learn_sentencepiece, write_model)
  with open(f"{REPO_ROOT}/data/tinyshakespeare/input.txt",
            encoding="utf-8") as f:
    lines = f.read(20_000).splitlines()
  path = str(tmp_path_factory.mktemp("sp_lm") / "lm.model")
  write_model(learn_sentencepiece(lines, 300, exact_text=True), path)
  return SentencePieceLMTokenizer(path, sequence_length=64)


def test_text_pieces_add_up_for_both_tokenizers(sentencepiece_lm_tokenizer,
                                                trained_lm_dir):
  from tests.export.test_decoder_export import trained
  _, characters, _ = trained(trained_lm_dir)
  rng = np.random.default_rng(0)
  for tokenizer in (sentencepiece_lm_tokenizer, characters):
    low = 4 if tokenizer is sentencepiece_lm_tokenizer else 2  # never generated
    ids = rng.integers(low, tokenizer.vocabulary_size, size=[8, 20],
                       dtype=np.int32)  # [B, N] continuations
    ids[0, :3] = tokenizer.tokenize(tf.constant([" the"])).flat_values[:1]
    previous = np.zeros([8], np.int32)
    texts = [b""] * 8
    for k in range(ids.shape[1]):
      pieces = text_pieces(tokenizer, tf.constant(previous),
                           tf.constant(ids[:, k])).numpy()
      texts = [t + p for t, p in zip(texts, pieces)]
      previous = ids[:, k]
    assert texts == tokenizer.detokenize(tf.constant(ids)).numpy().tolist()
  piece = text_pieces(sentencepiece_lm_tokenizer, tf.constant([0]),
                      sentencepiece_lm_tokenizer.tokenize(
                          tf.constant([" the"])).flat_values[:1])
  assert piece.numpy()[0].startswith(b" ")  # the leading space is kept

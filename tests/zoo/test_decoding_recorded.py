"""Decoding outputs recorded from the exports' code before the decoding-speed
work (commit 93488f8's decoder step and beam search), on fixed models: the
faster step and beam bookkeeping must give the same tokens and scores.

  python -m tests.zoo.test_decoding_recorded   # rewrites the recording

Only rerun the recorder on purpose (a change of outputs is a change of
behaviour). The models are the seeded random models of test_causal_lm and
test_translator, whose weights make next-token choices decisive.
"""

import json
import os

import numpy as np

from tests.zoo import test_causal_lm as lm
from tests.zoo import test_translator as mt

RECORDING = os.path.join(os.path.dirname(__file__), "recorded_decoding.json")

PROMPTS = [[2, 5, 7], [3], [4, 9, 11, 13, 6, 8, 10], [12, 4]]
LM_SETTINGS = {
    "greedy": dict(max_new_tokens=[8, 12, 6, 15]),
    "sampled": dict(max_new_tokens=[10, 10, 8, 12], temperature=[0.8, 1.0, 0.5, 1.3],
                    top_k=[0, 5, 3, 0], top_p=[1.0, 0.9, 1.0, 0.7],
                    seed=[0, 1, 2, 3]),
}
MT_SETTINGS = {
    "beam": dict(beam_size=[1, 2, 4, 3, 4], length_penalty=[0.0, 0.6, 1.0, 0.2, 0.0],
                 max_output_length=[10, 6, 10, 8, 3]),
}


def record():
  """The outputs the test compares, as JSON-ready lists."""
  out = {}
  decoder = lm.make_model()
  for name, kwargs in LM_SETTINGS.items():
    tokens, generated = lm.generate(
        decoder, PROMPTS, **{k: np.asarray(v) for k, v in kwargs.items()})
    out[f"lm_{name}"] = {"tokens": tokens.tolist(),
                         "generated": generated.tolist()}
  translator = mt.make_model()
  sources = mt.random_sources(5, seed=11)
  for name, kwargs in MT_SETTINGS.items():
    tokens, scores = mt.translate(
        translator, sources, **{k: np.asarray(v) for k, v in kwargs.items()})
    out[f"mt_{name}"] = {"tokens": tokens.tolist(),
                         "scores": scores.tolist()}
  return out


def test_generation_and_beam_search_give_the_recorded_outputs():
  with open(RECORDING) as f:
    expected = json.load(f)
  actual = record()
  assert sorted(actual) == sorted(expected)
  for name in expected:
    if name.startswith("lm_"):
      assert actual[name] == expected[name], name
    else:
      assert actual[name]["tokens"] == expected[name]["tokens"], name
      # Scores are float32 sums of log-probabilities: another CPU's kernels
      # round their last bits differently (an Intel Xeon against this AMD
      # EPYC recording: 3.1e-6 relative), so they match to float32
      # rounding; the tokens must be exactly the recorded ones.
      np.testing.assert_allclose(actual[name]["scores"],
                                 expected[name]["scores"], rtol=2e-5,
                                 atol=1e-5, err_msg=name)


if __name__ == "__main__":
  with open(RECORDING, "w") as f:
    json.dump(record(), f)
    f.write("\n")
  print("wrote", RECORDING)

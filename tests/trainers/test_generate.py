"""`python -m trainers.generate`: samples from a checkpoint or an export."""

from absl import flags

from tests.conftest import run_module
from trainers import generate as generate_cli


def _flags(**values):
  """A parsed copy of trainers.generate's flags with `values` set."""
  flag_values = flags.FlagValues()
  for name in ("prompt", "max_new_tokens", "temperature", "top_k", "top_p",
               "seed", "stream", "stream_chunk"):
    flag_values[name] = flags.FLAGS[name]
  flag_values(["generate"])
  for name, value in values.items():
    flag_values[name].value = value
  return flag_values


def test_streamed_sample_equals_unstreamed(trained_lm_dir):
  generate = generate_cli.load_generate_fn(model_dir=trained_lm_dir)
  written = []
  for stream in (False, True):
    pieces = []
    text = generate_cli.sample(
        generate, "ROMEO:", 5,
        _flags(max_new_tokens=20, temperature=0.9, top_k=10, stream=stream,
               stream_chunk=6), write=pieces.append)
    written.append("".join(pieces))
    assert len(text) == 20
  assert written[0] == written[1]
  assert written[0].startswith("ROMEO:")


def test_export_and_checkpoint_give_the_same_greedy_text(trained_lm_dir,
                                                         exported_lm):
  from_checkpoint = generate_cli.load_generate_fn(model_dir=trained_lm_dir)
  from_export = generate_cli.load_generate_fn(saved_model=exported_lm)
  args = (["KING:", ""], 12, 0.0, 0, 1.0, [0, 1])
  assert from_checkpoint(*args) == from_export(*args)


def test_cli_prints_samples_and_reports_bad_settings(trained_lm_dir):
  ok = run_module("trainers.generate", f"--model_dir={trained_lm_dir}",
                  "--prompt=ROMEO:", "--max_new_tokens=10", "--seed=3")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert ok.stdout.startswith("ROMEO:")
  too_long = run_module("trainers.generate", f"--model_dir={trained_lm_dir}",
                        "--max_new_tokens=5000")
  assert too_long.returncode == 1
  assert "max_new_tokens must be <=" in too_long.stderr
  assert "Traceback" not in too_long.stderr
  both = run_module("trainers.generate", f"--model_dir={trained_lm_dir}",
                    "--saved_model=/nonexistent")
  assert both.returncode == 1 and "exactly one of" in both.stderr

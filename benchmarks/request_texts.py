"""Request texts for serving benchmarks: real rows of each model's bundled data.

A signature's string input names the data: `text` (classifier) SST-2 dev
sentences, `prompt` (language model) the first 32 characters of lines of the
tiny-shakespeare validation text, `source` (translator) German
test_2016_flickr sentences.
"""

from trainers.config import TrainConfig
from trainers.tasks import get_task
from trainers.translation_data import read_lines

NUM_TEXTS = 64  # distinct request texts
PROMPT_CHARACTERS = 32  # language-model prompts: the first characters of a line


def _task(name):
  """The trainer's task object: its splits are the ones the results use."""
  return get_task(TrainConfig(task=name))


def _sst2_sentences():
  sentences, _ = _task("sst2").read_split("dev")
  return sentences


def _shakespeare_prompts():
  validation = _task("shakespeare").eval_text("validation")
  lines = [l for l in validation.splitlines() if len(l) >= PROMPT_CHARACTERS]
  return [l[:PROMPT_CHARACTERS] for l in lines]


def _multi30k_sources():
  source_path, _ = _task("multi30k_de_en").split_paths("test")
  lines, _ = read_lines(source_path)
  return lines


# Signature input name -> (data name, reader of the request texts).
REQUEST_DATA = {
    "text": ("sst2", _sst2_sentences),
    "prompt": ("shakespeare", _shakespeare_prompts),
    "source": ("multi30k", _multi30k_sources),
}


def request_texts(input_key):
  """(data name, NUM_TEXTS texts) for a signature input; ValueError if unknown."""
  if input_key not in REQUEST_DATA:
    raise ValueError(f"no bundled request texts for input {input_key!r}; "
                     f"inputs with data: {sorted(REQUEST_DATA)}")
  name, reader = REQUEST_DATA[input_key]
  return name, reader()[:NUM_TEXTS]

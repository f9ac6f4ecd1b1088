"""Request texts for serving benchmarks: real rows of each model's bundled data.

A signature's string input names the data: `text` (classifier) SST-2 dev
sentences, `prompt` (language model) the first 32 characters of lines of the
tiny-shakespeare validation text, `source` (translator) German
test_2016_flickr sentences.
"""

import os

from benchmarks.environment import ROOT
from trainers import language_model_data
from trainers.classification_data import read_labeled_tsv
from trainers.translation_data import read_lines

NUM_TEXTS = 64  # distinct request texts
PROMPT_CHARACTERS = 32  # language-model prompts: the first characters of a line


def _sst2_sentences():
  sentences, _ = read_labeled_tsv(os.path.join(ROOT, "data", "sst2", "dev.tsv"), ("0", "1"))
  return sentences


def _shakespeare_prompts():
  text = language_model_data.read_text(
      os.path.join(ROOT, "data", "tinyshakespeare", "input.txt"))
  _, validation = language_model_data.split_text(text)
  lines = [l for l in validation.splitlines() if len(l) >= PROMPT_CHARACTERS]
  return [l[:PROMPT_CHARACTERS] for l in lines]


def _multi30k_sources():
  lines, _ = read_lines(os.path.join(ROOT, "data", "multi30k", "test_2016_flickr.de.gz"))
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

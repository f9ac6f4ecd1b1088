"""Request texts for serving benchmarks: real rows of each model's bundled data.

A signature's string input names the data, read through the bundled recipes
(trainers/configs/*.flags) and their tasks: `text` (classifier) SST-2 dev
sentences, `prompt` (language model) the first 32 characters of lines of the
tiny-shakespeare validation text (the last 10% of input.txt), `source`
(translator) German test_2016_flickr sentences.
"""

from benchmarks.recipe_flags import absolute_files, recipe_task

NUM_TEXTS = 64  # distinct request texts
PROMPT_CHARACTERS = 32  # language-model prompts: the first characters of a line
# The translator's request texts: the recipe's test set, not its dev set
MULTI30K_TEST = {"eval_source_files": "data/multi30k/test_2016_flickr.de.gz",
                 "eval_target_files": "data/multi30k/test_2016_flickr.en.gz"}


def _sst2_sentences():
  task = recipe_task("sst2_small")
  return [example[0] for example in task.examples(
      task.reader(task.eval_paths()), None)]


def _shakespeare_prompts():
  validation = recipe_task("shakespeare_small").eval_text()
  lines = [l for l in validation.splitlines() if len(l) >= PROMPT_CHARACTERS]
  return [l[:PROMPT_CHARACTERS] for l in lines]


def multi30k_test_sources():
  """The German sentences of Multi30k test_2016_flickr, in file order."""
  task = recipe_task("multi30k_small", **{
      k: absolute_files(v) for k, v in MULTI30K_TEST.items()})
  return [source for source, _ in task.pairs("eval")]


# Signature input name -> (data name, reader of the request texts).
REQUEST_DATA = {
    "text": ("sst2", _sst2_sentences),
    "prompt": ("shakespeare", _shakespeare_prompts),
    "source": ("multi30k", multi30k_test_sources),
}


def request_texts(input_key):
  """(data name, NUM_TEXTS texts) for a signature input; ValueError if unknown."""
  if input_key not in REQUEST_DATA:
    raise ValueError(f"no bundled request texts for input {input_key!r}; "
                     f"inputs with data: {sorted(REQUEST_DATA)}")
  name, reader = REQUEST_DATA[input_key]
  return name, reader()[:NUM_TEXTS]

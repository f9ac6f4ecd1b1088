"""Render exported model cards as markdown: docs/models/<dataset>.md.

  python -m benchmarks.model_cards \
      --card=models/sst2/<version>:benchmarks/results/sst2_small.json \
      --card=models/shakespeare/<version>:benchmarks/results/shakespeare_small.json

Each page combines the version's assets.extra/model_card.json (what the
export is: its task, architecture, parameters, signatures, limits, training
flags, commit) with the recipe's results JSON (metrics measured through the
export, with their 95% confidence intervals), plus the data, intended use and
known limits of the bundled dataset the recipe trains on. A results JSON of
no bundled recipe gives a page named after the card's task, without notes.
"""

import json
import os

from absl import app, flags

from benchmarks import environment

flags.DEFINE_multi_string("card", [], "EXPORT_VERSION_DIR:RESULTS_JSON.")
flags.DEFINE_string("output_dir", os.path.join(environment.ROOT, "docs",
                                               "models"), "Where pages go.")
FLAGS = flags.FLAGS

# recipe (trainers/configs/<recipe>.flags) -> the bundled dataset's page
RECIPE_PAGES = {"sst2_small": "sst2", "sst2_demo": "sst2",
                "shakespeare_small": "shakespeare",
                "multi30k_small": "multi30k_de_en"}
# page -> what the bundled dataset is, what a model of it is for, its limits
DATASET_NOTES = {
    "sst2": {
        "data": "SST-2 (GLUE): 67,349 training phrases from movie reviews, "
                "872 dev sentences; vocabulary learned from the training "
                "split only.",
        "use": "Binary sentiment (negative/positive) of short English "
               "movie-review sentences; a baseline and a serving example.",
        "limits": "English only; short sentences (64 word pieces, longer "
                  "text is truncated); trained from scratch on one small "
                  "domain, so expect lower accuracy off movie reviews; the "
                  "dev set also chose the checkpoint.",
    },
    "shakespeare": {
        "data": "tiny-shakespeare (1.1M characters); first 90% trains, "
                "last 10% validates.",
        "use": "Character-level text generation in the style of the plays; "
               "a demonstration of exported generation with per-request "
               "sampling settings, and of scoring text.",
        "limits": "65 characters (English letters and punctuation); other "
                  "characters are [UNK]; a 288-character context; the "
                  "output imitates the form of the plays, not their sense.",
    },
    "multi30k_de_en": {
        "data": "Multi30k task 1: 29,000 German-English image-caption pairs "
                "(train), val 1,014, test_2016_flickr 1,000; joint "
                "SentencePiece vocabulary learned from the training split.",
        "use": "Translation of short German image descriptions into English.",
        "limits": "Short, descriptive sentences from one domain (Flickr "
                  "captions); sources longer than 63 pieces are truncated; "
                  "not suited to general-domain German.",
    },
}


def repo_relative(path):
  """A path inside the repository as `data/...`; anything else unchanged."""
  if os.path.isabs(path) and path.startswith(environment.ROOT + os.sep):
    return f"`{os.path.relpath(path, environment.ROOT)}`"
  return path


def metric_lines(results):
  measured = results.get("through_export") or results.get("dev_through_export")
  lines = []
  for key, value in measured.items():
    if key.endswith("_ci95") or key in ("examples",) or isinstance(value, list):
      continue
    interval = measured.get(f"{key}_ci95")
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    if interval:
      shown += f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})"
    lines.append(f"| {key} | {shown} |")
  return lines


def page_name(card, results):
  """The bundled dataset of the results' recipe, else the card's task."""
  recipe = os.path.splitext(os.path.basename(results.get("recipe", "")))[0]
  return RECIPE_PAGES.get(recipe, card["task"])


def render(card, results):
  page = page_name(card, results)
  notes = DATASET_NOTES.get(page, {})
  title = page if page == card["task"] else f"{page}: {card['task']}"
  lines = [f"# {title} ({card['family']}, preset {card['preset']})", "",
           f"- Parameters: {card['parameters']:,}",
           f"- Exported: {card['exported_at']} from commit "
           f"`{card['git_commit']}` (checkpoint `{card['checkpoint']}`)",
           f"- TensorFlow {card['versions']['tensorflow']}, Keras "
           f"{card['versions']['keras']}", "",
           "## Data", "", notes.get("data", "-"), "",
           "## Intended use", "", notes.get("use", "-"), "",
           "## Limits", "", notes.get("limits", "-"), ""]
  lines += [f"- {key}: {value}" for key, value in sorted(card["limits"].items())]
  lines += ["", "## Metrics (through the export)", "",
            f"Measured {results['date']} on {results['machine']['cpu']} "
            f"({results['machine']['cpus']} CPUs), commit "
            f"`{results['git_commit']}`, data: "
            f"{repo_relative(results.get('evaluated_on', 'dev split'))}.", "",
            "| metric | value |", "|---|---|", *metric_lines(results), "",
            "## Signatures", "", "| signature | inputs | outputs |",
            "|---|---|---|"]
  for name, signature in card["signatures"].items():
    def describe(tensors):
      return ", ".join(f"`{k}` {v['dtype']}{v['shape']}"
                       for k, v in tensors.items())
    lines.append(f"| `{name}` | {describe(signature['inputs'])} | "
                 f"{describe(signature['outputs'])} |")
  lines += ["", "## Architecture", "", "```json",
            json.dumps(card["architecture"], indent=2, sort_keys=True), "```",
            "", "Reproduce: " + " && ".join(f"`{c}`" for c in
                                            results.get("commands", [])), ""]
  return "\n".join(lines)


def main(argv):
  del argv
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  for spec in FLAGS.card:
    export_dir, _, results_path = spec.rpartition(":")
    with open(os.path.join(export_dir, "assets.extra", "model_card.json")) as f:
      card = json.load(f)
    with open(results_path) as f:
      results = json.load(f)
    path = os.path.join(FLAGS.output_dir,
                        f"{page_name(card, results)}.md")
    with open(path, "w") as f:
      f.write(render(card, results))
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)

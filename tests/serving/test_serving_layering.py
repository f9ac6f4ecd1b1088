"""serving/ knows only SavedModels and TF Serving protos: no imports from zoo, trainers, export."""

import ast
import pathlib

SERVING = pathlib.Path(__file__).resolve().parents[2] / "serving"
FORBIDDEN = ("zoo", "trainers", "export")


def test_serving_imports_nothing_from_the_model_side():
  offenders = []
  for path in sorted(SERVING.glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
  assert offenders == []
  assert len(list(SERVING.glob("*.py"))) > 5

"""Dependencies point one way (DESIGN.md): zoo <- trainers -> export -> SavedModel <- serving."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "zoo": {"trainers", "export", "serving"},
    "export": {"trainers", "serving"},
    "serving": {"zoo", "trainers", "export"},
    "trainers": {"serving"},
}


def imported_packages(path):
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.module.split(".")[0]
    elif isinstance(node, ast.ImportFrom) and node.level > 0:
      yield "<relative>"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_design_allows(package):
  files = sorted((ROOT / package).rglob("*.py"))
  assert len(files) > 3
  offenders = [f"{path.relative_to(ROOT)} imports {name}"
               for path in files for name in imported_packages(path)
               if name in FORBIDDEN[package] or name == "<relative>"]
  assert offenders == []

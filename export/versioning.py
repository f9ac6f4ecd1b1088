"""Version directories under an export base, written atomically.

A version is written to a hidden temp dir beside the versions and renamed into
place, so a server polling the base (which only looks at integer-named dirs)
never sees a half-written version. Version numbers only grow.
"""

import os
import shutil
import time


class ExportError(Exception):
  """The export cannot be written; nothing visible to a server was left behind."""


def existing_versions(export_base):
  if not os.path.isdir(export_base):
    return []
  return sorted(int(name) for name in os.listdir(export_base)
                if name.isdigit())


def next_version(export_base):
  """A timestamp version, or one more than the newest existing version."""
  versions = existing_versions(export_base)
  return max([int(time.time())] + [v + 1 for v in versions])


def prepare_export_base(export_base):
  try:
    os.makedirs(export_base, exist_ok=True)
  except OSError as e:
    raise ExportError(f"cannot create export base {export_base}: {e}") from e
  if not os.access(export_base, os.W_OK | os.X_OK):
    raise ExportError(f"export base {export_base} is not writable")


def write_version_atomically(export_base, version, write_fn):
  """Calls write_fn(temp_dir), then renames temp_dir to export_base/<version>.

  On any failure the temp dir is removed and nothing is left at the version path.
  Returns the final version path.
  """
  prepare_export_base(export_base)
  final_path = os.path.join(export_base, str(version))
  if os.path.exists(final_path):
    raise ExportError(f"version directory {final_path} already exists; "
                      "versions are immutable, choose another --version")
  temp_path = os.path.join(export_base, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(temp_path, ignore_errors=True)
  try:
    write_fn(temp_path)
    os.rename(temp_path, final_path)
  except BaseException:
    shutil.rmtree(temp_path, ignore_errors=True)
    raise
  return final_path

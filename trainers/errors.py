"""UserError: bad input a user can fix; entry points print it without a traceback."""

import sys

from absl import logging


class UserError(Exception):
  """A problem with flags, files or data, with a message that says what to fix."""


def run_reporting_user_errors(fn, *args, **kwargs):
  """Calls fn; a UserError ends the process with its message and exit code 1
  (no traceback)."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    logging.error("%s", e)
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(1)

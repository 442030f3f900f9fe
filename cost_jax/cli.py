"""Command-line entry points: expected mistakes get one line and exit code 2; a traceback is for bugs.

  from cost_jax import cli
  ...
  if __name__ == '__main__':
    define_flags()
    cli.run(main)

`main` raises `cli.UsageError('what is wrong, naming the file or flag')` for anything a user can fix
(a missing path, no checkpoint, a bad flag value, refused data). Flag parsing errors (an unknown flag,
a value of the wrong type, a config override that does not parse) are reported the same way.
"""

import sys

from absl import app
from absl import flags

EXIT_USAGE = 2


class UsageError(Exception):
  """A mistake the user can fix; the message names the problem (and the file or flag)."""


def parse_box(values, flag='--box'):
  """A box flag's fields (a list of strings) -> [x, y, w, h] floats, or UsageError when they are
  not 4 numbers. Whether the box fits a frame is the tracker's check (tracker.start_frame)."""
  try:
    box = [float(v) for v in values]
  except ValueError:
    raise UsageError(f'{flag}={",".join(values)}: not numbers (expected x,y,w,h px)') from None
  if len(box) != 4:
    raise UsageError(f'{flag}={",".join(values)}: {len(box)} numbers, expected 4 (x,y,w,h px)')
  return box


def fail(message):
  """Prints `error: message` on stderr and exits with code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
  except (ValueError, TypeError, KeyError, AttributeError, FileNotFoundError) as e:
    # ml_collections config files and `--config.x=y` overrides raise these while parsing
    fail(f'{type(e).__name__}: {e}')


def run(main):
  """absl's app.run(main) with one-line errors (exit 2) for flag errors and UsageError."""

  def wrapped(argv):
    try:
      return main(argv)
    except UsageError as e:
      fail(str(e))
    except OSError as e:  # ml_collections defers a config file's load error to the first access
      if 'Failed loading config file' not in str(e):
        raise
      fail('could not load the config file: ' + ' '.join(str(e).split('\n')[-1].split()))

  app.run(wrapped, flags_parser=_parse_flags)

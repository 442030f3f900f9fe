"""Result files: `<results_dir>/<tracker>/<dataset>/<sequence>.txt` and `<sequence>_time.txt`.

One `x,y,w,h` line per frame (pixels). The tracker writes them with `write_results` / `write_times`;
the metrics read them (ours and other trackers' published raw results) with `read_rows`. Beside them,
`tracking_report.json` (written by cost_jax.track, copied into metrics.json by cost_jax.evaluate):

  {"failed": {sequence: reason},                    # not tracked, no result file
   "bad_frames": {sequence: [{"frame": 1-based number, "file": path, "reason": why}]}}  # box carried over
"""

import json
import math
import os
import re

import numpy as np


class SequenceFailure(ValueError):
  """A sequence that cannot be scored; the message says why (it is reported by name, never scored)."""


def result_folder(results_dir, tracker, dataset):
  """<results_dir>/<tracker>/<dataset>: one tracker's result files on one dataset."""
  return os.path.join(results_dir, tracker, dataset)


def result_file(folder, sequence):
  """<folder>/<sequence>.txt: one sequence's result file in a result_folder."""
  return os.path.join(folder, f'{sequence}.txt')


def result_path(results_dir, tracker, dataset, sequence):
  """<results_dir>/<tracker>/<dataset>/<sequence>.txt: one sequence's result file."""
  return result_file(result_folder(results_dir, tracker, dataset), sequence)


def time_path(path):
  """`<sequence>_time.txt` beside the result file `<sequence>.txt` (pytracking's name)."""
  return path[:-len('.txt')] + '_time.txt' if path.endswith('.txt') else path + '_time.txt'


TRACKING_REPORT = 'tracking_report.json'


def tracking_report_path(folder):
  """<results_dir>/<tracker>/<dataset>/tracking_report.json for that folder."""
  return os.path.join(folder, TRACKING_REPORT)


def empty_tracking_report():
  return {'failed': {}, 'bad_frames': {}}


def read_tracking_report(folder):
  """The tracking report in `folder` (see the module docstring), or None when there is none.

  Raises ValueError naming the file when it is not such a report.
  """
  path = tracking_report_path(folder)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: unreadable tracking report ({type(e).__name__}: {e})') from None
  if not (isinstance(report, dict) and isinstance(report.get('failed'), dict)
          and isinstance(report.get('bad_frames'), dict)):
    raise ValueError(f"{path}: not a tracking report (needs the objects 'failed' and 'bad_frames')")
  return {'failed': report['failed'], 'bad_frames': report['bad_frames']}


def write_tracking_report(folder, report):
  """Write {'failed': ..., 'bad_frames': ...} to `folder`/tracking_report.json (atomically)."""
  _write_atomically(tracking_report_path(folder), json.dumps(report, indent=1, sort_keys=True) + '\n')


def _write_atomically(path, text):
  """Write through a temporary file and rename, so a reader (or a resumed run) never sees half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def format_boxes(boxes, decimals=3, int_results=False):
  """Lines 'x,y,w,h' for boxes [N, 4] (pixels).

  int_results: truncate toward zero like published raw results (pytracking/OSTrack save with
  np.savetxt(fmt='%d'), which truncates floats).
  """
  boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  if int_results:
    values = np.trunc(boxes).astype(np.int64)
    return ''.join(','.join(str(int(v)) for v in row) + '\n' for row in values)
  return ''.join(','.join(f'{v:.{decimals}f}' for v in row) + '\n' for row in boxes)


def write_results(path, boxes, decimals=3, int_results=False):
  """Write one sequence's boxes [N, 4] (x, y, w, h pixels) to `path`, one line a frame."""
  _write_atomically(path, format_boxes(boxes, decimals, int_results))


def write_times(path, times):
  """Write per-frame seconds [N] to the `_time.txt` beside result file `path` (pytracking's '%f')."""
  _write_atomically(time_path(path), ''.join(f'{float(t):f}\n' for t in np.asarray(times).reshape(-1)))


def read_times(path):
  """Per-frame seconds [N] from the `_time.txt` beside `path`, or None when there is none."""
  tpath = time_path(path)
  if not os.path.isfile(tpath):
    return None
  with open(tpath) as f:
    return np.array([float(line) for line in f if line.strip()], dtype=np.float64)


_SPLIT = re.compile(r'[,\t ]+')


def read_rows(path):
  """Every line of a result file as a tuple of floats (an empty line gives ()).

  Accepts ',' / tab / space separators (pytracking's load_text tries '\\t' then ','). Raises
  SequenceFailure for a missing file or a token that is not a number. Lengths and values are judged
  later, by the protocol (`check_rows`, `rows_to_boxes`).
  """
  if not os.path.isfile(path):
    raise SequenceFailure(f'missing result file {path}')
  rows = []
  with open(path) as f:
    for k, line in enumerate(f.read().splitlines(), start=1):
      text = line.strip()
      try:
        rows.append(tuple(float(t) for t in _SPLIT.split(text)) if text else ())
      except ValueError:
        raise SequenceFailure(f'{path} line {k}: cannot read {text!r}') from None
  return rows


def is_absent_row(row):
  """The VL-SOT accuracy script's `not_exist`: an empty line or a single 0 predicts 'target absent'."""
  return len(row) == 0 or (len(row) == 1 and row[0] == 0)


def frame_list(mask):
  """1-based frame numbers where mask holds, shortened for messages."""
  idx = [int(i) + 1 for i in np.nonzero(mask)[0]]
  return str(idx) if len(idx) <= 10 else f'{idx[:10]} and {len(idx) - 10} more'


def rows_to_boxes(rows, compat=False):
  """Boxes [N, 4] from parsed rows.

  Strict: every line must hold exactly 4 numbers. compat: the originals read with np.loadtxt, which
  skips blank lines and fails on a line of another width (the sequence is then unreadable).
  """
  if compat:
    rows = [r for r in rows if len(r) > 0]  # np.loadtxt drops empty lines
  bad = [k for k, r in enumerate(rows) if len(r) != 4]
  if bad:
    raise SequenceFailure(f'lines {frame_list(np.isin(np.arange(len(rows)), bad))} do not hold 4 numbers')
  if not rows:
    raise SequenceFailure('empty result file')
  return np.array(rows, dtype=np.float64).reshape(-1, 4)


def check_boxes(boxes):
  """docs/design.md §4 / calc_seq_err_robust ('Error: Invalid results'): NaN anywhere or w/h < 0
  in a prediction is an error; negative x, y are legal."""
  nan = np.isnan(boxes).any(axis=1)
  if nan.any():
    raise SequenceFailure(f'NaN in the prediction at frames {frame_list(nan)}')
  negative = (boxes[:, 2:] < 0).any(axis=1)
  if negative.any():
    raise SequenceFailure(f'negative width/height at frames {frame_list(negative)}')


def is_integer_format(rows):
  """True when every number in the rows is a whole number (published int results)."""
  return all(math.isfinite(v) and float(v).is_integer() for r in rows for v in r)

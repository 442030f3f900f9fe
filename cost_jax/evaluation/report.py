"""What `python -m cost_jax.evaluate` produces: the printed table, metrics.json, attribute tables, plots.

Outputs under <results_dir>: metrics.json ({tracker: {dataset: metrics}}, merged with what is there),
plots/<dataset>_{success,precision,norm_precision}.png and, where the sequences carry attributes,
attributes_<dataset>.json ({group: {tracker: metrics}}).
"""

import json
import os

from cost_jax.evaluation import metrics as M
from cost_jax.evaluation.attributes import attribute_groups, attribute_table
from cost_jax.evaluation.benchmark import (PLOTS_DIR, default_protocol, score_trackers,
                                           tracker_metrics)
from cost_jax.evaluation.plots import plot_curves

COLUMNS = (('auc', 'AUC'), ('precision', 'P@20'), ('norm_precision', 'Pnorm'), ('np_auc', 'NP-AUC'),
           ('ciou_auc', 'cIoU-AUC'), ('macc', 'mACC'))


def format_table(rows, first='tracker'):
  """Fixed-width table of {row name: metrics}; fractions printed as percentages, '-' for null."""
  names = list(rows)
  width = max([len(first)] + [len(n) for n in names]) + 2
  head = first.ljust(width) + ''.join(f'{h:>10}' for _, h in COLUMNS) + f'{"seqs":>7}{"failed":>8}'
  lines = [head, '-' * len(head)]
  for n in names:
    m = rows[n]
    cells = ''.join(f'{"-":>10}' if m[k] is None else f'{100.0 * m[k]:>10.2f}' for k, _ in COLUMNS)
    lines.append(n.ljust(width) + cells + f'{m["sequences"]:>7}{len(m["failed"]):>8}')
  return '\n'.join(lines)


def format_failures(table):
  """One line per failed sequence: 'tracker/sequence: reason'."""
  return '\n'.join(f'FAILED {t}/{name}: {reason}'
                   for t, m in table.items() for name, reason in m['failed'].items())


def format_tracking_notes(table):
  """One line per tracker whose tracking report records unreadable frames or cannot be read."""
  lines = []
  for t, m in table.items():
    tracking = m.get('tracking') or {}
    if 'error' in tracking:
      lines.append(f'WARNING {t}: {tracking["error"]}')
    bad = tracking.get('bad_frames', {})
    if bad:
      frames = sum(len(v) for v in bad.values())
      lines.append(f'NOTE {t}: {frames} unreadable frame(s) in {len(bad)} sequence(s) kept the '
                   'previous box while tracking (metrics.json: tracking.bad_frames)')
  return '\n'.join(lines)


def update_metrics_json(path, metrics):
  """Merge {tracker: {dataset: ...}} into the metrics.json at `path` (other datasets kept)."""
  old = {}
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
  for tracker, by_dataset in metrics.items():
    old.setdefault(tracker, {}).update(by_dataset)
  with open(path, 'w') as f:
    json.dump(old, f, indent=2, sort_keys=True)
  return old


def run(sequences, results_dir, dataset, trackers=None, protocol=None, compat=False, plots=True,
        echo=print):
  """Score, print, and write every output; returns {tracker: {dataset: metrics}}."""
  protocol = protocol or default_protocol(dataset)
  results = score_trackers(sequences, results_dir, trackers, dataset, protocol, compat)
  table = {t: tracker_metrics(r, protocol) for t, r in results.items()}
  mode = 'compat' if compat else 'strict'
  echo(f'{dataset}: {len(sequences)} sequences, protocol {protocol}, lengths {mode}')
  echo(format_table(table))
  if any(m['failed'] for m in table.values()):
    echo(format_failures(table))
    if len({frozenset(m['failed']) for m in table.values()}) > 1:
      # pytracking's skip_missing_seq drops a sequence for every tracker; here each tracker keeps its own
      echo('NOTE: trackers were scored on different sequence sets (see FAILED above)')
  notes = format_tracking_notes(table)
  if notes:
    echo(notes)
  metrics = {t: {dataset: m} for t, m in table.items()}
  update_metrics_json(os.path.join(results_dir, 'metrics.json'), metrics)

  groups = attribute_groups(sequences)
  if groups:
    by_group = attribute_table(results, groups, protocol)
    with open(os.path.join(results_dir, f'attributes_{dataset}.json'), 'w') as f:
      json.dump(by_group, f, indent=2, sort_keys=True)
    for group, rows in by_group.items():
      echo(f'\n[{dataset}] attribute {group} ({len(groups[group])} sequences)')
      echo(format_table(rows))

  if plots:
    scored = {t: M.mean_curves([s.curves for s in r.scores.values()])
              for t, r in results.items() if r.scores}
    kinds = ('success', 'precision', 'norm_precision')
    for kind in kinds if scored else ():
      path = os.path.join(results_dir, PLOTS_DIR, f'{dataset}_{kind}.png')
      plot_curves(scored, kind, path, f'{kind.replace("_", " ").capitalize()} plot on {dataset}', protocol)
  return metrics

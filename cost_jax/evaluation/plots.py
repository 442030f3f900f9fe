"""Success and precision plots (PNG, matplotlib Agg): one curve per tracker, its score in the legend.

Like pytracking's plot_results.plot_draw_save: trackers sorted by score, best first in the legend.
"""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402

from cost_jax.evaluation import metrics as M  # noqa: E402

# kind -> (curve key, x values, score of a mean curve, x label, legend score name)
PLOTS = {
    'success': ('success', None, lambda c: float(np.mean(c)), 'Overlap threshold', 'AUC'),
    'precision': ('precision', M.CENTER_THRESHOLDS, lambda c: float(c[M.PRECISION_INDEX]),
                  'Location error threshold [pixels]', 'P@20'),
    'norm_precision': ('norm_precision', M.NORM_CENTER_THRESHOLDS, lambda c: float(c[M.PRECISION_INDEX]),
                       'Normalised location error threshold', 'Pnorm@0.2'),
}


def plot_curves(mean_curves, kind, path, title, protocol):
  """Draw {tracker: mean curves dict} for `kind` ('success' | 'precision' | 'norm_precision') to `path`."""
  key, x, score, xlabel, score_name = PLOTS[kind]
  if x is None:
    x = M.VLSOT_OVERLAP_THRESHOLDS if protocol == 'vlsot' else M.OVERLAP_THRESHOLDS
  ranked = sorted(mean_curves, key=lambda t: -score(mean_curves[t][key]))
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for t in ranked:
    curve = mean_curves[t][key]
    ax.plot(x, 100.0 * curve, linewidth=2, label=f'{t} [{score_name} {100.0 * score(curve):.1f}]')
  ax.set(xlabel=xlabel, ylabel='Rate [%]', xlim=(x[0], x[-1]), ylim=(0, 100), title=title)
  ax.grid(True, linestyle='-.')
  ax.legend(loc='upper right' if kind == 'success' else 'lower right', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path

"""cost_jax.ablate's table: mean ± sample std over seeds, by hand, and the rows' own tracking settings."""

import numpy as np

from cost_jax import ablate


def _run(auc_all, auc_lc, p20):
  metrics = lambda auc, p: {'auc': auc, 'precision': p, 'norm_precision': p, 'sequences': 3}
  return {'seconds': 1.0, 'full': {'all': metrics(auc_all, p20), 'language-critical': metrics(auc_lc, p20)}}


def test_summary_is_mean_and_sample_std_over_seeds():
  per_seed = {'full': {0: _run(0.5, 0.4, 0.7), 1: _run(0.6, 0.2, 0.8), 2: _run(0.7, 0.3, 0.9)}}
  summary = ablate.summarise(per_seed)
  mean, std, n = summary['full']['all']['auc']
  assert n == 3
  np.testing.assert_allclose([mean, std], [0.6, 0.1], rtol=1e-12)  # sqrt(((.1)^2 + 0 + (.1)^2) / 2)
  np.testing.assert_allclose(summary['full']['language-critical']['auc'][:2], [0.3, 0.1], rtol=1e-12)
  table = ablate.markdown_table(summary).splitlines()
  assert table[0] == '| row | AUC all | AUC language-critical | P@20 all |'
  assert table[2] == '| full | 0.600 ± 0.100 | 0.300 ± 0.100 | 0.800 ± 0.100 |'


def test_one_seed_has_no_std():
  table = ablate.markdown_table(ablate.summarise({'full': {0: _run(0.5, 0.4, 0.7)}}))
  assert table.splitlines()[2] == '| full | 0.500 | 0.400 | 0.700 |'


def test_the_model_trained_without_language_is_also_tracked_with_the_sigmoid_map():
  rows = ablate.VARIANTS['no_language'][1]
  assert ('trained without language, sigmoid map', 'no_language',
          {'track.score_map': 'sigmoid'}) in rows
  for _, (overrides, variant_rows) in ablate.VARIANTS.items():
    for table_row, result_row, track_overrides in variant_rows:
      assert all(k.startswith('track.') for k in track_overrides), table_row

"""The demo end to end on a budget of a few training steps: every stage writes its files, the table
parses, and a rerun resumes instead of starting over. (The accuracy bar is a benchmark, in README.)"""

import json
import os

import pytest


def test_demo_end_to_end_and_resume(tmp_path):
  from cost_jax import demo
  workdir = str(tmp_path / 'demo')
  small = {'min_frames': 12, 'max_frames': 16}
  table = demo.run(workdir, steps=2, minutes=0.0, train_videos=3, test_videos=2, language_videos=3,
                   slots=2, progress=False, data_options=small)

  # Stages: data, checkpoint, result files for the three rows, metrics, plots, GIF.
  for split in ('train', 'test', 'language'):
    assert os.path.isfile(os.path.join(workdir, 'data', split, 'generator_report.json'))
  assert os.path.isdir(os.path.join(workdir, 'train', 'checkpoints', '2'))
  for row in demo.ROWS:
    folder = os.path.join(workdir, 'results', row, demo.DATASET)
    names = sorted(f for f in os.listdir(folder) if f.endswith('.txt') and not f.endswith('_time.txt'))
    assert len(names) == 5  # 2 test + 3 language-critical
    for name in names:
      with open(os.path.join(folder, name)) as f:
        rows = [line for line in f if line.strip()]
      assert all(len(r.split(',')) == 4 for r in rows)
  plots = os.listdir(os.path.join(workdir, 'results', 'plots'))
  assert {'synthetic_success.png', 'synthetic_precision.png'} <= set(plots)
  gifs = [f for f in os.listdir(workdir) if f.endswith('.gif')]
  assert len(gifs) == 1

  with open(os.path.join(workdir, 'demo_results.json')) as f:
    saved = json.load(f)
  assert set(saved) == set(demo.ROWS)
  for row, by_subset in saved.items():
    assert by_subset['all']['sequences'] == 5
    assert by_subset['language-critical']['sequences'] >= 3  # every language video has a twin
    for m in by_subset.values():
      assert set(m) == {'auc', 'precision', 'norm_precision', 'sequences'}
      assert all(0.0 <= m[k] <= 1.0 for k in ('auc', 'precision', 'norm_precision')), (row, m)
  assert saved == table  # JSON round-trips Python floats exactly
  # The static baseline is frame 1's box: its frame 1 is exact, so its AUC is positive.
  assert saved['static']['all']['auc'] > 0
  # Each language-critical video has exactly one cue, so the cue columns partition that subset.
  static = saved['static']
  cues = [c for c in static if c not in ('all', 'language-critical')]
  assert sum(static[c]['sequences'] for c in cues) == static['language-critical']['sequences']
  with open(os.path.join(workdir, 'demo_run.json')) as f:
    assert json.load(f)['trained_steps'] == 2

  # A second run reuses data and checkpoint: still 2 steps, identical table.
  again = demo.run(workdir, steps=2, minutes=0.0, train_videos=3, test_videos=2, language_videos=3,
                   slots=2, progress=False, data_options=small)
  assert again == table

"""The demo end to end on a budget of a few training steps: every stage writes its files, the table
parses, and a rerun resumes instead of starting over. (The accuracy bar is a benchmark, in README.)"""

import json
import os

import pytest


def test_demo_end_to_end_and_resume(tmp_path, capsys):
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

  # Its last lines: the checkpoint and two track_video commands for a held-out video.
  import shlex
  from cost_jax import track_video
  commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()[-2:]]
  assert [c[:3] for c in commands] == [['python', '-m', 'cost_jax.track_video']] * 2
  args = [dict(a[2:].split('=', 1) for a in c[3:]) for c in commands]
  assert args[0]['workdir'] == args[1]['workdir'] == os.path.join(workdir, 'train')
  assert 'box' not in args[1] and args[0]['video'] == args[1]['video']
  held_out = demo.held_out_sequences({n: os.path.join(workdir, 'data', n) for n in demo.HELD_OUT})
  sequence = [s for s in held_out if os.path.dirname(s.frames[0]) == args[0]['video']][0]
  assert args[0]['sentence'] == sequence.sentence
  assert track_video.parse_box(args[0]['box'].split(',')) == list(sequence.boxes[0])

  # A second run reuses data and checkpoint: still 2 steps, identical table.
  again = demo.run(workdir, steps=2, minutes=0.0, train_videos=3, test_videos=2, language_videos=3,
                   slots=2, progress=False, data_options=small)
  assert again == table

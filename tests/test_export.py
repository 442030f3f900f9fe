"""Export: the artifacts take parameters as arguments, with symbolic batch and frame size, and the
standalone loader (no model code) tracks exactly like the live tracker."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cost_jax import export
from cost_jax import export_runtime
from cost_jax import tracker
from tests.test_tracker import one_by_one, relative, setup  # noqa: F401  (setup is a fixture)


@pytest.fixture(scope='module')
def exported(setup, tmp_path_factory):  # noqa: F811
  out = str(tmp_path_factory.mktemp('exported'))
  return export.export_tracker(setup['config'], setup['variables'], out, model=setup['model'])


def test_artifacts_take_parameters_as_arguments_with_symbolic_shapes(setup, exported):  # noqa: F811
  track = export_runtime.load_exported(os.path.join(exported, export_runtime.TRACK_FILE))
  assert track.platforms == ('cpu', 'cuda', 'tpu')
  leaves = jax.tree.leaves(setup['variables'])
  assert len(track.in_avals) > len(leaves)  # every parameter is an argument...
  weight_bytes = sum(np.asarray(a).nbytes for a in leaves)
  assert os.path.getsize(os.path.join(exported, export_runtime.TRACK_FILE)) < weight_bytes / 4
  frames = track.in_avals[-2]  # ...and not a constant; frames [b, h, w, 3] stay symbolic
  assert [str(d) for d in frames.shape] == ['b', 'h', 'w', '3']
  restored = export_runtime.restore_variables(os.path.join(exported, export_runtime.VARIABLES_DIR))
  for a, b in zip(jax.tree.leaves(restored), leaves):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(exported, 'tokenizer.json')) as f:
    assert json.load(f)['max_len'] == setup['config'].model.text.max_len


def test_exported_step_equals_live_step(setup, exported):  # noqa: F811
  """Two slots of different frame sizes, one exported step vs the live tracker on each."""
  seqs = setup['sequences'][:2]
  loaded = export_runtime.ExportedTracker(exported)
  loaded.initialize([tracker.load_frame(s.frames[0]) for s in seqs], [s.boxes[0] for s in seqs],
                    [s.sentence for s in seqs])
  boxes = loaded.track([tracker.load_frame(s.frames[1]) for s in seqs])
  live = setup['tracker']
  for i, s in enumerate(seqs):
    live.initialize(tracker.load_frame(s.frames[0]), s.boxes[0], s.sentence)
    assert relative(boxes[i], live.track(tracker.load_frame(s.frames[1]))['target_bbox']) <= 1e-5


def test_loader_tracks_from_the_folder_without_model_code(setup, exported):  # noqa: F811
  seq = setup['sequences'][0]
  script = (
      'import json, sys\n'
      'from cost_jax import export_runtime\n'
      f'boxes, bad = export_runtime.track_sequence({exported!r}, {list(seq.frames)!r}, '
      f'{[float(v) for v in seq.boxes[0]]!r}, {seq.sentence!r})\n'
      'assert bad == []\n'
      "assert not [m for m in sys.modules if m.startswith(('cost_jax.models', 'configs', 'flax'))]\n"
      'print(json.dumps(boxes.tolist()))\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  boxes = np.array(json.loads(run.stdout.strip().splitlines()[-1]))
  reference = one_by_one(setup, seq)
  assert np.mean(np.abs(boxes - reference).max(axis=1) <= 1e-3) >= 0.99


def test_command_orders_frames_numerically_and_carries_a_bad_frame_over(setup, exported, tmp_path):  # noqa: F811
  """Frames 1, 2, 3 (garbage), 10, 11: tracked in that order (not the names' 1, 10, 11, 2, 3), frame 3
  keeps frame 2's box and is logged, like the live tracker on the same files."""
  seq = setup['sequences'][0]
  folder = tmp_path / 'frames'
  folder.mkdir()
  for number, source in zip((1, 2, 10, 11), seq.frames):
    (folder / f'{number}.png').write_bytes(open(source, 'rb').read())
  (folder / '3.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
  run = subprocess.run(
      [sys.executable, '-m', 'cost_jax.export_runtime', f'--dir={exported}', f'--frames={folder}/*.png',
       '--box=' + ','.join(str(v) for v in seq.boxes[0]), f'--sentence={seq.sentence}'],
      capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'frame 3 ({folder}/3.png): unreadable frame' in run.stderr
  boxes = np.array([[float(v) for v in line.split(',')] for line in run.stdout.split()])
  numeric = [str(folder / f'{n}.png') for n in (1, 2, 3, 10, 11)]
  live, bad = setup['tracker'].track_files(numeric, seq.boxes[0], seq.sentence)
  assert [b.frame for b in bad] == [3] and boxes.shape == (5, 4)
  np.testing.assert_array_equal(boxes[2], boxes[1])
  assert np.abs(boxes - live).max() <= 1e-3  # 3-decimal output
  by_name, _ = setup['tracker'].track_files(sorted(numeric), seq.boxes[0], seq.sentence)
  assert np.abs(boxes - by_name).max() > 0.1  # the order matters, so the check above can fail


@pytest.mark.parametrize('args, message', [
    (['--box=65,48,-13,13'], 'has zero or negative size'),
    (['--box=nan,48,13,13'], 'is not finite'),
    (['--box=500,10,10,8'], 'lies entirely outside the 120 x 90 frame'),
    (['--box=65,48,13'], '3 numbers, expected 4'),
    (['--box=a,b,c,d'], 'not numbers'),
    (['--box=10,40,10,8', '--frames=/nowhere/*.png'], '--frames=/nowhere/*.png matches no file'),
    (['--box=10,40,10,8', '--dir=/nowhere'], '--dir=/nowhere is not an exported tracker'),
])
def test_command_mistakes_are_one_line_and_exit_2(setup, exported, args, message):  # noqa: F811
  from tests.test_tracker import usage_error
  frames = os.path.join(os.path.dirname(setup['sequences'][0].frames[0]), '*.png')
  line = usage_error('cost_jax.export_runtime', f'--dir={exported}', f'--frames={frames}', *args)
  assert message in line


@pytest.mark.parametrize('module, args, message', [
    ('cost_jax.export', ['--config=configs/cost_tiny.py', '--workdir={tmp}/w', '--out={tmp}/o'],
     'no checkpoint in --workdir={tmp}/w (no step folder in {tmp}/w/checkpoints)'),
    ('cost_jax.export', ['--config=configs/cost_tiny.py', '--workdir={tmp}/w', '--out={tmp}/o',
                         '--platforms=cpu,gpu'], '--platforms=cpu,gpu: each must be one of cpu, cuda, tpu'),
    ('cost_jax.export', ['--config=configs/nope.py', '--workdir={tmp}/w', '--out={tmp}/o'],
     'could not load the config file'),
    ('cost_jax.summary', ['--config=configs/nope.py'], 'could not load the config file'),
    ('cost_jax.summary', [], 'Flag --config must have a value other than None'),
])
def test_export_and_summary_mistakes_are_one_line_and_exit_2(tmp_path, module, args, message):
  from tests.test_tracker import usage_error
  line = usage_error(module, *(a.format(tmp=tmp_path) for a in args))
  assert message.format(tmp=tmp_path) in line

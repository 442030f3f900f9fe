"""The stream's planner without TensorFlow: plans are a pure function of (seed, g, attempt), their
geometry lies in the frame, bad samples are replaced and counted; the image header parser."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from configs import cost_tiny
from input_pipeline import crops
from input_pipeline import images
from input_pipeline import plan as plan_lib
from input_pipeline import sequence as sequence_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = ('red square moving left', 'small blue circle near the tree', 'green kite in the sky')


def write_sequence(root, name, frames=10, size=(96, 72), seed=0, fmt='JPEG', sentence=None):
  """A textured video with a moving bright square; returns its Sequence (dataset 'fixture')."""
  rng = np.random.default_rng(seed)
  folder = os.path.join(root, name)
  os.makedirs(folder, exist_ok=True)
  w, h = size
  cells = (h // 8 + 1, w // 8 + 1)
  coarse = rng.integers(40, 200, (*cells, 1)) + rng.integers(0, 20, (*cells, 3))
  background = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w].astype(np.uint8)
  paths, boxes = [], []
  for i in range(frames):
    x, y = 20 + 2 * i + int(rng.integers(0, 3)), 15 + i
    bw, bh = 10 + i % 3, 7
    frame = background.copy()
    frame[y:y + bh, x:x + bw] = (250, 30, 30)
    path = os.path.join(folder, f'{i + 1:08d}.' + ('jpg' if fmt == 'JPEG' else 'png'))
    Image.fromarray(frame).save(path, fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
    paths.append(path)
    boxes.append((x, y, bw, bh))
  return sequence_lib.Sequence(
      name=name, dataset='fixture', frames=paths, boxes=np.array(boxes, np.float64),
      visible=np.ones(frames, bool), sentence=SENTENCES[seed % 3] if sentence is None else sentence)


def small_config(batch=4, **data):
  config = cost_tiny.get_config()
  config.model.template_size = 32
  config.model.search_size = 48
  config.train.batch_size = batch
  config.data.weights = {'a': 1.0, 'b': 1.0}
  config.data.max_gap = 4
  config.data.num_parallel_calls = 2
  for k, v in data.items():
    config.data[k] = v
  return config


def write_fixture(root):
  """Two small 'datasets' (JPEG and PNG frames) in root; returns sequences_by_dataset."""
  return {'a': [write_sequence(root, f'a{i}', seed=i) for i in range(3)],
          'b': [write_sequence(root, 'b0', seed=7, fmt='PNG'), write_sequence(root, 'b1', seed=8)]}


@pytest.fixture(scope='module')
def sequences(tmp_path_factory):
  return write_fixture(str(tmp_path_factory.mktemp('plan')))


def assert_plans_equal(a, b):
  for name, x, y in zip(plan_lib.ExamplePlan._fields, a, b):
    assert np.asarray(x).dtype == np.asarray(y).dtype, name
    np.testing.assert_array_equal(x, y, err_msg=name)


def test_planning_imports_no_tensorflow(tmp_path):
  """The planner runs (and plans whole host batches) in a process that never imports TensorFlow."""
  code = textwrap.dedent(f'''
      import sys
      from input_pipeline import plan
      from tests.test_plan import small_config, write_fixture
      planner = plan.Planner(small_config(), write_fixture({str(tmp_path)!r}))
      for step in range(3):
        batch = planner._plan_step_np(step, [])
        assert isinstance(batch, plan.ExamplePlan) and batch.regions.shape == (4, 2, 4)
        assert list(batch.g) == list(planner.host_indices(step))
      assert 'tensorflow' not in sys.modules, [m for m in sys.modules if 'tensorflow' in m][:5]
      print('ok')
  ''')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-2000:]


def test_plan_fields_have_their_declared_dtypes_and_shapes(sequences):
  planner = plan_lib.Planner(small_config(), sequences)
  p = planner._plan_np(3, 0)
  shapes = plan_lib.shapes(planner.text_len)
  for name, value, dtype, shape in zip(p._fields, p, plan_lib.DTYPES, shapes):
    value = np.asarray(value)
    assert list(value.shape) == shape, name
    if dtype is bytes:
      assert value.dtype == object and isinstance(value.item(), bytes), name
    else:
      assert value.dtype == dtype, name
  stacked = planner._plan_step_np(1, [])
  for j, g in enumerate(planner.host_indices(1)):
    row = [np.asarray(field[j], field.dtype) for field in stacked]
    assert_plans_equal(row, planner._plan_np(g, 0))


def test_geometry_lies_in_the_frame(sequences):
  """Decode regions are non-empty and inside the 96 x 72 frames, the target's boxes meet the frame,
  the search frame is at most max_gap from the template, and the jittered target's centre stays
  within center_jitter / (2 search_factor) of the search crop's centre (the window is at least
  search_factor sqrt(w h) wide)."""
  config = small_config()
  planner = plan_lib.Planner(config, sequences)
  bound = config.data.center_jitter / (2 * config.crop.search_factor) + 1e-9
  for g in range(64):
    plan, attempt, reasons = planner.plan(g)
    assert attempt == 0 and not reasons  # the fixture is clean
    y0, y1, x0, x1 = plan['regions'].T
    assert np.all((0 <= y0) & (y0 < y1) & (y1 <= 72) & (0 <= x0) & (x0 < x1) & (x1 <= 96)), g
    t, s = plan['frames']
    assert abs(t - s) <= config.data.max_gap
    for index in (t, s):
      x, y, w, h = plan['sequence'].boxes[index]
      assert w > 0 and h > 0 and x < 96 and y < 72 and x + w > 0 and y + h > 0
    cx, cy, w, h = plan['search_box']
    assert abs(cx - 0.5) <= bound and abs(cy - 0.5) <= bound and 0 < w < 1 and 0 < h < 1, g
    np.testing.assert_allclose(plan['search_box'],
                               crops.box_to_crop(plan['sequence'].boxes[s], plan['windows'][1]))


def test_same_g_and_attempt_give_the_same_plan(sequences):
  a = plan_lib.Planner(small_config(), sequences)
  b = plan_lib.Planner(small_config(), sequences)
  for g in (0, 5, 17):
    assert_plans_equal(a._plan_np(g, 0), b._plan_np(g, 0))
  assert_plans_equal(a._plan_np(9, 0), a._plan_np(9, 0))  # no state carried between calls
  later = [a._plan_np(9, attempt) for attempt in (1, 2)]
  # the attempt is in the key
  assert not np.array_equal(later[0].resize_boxes, later[1].resize_boxes)
  config = small_config()
  config.seed = 1
  other = plan_lib.Planner(config, sequences)
  assert not all(np.array_equal(other._plan_np(g, 0).resize_boxes, a._plan_np(g, 0).resize_boxes)
                 for g in range(4))


def test_bad_samples_are_replaced_and_counted(tmp_path):
  """A bad attempt (NaN box, box off the frame, missing frame, empty sentence) moves g to the next
  attempt, whose plan is what attempt would give alone; the plan counts each reason."""
  root = str(tmp_path)
  seq = write_sequence(root, 'ok', seed=0)
  boxes = seq.boxes.copy()
  boxes[2] = np.nan
  boxes[6] = (500.0, 500.0, 5.0, 5.0)  # outside the 96 x 72 frame
  os.remove(seq.frames[8])
  seq = sequence_lib.Sequence(name='ok', dataset='fixture', frames=seq.frames, boxes=boxes,
                              visible=seq.visible, sentence=seq.sentence)
  empty = write_sequence(root, 'empty', seed=1, sentence=' ')
  config = small_config(batch=8)
  config.data.weights = {'a': 1.0}
  planner = plan_lib.Planner(config, {'a': [seq, empty]})
  seen = set()
  for g in range(64):
    expected = []
    attempt = 0
    while True:
      result, reason = planner._try(g, attempt)
      if result is not None:
        break
      expected.append(reason)
      attempt += 1
    p = planner._plan_np(g, 0)
    assert int(p.attempt) == attempt and int(p.sequence_key) == seq.sequence_key
    counts = dict(zip(plan_lib.REASONS, p.counts.tolist()))
    assert counts == {r: expected.count(r) for r in plan_lib.REASONS}
    assert_plans_equal(p._replace(counts=np.zeros_like(p.counts)), planner._plan_np(g, attempt))
    seen.update(expected)
  assert seen == {'bad_box', 'box_outside_image', 'missing_frame', 'empty_sentence'}
  planner._count(np.array([[0, 0, 2, 0, 1, 0], [1, 0, 0, 0, 0, 0]]))
  assert planner.replacements() == {'bad_box': 2, 'missing_frame': 1, 'empty_sentence': 1}


def test_only_bad_data_raises_data_error(tmp_path):
  config = small_config()
  config.data.weights = {'a': 1.0}
  planner = plan_lib.Planner(config, {'a': [write_sequence(str(tmp_path), 'e', sentence='\t ')]})
  with pytest.raises(plan_lib.DataError, match=r'example 3: 64 attempts in a row .*empty_sentence'):
    planner.plan(3)
  failures = []
  batch = planner._plan_step_np(0, failures)  # the error is kept for the stream, the plans empty
  assert [step for step, _ in failures] == [0] and isinstance(failures[0][1], plan_lib.DataError)
  assert batch.t_path.tolist() == [b''] * 4 and batch.t_bytes.tolist() == [b''] * 4


def test_long_sentences_are_named(tmp_path):
  config = small_config()
  config.data.weights = {'a': 1.0}
  seqs = [write_sequence(str(tmp_path), 'long', sentence=' '.join(['word'] * 60)),
          write_sequence(str(tmp_path), 'short', seed=1)]
  planner = plan_lib.Planner(config, {'a': seqs})
  assert planner.truncated_sentences() == {'fixture/long': 62}  # 60 words + [CLS] + [SEP]


def test_hosts_split_the_global_batch(sequences):
  hosts = [plan_lib.Planner(small_config(), sequences, host_id=h, num_hosts=2) for h in (0, 1)]
  assert np.concatenate([h.host_indices(3) for h in hosts]).tolist() == list(range(12, 16))
  with pytest.raises(ValueError, match='not divisible'):
    plan_lib.Planner(small_config(batch=3), sequences, num_hosts=2)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG', 'BMP'])
def test_image_size_from_header(fmt, tmp_path):
  for size, mode in (((37, 21), 'RGB'), ((5, 300), 'L')):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    assert images.image_size(buffer.getvalue()) == size
    path = tmp_path / f'{size[0]}.img'
    path.write_bytes(buffer.getvalue())
    assert images.file_image_size(str(path)) == size
  for bad in (b'', b'\xff\xd8\xff', b'\xff\xd8\xff\xda\x00\x02', b'not an image'):
    with pytest.raises(ValueError):
      images.image_size(bad)
  with pytest.raises(OSError):
    images.file_image_size(str(tmp_path / 'missing.jpg'))

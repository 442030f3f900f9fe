"""The pair stream: determinism in (seed, g), restarts, host slices, bad data, window decoding."""

import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import crops
from input_pipeline import sequence as sequence_lib
from input_pipeline import stream as stream_lib
from tests.test_plan import small_config  # noqa: F401  (test_tfds, test_check use it from here)
from tests.test_plan import write_fixture
from tests.test_plan import write_sequence

@pytest.fixture(scope='module')
def fixture_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('stream'))
  return root, write_fixture(root)


@pytest.fixture(scope='module')
def stream(fixture_data):
  return stream_lib.PairStream(small_config(), fixture_data[1])


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_contents(stream):
  batch = stream.batch(0)
  assert batch['template'].shape == (4, 32, 32, 3) and batch['template'].dtype == np.uint8
  assert batch['search'].shape == (4, 48, 48, 3) and batch['search'].dtype == np.uint8
  assert batch['search_box'].dtype == np.float32 and batch['search_box'].shape == (4, 4)
  assert batch['text_ids'].shape == (4, stream.text_len) == (4, stream.config.model.text.max_len)
  assert batch['text_mask'].dtype == np.int32
  for j, g in enumerate(stream.host_indices(0)):
    plan = stream.plan(int(g))[0]
    seq = plan['sequence']
    assert batch['sequence_key'][j] == seq.sequence_key
    assert batch['text_key'][j] == sequence_lib.text_key(batch['text_ids'][j])
    assert abs(plan['frames'][0] - plan['frames'][1]) <= 4
    np.testing.assert_allclose(batch['search_box'][j],
                               crops.box_to_crop(seq.boxes[plan['frames'][1]], plan['windows'][1]), rtol=1e-6)


def test_same_seed_same_stream_other_seed_differs(fixture_data, stream):
  again = stream_lib.PairStream(small_config(), fixture_data[1])
  assert_batches_equal(stream.batch(3), again.batch(3))
  config = small_config()
  config.seed = 1
  other = stream_lib.PairStream(config, fixture_data[1])
  assert not np.array_equal(stream.batch(3)['search'], other.batch(3)['search'])


def test_restart_at_step_k(stream):
  from_zero = stream.iterate(0)
  batches = [next(from_zero) for _ in range(3)]
  restarted = stream.iterate(1)
  assert_batches_equal(next(restarted), batches[1])
  assert_batches_equal(next(restarted), batches[2])
  assert_batches_equal(stream.batch(2), batches[2])


def test_two_hosts_concatenate_to_one(fixture_data, stream):
  hosts = [stream_lib.PairStream(small_config(), fixture_data[1], host_id=h, num_hosts=2) for h in (0, 1)]
  slices = [h.batch(5) for h in hosts]
  whole = stream.batch(5)
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([s[k] for s in slices]), whole[k], err_msg=k)


def test_target_centred_without_jitter(fixture_data):
  config = small_config(center_jitter=0.0, scale_jitter=0.0, brightness=0.0, grayscale_prob=0.0)
  batch = stream_lib.PairStream(config, fixture_data[1]).batch(0)
  np.testing.assert_allclose(batch['search_box'][:, :2], 0.5, atol=1e-6)
  red = (batch['search'][..., 0].astype(int) - batch['search'][..., 1]) > 120
  ys, xs = np.nonzero(red[0])
  assert abs(xs.mean() + 0.5 - 24) < 1.0 and abs(ys.mean() + 0.5 - 24) < 1.0


@pytest.mark.parametrize('fmt,subsampling', [('JPEG', 2), ('JPEG', 0), ('PNG', None)])
def test_window_decode_equals_full_decode(fmt, subsampling):
  """Cropping the decoded window (+ margin; chroma upsampling differs at its border) = cropping the frame."""
  rng = np.random.default_rng(3)
  frame = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((6, 6, 1))).astype(np.uint8)
  frame = np.clip(frame + rng.integers(0, 30, frame.shape), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, fmt, **({'quality': 85, 'subsampling': subsampling} if subsampling is not None else {}))
  data = buffer.getvalue()
  full = tf.io.decode_image(data, channels=3)
  for window in [(33.3, 27.9, 21.0), (47.0, 35.0, 50.0), (5.5, 60.2, 30.0), (90.0, 10.0, 13.0)]:
    window = np.array(window)
    region = stream_lib.window_region(window, 72, 96)
    image = stream_lib.decode_region(tf.constant(data), tf.constant(region))
    fill = stream_lib.region_mean(image)
    box = crops.resize_box(window - [region[2], region[0], 0], image.shape[0], image.shape[1], 24)
    a = crops.crop_tf_float(image, None, 24, fill, box=box).numpy()
    b = crops.crop_tf_float(full, window.astype(np.float32), 24, fill).numpy()
    np.testing.assert_allclose(a, b, atol=0.01)


def _truncate(path):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])  # header intact: fails only while decoding (in tf.data)


def _garbage(path):
  with open(path, 'wb') as f:
    f.write(b'not an image at all')  # fails in the planner's header check


def test_corrupt_frames_do_not_shift_later_samples(tmp_path, fixture_data):
  clean_root, clean = fixture_data
  root = str(tmp_path / 'bad')
  shutil.copytree(clean_root, root)
  bad = {k: [s.__class__(**{**s.__dict__, 'frames': [f.replace(clean_root, root) for f in s.frames]})
             for s in v] for k, v in clean.items()}
  corrupted = {bad['a'][1].frames[3]: _truncate, bad['b'][1].frames[5]: _garbage}
  for path, corrupt in corrupted.items():
    corrupt(path)
  reference = stream_lib.PairStream(small_config(), clean)
  damaged = stream_lib.PairStream(small_config(), bad)

  def touches_bad(g, attempt):
    plan = reference.plan(g, attempt)[0]
    return any(plan['sequence'].frames[i].replace(clean_root, root) in corrupted for i in plan['frames'])

  steps = range(8)
  expected, hit = 0, set()
  for g in range(8 * 4):
    attempt = 0
    while touches_bad(g, attempt):
      attempt, expected = attempt + 1, expected + 1
      hit.add(g)
  assert hit, 'the fixture should make some examples read a corrupt frame'
  got = list(zip(steps, damaged.iterate(0)))
  for step, batch in got:
    ref = reference.batch(step)
    for j, g in enumerate(reference.host_indices(step)):
      same = np.array_equal(batch['search'][j], ref['search'][j])
      assert same == (g not in hit), g
  counts = damaged.replacements()
  assert counts.get('corrupt_frame', 0) == expected
  assert set(counts) <= {'corrupt_frame'}


def test_bad_annotations_and_sentences_are_replaced_and_counted(tmp_path):
  root = str(tmp_path)
  seqs = [write_sequence(root, 'ok', seed=0)]
  boxes = seqs[0].boxes.copy()
  boxes[2] = np.nan
  boxes[4, 2] = 0.0
  boxes[6] = (500.0, 500.0, 5.0, 5.0)  # outside the 96 x 72 frame
  seqs[0] = sequence_lib.Sequence(name='ok', dataset='fixture', frames=seqs[0].frames, boxes=boxes,
                                  visible=seqs[0].visible, sentence=seqs[0].sentence)
  bad_text = [write_sequence(root, name, seed=1, sentence=s) for name, s in
              (('empty', ' '), ('blank', '\t \u3000'))]
  config = small_config(batch=8)
  config.data.weights = {'a': 1.0}
  s = stream_lib.PairStream(config, {'a': seqs + bad_text})
  batches = [s.batch(step) for step in range(4)]
  assert all(np.all(b['sequence_key'] == seqs[0].sequence_key) for b in batches)
  counts = s.replacements()
  assert 'empty_sentence' in counts
  assert counts.get('bad_box', 0) + counts.get('box_outside_image', 0) > 0
  assert set(counts) <= set(stream_lib.REASONS)


def test_non_ascii_and_long_sentences_are_data_truncated_and_counted(tmp_path):
  """Free text trains as it is: accents through BERT's uncased normaliser, quotes and dashes as
  punctuation tokens, a sentence over text.max_len tokens truncated (and named); none is replaced."""
  root = str(tmp_path)
  long = ' '.join(['word'] * 60)
  seqs = [write_sequence(root, 'accent', seed=0, sentence='rouge carré — “red square”'),
          write_sequence(root, 'long', seed=1, sentence=long)]
  config = small_config(batch=8)
  config.data.weights = {'a': 1.0}
  s = stream_lib.PairStream(config, {'a': seqs})
  batch = next(s.iterate(0))
  assert s.replacements() == {}
  assert set(batch['sequence_key']) == {q.sequence_key for q in seqs}  # both sequences train
  from input_pipeline import tokenize
  tok = tokenize.tokenizer_for(config.model)
  by_key = {int(k): (ids, mask) for k, ids, mask in
            zip(batch['sequence_key'], batch['text_ids'], batch['text_mask'])}
  ids, mask = by_key[seqs[0].sequence_key]
  np.testing.assert_array_equal(ids, tok.encode('rouge carre — “red square”')[0])  # accent stripped
  assert tok.unk_id not in ids[mask == 1] and mask.sum() == 10  # [CLS] 5 words 3 marks [SEP]
  ids, mask = by_key[seqs[1].sequence_key]
  L = config.model.text.max_len
  assert mask.sum() == L and ids[L - 1] == tok.encode('')[0][1]  # truncated, ends with [SEP]
  assert s.truncated_sentences() == {'fixture/long': 62}  # 60 words + [CLS] + [SEP]


def test_bad_data_everywhere_raises_instead_of_hanging(tmp_path):
  """When every sample is rejected the planner's DataError reaches the caller of iterate (tf.data's
  ignore_errors would drop it and walk the step range forever); so does any other planner error."""
  import time
  seqs = [write_sequence(str(tmp_path), f'e{i}', seed=i, sentence=' ') for i in range(2)]
  config = small_config()
  config.data.weights = {'a': 1.0}
  s = stream_lib.PairStream(config, {'a': seqs})
  tic = time.perf_counter()
  with pytest.raises(stream_lib.DataError, match=r'example 0: 64 attempts in a row .*empty_sentence'):
    next(s.iterate(0))
  assert time.perf_counter() - tic < 60
  fine = stream_lib.PairStream(config, {'a': [write_sequence(str(tmp_path), 'ok', seed=3)]})
  batches = fine.iterate(0)
  next(batches)

  def broken(g, first_attempt):
    raise KeyError('a bug in the planner')

  fine._plan_np = broken  # batches already planned ahead arrive, then the error
  with pytest.raises(KeyError, match='a bug in the planner'):
    for _ in zip(range(10), fine.iterate(0)):
      pass


def test_stop_interrupts_a_stalled_input(tmp_path):
  """iterate(stop=...) waits for tf.data in Python: a stop() that turns true (SIGTERM in training)
  ends a wait that tf.data would never end by itself."""
  import threading
  import time
  config = small_config()
  config.data.weights = {'a': 1.0}
  s = stream_lib.PairStream(config, {'a': [write_sequence(str(tmp_path), 'ok', seed=3)]})
  release = threading.Event()
  s._plan_step_np = lambda step, failures: release.wait(120)  # a read that never returns
  asked = time.perf_counter() + 1.0
  try:
    with pytest.raises(stream_lib.Interrupted):
      next(s.iterate(0, stop=lambda: time.perf_counter() > asked))
    assert time.perf_counter() - asked < 5
  finally:
    release.set()


def test_closing_the_batches_ends_the_reading_thread(stream):
  import threading
  import time
  readers = lambda: sum(t.name == 'pair-stream' for t in threading.enumerate())
  before = readers()
  batches = stream.iterate(0)
  next(batches)
  assert readers() == before + 1
  batches.close()
  end = time.monotonic() + 30
  while readers() > before and time.monotonic() < end:
    time.sleep(0.1)
  assert readers() == before


def test_to_global_single_device(stream):
  import jax
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  batch = stream.batch(0)
  arrays = stream_lib.to_global(batch, mesh, jax.sharding.PartitionSpec('data'))
  for k in batch:
    np.testing.assert_array_equal(np.asarray(arrays[k]), batch[k])


def test_to_global_on_eight_fake_devices():
  """One process, mesh ('data', 'fsdp') = (4, 2): every device holds its contiguous rows."""
  import subprocess
  import sys
  import textwrap
  code = textwrap.dedent('''
      import jax, numpy as np
      from jax.sharding import Mesh, PartitionSpec as P
      from input_pipeline import stream
      mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'fsdp'))
      batch = {'search': np.arange(8 * 2 * 3, dtype=np.uint8).reshape(8, 2, 3),
               'text_key': np.arange(8, dtype=np.int32)}
      out = stream.to_global(batch, mesh, P(('data', 'fsdp')))
      for k, v in out.items():
        assert v.shape == batch[k].shape and v.sharding.spec == P(('data', 'fsdp')), k
        np.testing.assert_array_equal(np.asarray(v), batch[k])
        for shard in v.addressable_shards:
          np.testing.assert_array_equal(shard.data, batch[k][shard.index])
          assert shard.data.shape[0] == 1
      print('ok')
  ''')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-c', code], env=env, cwd=root, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-2000:]

"""Tracker: hand-checked post-processing, then the real tiny model (jit, batching, trajectories).

The model tests use configs/cost_tiny.py narrowed further (one BERT layer of width 32, one VL layer)
with random weights, on small PNG sequences written here; the helpers serve test_export and
test_visualize too.
"""

import os

import flax
import jax
import numpy as np
from PIL import Image
import pytest

from configs import cost_tiny
from cost_jax import pretrained
from cost_jax import track
from cost_jax import tracker
from cost_jax.evaluation import results_io
from cost_jax.models import cost
from input_pipeline import crops
from input_pipeline import sequence as sequence_lib
from input_pipeline import tokenize


# ---------------------------------------------------------------- post-processing, by hand

def test_hann_window_is_outer_hanning_row_major():
  np.testing.assert_array_equal(tracker.hann_window(3), [0, 0, 0, 0, 1, 0, 0, 0, 0])
  w = tracker.hann_window(20).reshape(20, 20)
  np.testing.assert_allclose(w[4, 7], np.hanning(20)[4] * np.hanning(20)[7], rtol=1e-6)
  assert w.dtype == np.float32


def test_select_box_window_overrides_a_stronger_edge_logit():
  hann = tracker.hann_window(3)
  boxes = np.arange(36, dtype=np.float32).reshape(9, 4) / 36
  logits = np.zeros(9, np.float32)
  logits[0] = 2.0  # sigmoid 0.8808 at the corner
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.49)
  np.testing.assert_allclose(score, 0.51 * 0.5 + 0.49, rtol=1e-6)  # centre: 0.745 > 0.51 * 0.8808
  np.testing.assert_array_equal(box, boxes[4])
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.0)
  np.testing.assert_allclose(score, 1 / (1 + np.exp(-2.0)), rtol=1e-6)
  np.testing.assert_array_equal(box, boxes[0])


def test_softmax_map_keeps_the_logit_gap_that_saturated_sigmoids_lose():
  """A look-alike at the window's centre (logit 6) and the target half a window off it (logit 9):
  both sigmoids are within 3e-3 of 1, so the sigmoid map leaves the choice to the window (the
  look-alike); the softmax map weighs the look-alike e^-3 of the target and keeps the target. Both
  return the chosen token's sigmoid-windowed score."""
  hann = tracker.hann_window(5)  # hanning(5) = 0, .5, 1, .5, 0: centre 12 -> 1, token 7 -> .5
  boxes = np.arange(100, dtype=np.float32).reshape(25, 4) / 100
  logits = np.full(25, -5.0, np.float32)
  logits[12], logits[7] = 6.0, 9.0
  sig = lambda x: 1 / (1 + np.exp(-x))
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.49, 'sigmoid')
  np.testing.assert_array_equal(box, boxes[12])
  np.testing.assert_allclose(score, 0.51 * sig(6.0) + 0.49, rtol=1e-6)
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.49, 'softmax')
  np.testing.assert_array_equal(box, boxes[7])
  np.testing.assert_allclose(score, 0.51 * sig(9.0) + 0.49 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(tracker.token_scores(logits, hann, 0.49, 'softmax'))[[7, 12]],
                             [0.51 + 0.245, 0.51 * np.exp(-3.0) + 0.49], rtol=1e-6)
  with pytest.raises(ValueError, match='score_map'):
    tracker.token_scores(logits, hann, 0.49, 'argmax')


def test_select_box_obj_head_takes_its_one_box():
  boxes = np.array([[0.5, 0.4, 0.1, 0.2]], np.float32)
  box, _ = tracker.select_box({'boxes': boxes}, tracker.hann_window(20), 0.49)
  np.testing.assert_array_equal(box, boxes[0])


@pytest.mark.parametrize('predicted, expected', [
    ((95, 45, 20, 10), (90, 45, 20, 10)),  # centre (105, 50) clipped to the image (100, 50)
    ((10, 10, 0.2, 0.5), (9.6, 9.75, 1, 1)),  # w, h floored at min_size_px = 1, centre kept
    ((0, 0, 300, 10), (50, 0, 100, 10)),  # w capped at the image width, centre (150, 5) -> 100
    ((-30, -8, 20, 10), (-10, -5, 20, 10)),  # centre (-20, -3) -> (0, 0): negative x, y are legal
])
def test_update_box_clips_centre_and_size(predicted, expected):
  box = tracker.update_box((40, 20, 10, 10), predicted, (100, 50), 1.0, 1.0)
  np.testing.assert_allclose(box, expected, atol=1e-5)


def test_update_box_size_rate():
  box = tracker.update_box((0, 0, 10, 20), (40, 30, 20, 40), (100, 100), 0.5, 1.0)
  np.testing.assert_allclose(box, (42.5, 35, 15, 30), atol=1e-5)  # centre (50, 50), size halfway


def test_padding_shapes():
  assert tracker.padded_shape([(100, 30), (64, 130)], 64) == (128, 192)
  frame = np.full((2, 3, 3), 7, np.uint8)
  padded = tracker.pad_frame(frame, (4, 5))
  assert padded.shape == (4, 5, 3) and padded[:2, :3].min() == 7 and padded.sum() == 7 * 18
  np.testing.assert_array_equal(tracker.image_wh(padded), (5, 4))


def test_crop_valid_ignores_zero_padding():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  window = np.array([50.0, 10.0, 40.0], np.float32)  # leaves the frame on the right and the top
  wh = tracker.image_wh(frame)
  small = np.asarray(tracker.crop_valid(frame, wh, window, 24))
  padded = np.asarray(tracker.crop_valid(tracker.pad_frame(frame, (64, 128)), wh, window, 24))
  assert relative(padded, small) <= 1e-6
  reference = np.asarray(crops.crop_jax_float(frame, window, 24))  # the shared crop, float32 mean
  assert relative(small, reference) <= 1e-6


# ---------------------------------------------------------------- the real (tiny, random) model

def tiny_config():
  """cost_tiny narrowed for tests: random 1-layer text encoder of width 32 (real MiniLM vocabulary)."""
  config = cost_tiny.get_config()
  m = config.model
  m.text.pretrained_dir = ''
  m.text.vocab_path = os.path.join(pretrained.minilm_dir(), 'vocab.txt')
  m.text.hidden, m.text.num_layers, m.text.num_heads, m.text.intermediate = 32, 1, 2, 64
  m.text.max_len = 16
  m.hidden_dim, m.coa.dim, m.head.cls_hidden = 32, 32, 32
  m.backbone.blocks = (1, 1, 1)
  m.visual.mlp_dim = m.vl.mlp_dim = 64
  m.vl.num_layers = 1
  config.track.pad_multiple = 64
  return config


def random_variables(model, seed=0):
  """Random weights of the model's shapes, without compiling its init (seconds on a busy CPU).

  Kernels N(0, 1/fan_in), norms' scales 1, BatchNorm statistics (0, 1), other leaves N(0, 0.02^2);
  the box regressor's bias puts w, h near a quarter of the search crop, so a tracked box keeps its size
  instead of growing to the frame.
  """
  shapes = jax.eval_shape(cost.init_fn(model), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in flax.traverse_util.flatten_dict(shapes, sep='/').items():
    name = path.split('/')[-1]
    if name in ('var', 'scale'):
      value = np.ones(leaf.shape)
    elif name == 'mean':
      value = np.zeros(leaf.shape)
    elif 'kernel' in name:
      value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name == 'logit_scale':
      value = np.full(leaf.shape, np.log(1 / 0.07))
    else:
      value = 0.02 * rng.normal(size=leaf.shape)
    flat[path] = value.astype(leaf.dtype)
  bias = 'params/head/regressor/box/bias'
  if bias in flat:
    flat[bias] = np.array([0.0, 0.0, -1.1, -1.1], np.float32)
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def write_sequences(root, specs, seed=0):
  """Small PNG videos: [(name, (H, W), frames, sentence)] -> Sequence records with ground truth.

  Each frame: smooth random background, shifted a pixel a frame, and a 10x8 px square moving right.
  """
  rng = np.random.default_rng(seed)
  sequences = []
  for name, (h, w), length, sentence in specs:
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    background = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(background).resize((w + length * 4, h)))
    boxes, frames = [], []
    for i in range(length):
      frame = background[:, i:i + w].copy()
      x, y = 10 + 3 * i, h // 2 - 4
      frame[y:y + 8, x:x + 10] = (250, 30, 30)
      path = os.path.join(folder, f'{i + 1:08d}.png')
      Image.fromarray(frame).save(path)
      frames.append(path)
      boxes.append((x, y, 10, 8))
    sequences.append(sequence_lib.Sequence(name, 'synthetic', frames, np.array(boxes, np.float64),
                                           np.ones(length, bool), sentence))
  return sequences


SPECS = [('a', (90, 120), 7, 'red square moving right'), ('b', (70, 100), 4, 'a red box'),
         ('c', (100, 80), 6, '')]  # three frame sizes, all padded to 128 x 128


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """Config, model, variables, tokenizer, a Tracker, a 2-slot BatchedEvaluator, sequences."""
  config = tiny_config()
  model = cost.COST(config.model)
  variables = random_variables(model)
  tokenizer = tokenize.tokenizer_for(config.model)
  return {
      'config': config, 'model': model, 'variables': variables, 'tokenizer': tokenizer,
      'tracker': tracker.Tracker(config, variables, tokenizer, model=model),
      'evaluator': tracker.BatchedEvaluator(config, variables, tokenizer, num_slots=2, model=model),
      'sequences': write_sequences(str(tmp_path_factory.mktemp('frames')), SPECS),
  }


def relative(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def one_by_one(setup, sequence):
  """[N, 4] boxes of the single-sequence Tracker from the frame files (frame 0 = ground truth)."""
  boxes, bad = setup['tracker'].track_files(sequence.frames, sequence.boxes[0], sequence.sentence)
  assert bad == []
  return boxes


def test_jitted_step_equals_step_run_op_by_op(setup):
  """The one fused jitted step vs the tracker's code run eagerly (network jitted on its own)."""
  t, seq = setup['tracker'], setup['sequences'][0]
  frames = [tracker.load_frame(p) for p in seq.frames[:2]]
  t.initialize(frames[0], seq.boxes[0], seq.sentence)
  state, frame = t.state, t._pad(frames[1])
  _, box, score = t._step(setup['variables'], state, frame, tracker.image_wh(frames[1]))
  eager = tracker.SlotFunctions(setup['config'], setup['model'])
  eager.apply = jax.jit(setup['model'].apply, static_argnames='method')
  _, box_eager, score_eager = eager.step_slot(setup['variables'], state, frame,
                                              tracker.image_wh(frames[1]))
  assert relative(box, box_eager) <= 1e-5 and relative(score, score_eager) <= 1e-5
  assert np.abs(np.asarray(box) - seq.boxes[0]).max() > 1e-3  # it did move: not a trivial equality


def test_batched_step_equals_one_by_one(setup):
  t, ev, variables = setup['tracker'], setup['evaluator'], setup['variables']
  seqs = setup['sequences'][:2]
  frames = [tracker.load_frame(s.frames[1]) for s in seqs]
  states, singles = [], []
  for s, f in zip(seqs, frames):
    t.initialize(tracker.load_frame(s.frames[0]), s.boxes[0], s.sentence)
    states.append(t.state)
    singles.append(np.asarray(t._step(variables, t.state, t._pad(f), tracker.image_wh(f))[1]))
  stacked = jax.tree.map(lambda *a: np.stack(a), *states)
  shape = tracker.padded_shape([f.shape for f in frames], 64)
  batch = np.stack([tracker.pad_frame(f, shape) for f in frames])
  _, boxes, _ = ev._step(variables, stacked, batch, np.stack([tracker.image_wh(f) for f in frames]))
  for i in range(2):
    assert relative(boxes[i], singles[i]) <= 1e-5


def test_batched_trajectories_with_slot_refilling_match_one_by_one(setup):
  """3 sequences in 2 slots (the third refills the first free slot) vs tracking each alone.

  Each frame of the batched path is compared with one step of the single-sequence Tracker started
  from the batched path's previous box (the reference path's boxes re-fed), so both see identical
  inputs at every frame: single steps agree to <= 1e-5 relative (docs/design.md §4). Comparing two
  free-running closed loops instead would measure XLA's rounding, not the bookkeeping: a 1e-5 px
  difference is fed back through the next crop and grows (seen: 1.4e-3 px after 5 frames on one CPU,
  1e-4 on another), and a 17-frame fraction cannot absorb one such frame.
  """
  results = list(setup['evaluator'].run(setup['sequences']))
  assert [r.sequence.name for r in results] == ['b', 'a', 'c']  # b ends first, c takes its slot
  t = setup['tracker']
  for r in results:
    assert r.boxes.shape == (len(r.sequence), 4) and r.times.shape == (len(r.sequence),)
    np.testing.assert_array_equal(r.boxes[0], r.sequence.boxes[0])
    frames = [tracker.load_frame(p) for p in r.sequence.frames]
    t.initialize(frames[0], r.sequence.boxes[0], r.sequence.sentence)
    for i in range(1, len(frames)):
      t.state = dict(t.state, box=np.asarray(r.boxes[i - 1], np.float32))
      single = t.track(frames[i])['target_bbox']
      assert relative(r.boxes[i], single) <= 1e-5, (r.sequence.name, i, r.boxes[i], single)
    assert np.abs(r.boxes[-1] - r.boxes[0]).max() > 1.0  # the path moved: the check is not trivial


def test_track_resume_skips_finished_sequences_and_gives_identical_files(setup, tmp_path):
  """Resuming re-tracks only unfinished sequences, leaves finished files untouched, and writes the
  same files a straight run wrote. One slot, so a sequence runs through the same compiled program on
  the same inputs in both runs (with two slots the rerun pairs it with another sequence in another
  slot, and a closed loop of 1e-5 px rounding differences can change a third decimal)."""
  evaluator = tracker.BatchedEvaluator(setup['config'], setup['variables'], setup['tokenizer'],
                                       num_slots=1, model=setup['model'])
  seqs = setup['sequences']
  out = str(tmp_path / 'cost' / 'synthetic')
  assert track.track_dataset(evaluator, seqs, out, progress=False).tracked == ['a', 'b', 'c']
  paths = {s.name: results_io.result_file(out, s.name) for s in seqs}
  first = {name: open(p).read() for name, p in paths.items()}
  assert len(first['a'].splitlines()) == 7
  mtime = os.stat(paths['a']).st_mtime_ns
  os.remove(paths['b'])  # never finished
  with open(paths['c'], 'w') as f:
    f.write(first['c'].splitlines()[0] + '\n')  # interrupted half-way
  assert track.track_dataset(evaluator, seqs, out, progress=False).tracked == ['b', 'c']
  assert os.stat(paths['a']).st_mtime_ns == mtime
  assert {name: open(p).read() for name, p in paths.items()} == first
  assert track.track_dataset(evaluator, seqs, out, progress=False).tracked == []


# ---------------------------------------------------------------- bad input while tracking

def damaged_copy(root, sequence, name, bad=(), missing=(), first_box=None):
  """A copy of `sequence` named `name`: frames `bad` (0-based) hold random bytes, frames `missing`
  do not exist, and first_box (when given) replaces the first ground-truth box."""
  folder = os.path.join(root, name)
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(len(name))
  frames = []
  for i, path in enumerate(sequence.frames):
    copy = os.path.join(folder, os.path.basename(path))
    if i in bad:
      with open(copy, 'wb') as f:
        f.write(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif i not in missing:
      with open(path, 'rb') as src, open(copy, 'wb') as dst:
        dst.write(src.read())
    frames.append(copy)
  boxes = sequence.boxes.copy()
  if first_box is not None:
    boxes[0] = first_box
  return sequence_lib.Sequence(name, sequence.dataset, frames, boxes, sequence.visible,
                               sequence.sentence)


def step_from(setup, sequence, box, frame):
  """One step of the single-sequence Tracker on `frame` from `box` (template: the first frame)."""
  t = setup['tracker']
  t.initialize(tracker.load_frame(sequence.frames[0]), sequence.boxes[0], sequence.sentence)
  t.state = dict(t.state, box=np.asarray(box, np.float32))
  return t.track(frame)['target_bbox']


def test_unreadable_frames_keep_the_previous_box_and_every_sequence_finishes(setup, tmp_path):
  """A garbage PNG in one sequence and a missing file in another, sharing the 2 slots with a clean
  one: all three finish; each bad frame keeps the previous box, is recorded, and the next frame is
  tracked from that box (the slot's state got it back, not the box of a step on a blank frame)."""
  a, b, c = setup['sequences']
  root = str(tmp_path)
  a_bad = damaged_copy(root, a, 'a_bad', bad=[3])
  b_bad = damaged_copy(root, b, 'b_bad', missing=[2])
  results = {r.sequence.name: r for r in setup['evaluator'].run([a_bad, b_bad, c])}
  assert sorted(results) == ['a_bad', 'b_bad', 'c'] and not any(r.failure for r in results.values())
  assert results['c'].bad_frames == () and results['c'].boxes.shape == (len(c), 4)
  for seq, k, error in ((a_bad, 3, 'UnidentifiedImageError'), (b_bad, 2, 'FileNotFoundError')):
    r = results[seq.name]
    (bad,) = r.bad_frames
    assert (bad.frame, bad.path) == (k + 1, seq.frames[k]) and f'unreadable frame ({error}' in bad.reason
    assert r.boxes.shape == (len(seq), 4)
    np.testing.assert_array_equal(r.boxes[k], r.boxes[k - 1])
    if k + 1 < len(seq):
      after = step_from(setup, seq, r.boxes[k], tracker.load_frame(seq.frames[k + 1]))
      assert relative(r.boxes[k + 1], after) <= 1e-5
  # a step on a blank frame would have moved the box: the check above can tell the two apart
  blank = np.zeros((90, 120, 3), np.uint8)
  assert relative(step_from(setup, a_bad, results['a_bad'].boxes[3], blank),
                  results['a_bad'].boxes[3]) > 1e-3


def test_a_step_where_no_slot_has_a_frame_runs_nothing_and_keeps_the_boxes(setup, tmp_path):
  c = setup['sequences'][2]
  c_bad = damaged_copy(str(tmp_path), c, 'c_bad', bad=[1, 2])
  (r,) = setup['evaluator'].run([c_bad])
  assert [b.frame for b in r.bad_frames] == [2, 3]
  np.testing.assert_array_equal(r.boxes[1], r.boxes[0])
  np.testing.assert_array_equal(r.boxes[2], r.boxes[0])
  assert relative(r.boxes[3], step_from(setup, c_bad, r.boxes[0],
                                        tracker.load_frame(c_bad.frames[3]))) <= 1e-5


def test_sequences_that_cannot_start_fail_by_name_and_the_others_go_on(setup, tmp_path):
  """Unreadable first frame, NaN / negative-size / outside-the-frame first box: each sequence fails
  with its reason in the result and in tracking_report.json, gets no result file; b is tracked."""
  from cost_jax.evaluation import results_io
  b = setup['sequences'][1]  # 100 x 70 px frames
  root = str(tmp_path)
  bad = [damaged_copy(root, b, 'first_frame', bad=[0]),
         damaged_copy(root, b, 'nan_box', first_box=[np.nan] * 4),
         damaged_copy(root, b, 'negative', first_box=[65, 48, -13, 13]),
         damaged_copy(root, b, 'outside', first_box=[500, 10, 10, 8])]
  out = os.path.join(root, 'results')
  done = track.track_dataset(setup['evaluator'], bad[:2] + [b] + bad[2:], out, progress=False)
  assert done.tracked == ['b'] and done.kept == []
  assert sorted(done.failed) == ['first_frame', 'nan_box', 'negative', 'outside']
  assert done.failed['first_frame'].startswith(f'first frame {bad[0].frames[0]}: unreadable frame')
  assert done.failed['nan_box'] == 'invalid first box: box [nan, nan, nan, nan] is not finite'
  assert 'has zero or negative size' in done.failed['negative']
  assert 'lies entirely outside the 100 x 70 frame' in done.failed['outside']
  assert sorted(os.listdir(out)) == ['b.txt', 'b_time.txt', results_io.TRACKING_REPORT]
  assert results_io.read_tracking_report(out) == {'failed': done.failed, 'bad_frames': {}}


def test_rerun_keeps_finished_results_says_so_and_overwrite_tracks_again(setup, tmp_path):
  from cost_jax.evaluation import results_io
  a, _, c = setup['sequences']
  a_bad = damaged_copy(str(tmp_path), a, 'a_bad', bad=[3])
  out = str(tmp_path / 'results')
  printed = []
  first = track.track_dataset(setup['evaluator'], [a_bad, c], out, progress=False,
                              echo=printed.append)
  assert sorted(first.tracked) == ['a_bad', 'c'] and printed == []
  report = results_io.read_tracking_report(out)
  assert report == {'failed': {}, 'bad_frames': {'a_bad': [
      {'frame': 4, 'file': a_bad.frames[3], 'reason': first.bad_frames['a_bad'][0].reason}]}}
  stale = os.path.join(out, 'nan_box.txt')  # an old run's all-NaN file of a sequence that now fails
  nan_box = damaged_copy(str(tmp_path), c, 'nan_box', first_box=[np.nan] * 4)
  results_io.write_results(stale, np.full((len(c), 4), np.nan))
  results_io.write_times(stale, np.zeros(len(c)))
  for name in ('a_bad', 'c'):
    os.utime(os.path.join(out, name + '.txt'), ns=(1, 1))

  again = track.track_dataset(setup['evaluator'], [a_bad, c, nan_box], out, progress=False,
                              echo=printed.append)
  assert again.tracked == [] and again.kept == ['a_bad', 'c', 'nan_box']
  assert printed == [f'{out} already holds complete results of 3 of 3 sequences: kept, not tracked '
                     'again (--overwrite tracks them again)']
  assert results_io.read_tracking_report(out) == report  # the kept sequences' records stay
  assert os.stat(os.path.join(out, 'a_bad.txt')).st_mtime_ns == 1

  redone = track.track_dataset(setup['evaluator'], [a_bad, c, nan_box], out, progress=False,
                               overwrite=True, echo=printed.append)
  assert sorted(redone.tracked) == ['a_bad', 'c'] and list(redone.failed) == ['nan_box']
  assert len(printed) == 1 and os.stat(os.path.join(out, 'a_bad.txt')).st_mtime_ns > 1
  assert not os.path.exists(stale) and not os.path.exists(results_io.time_path(stale))
  assert results_io.read_tracking_report(out) == dict(report, failed=redone.failed)


def write_tnl2k(root, specs, first_boxes=None):
  """A TNL2K-layout tree of write_sequences videos: [(name, (H, W), frames)] -> <root>/<name>/imgs/*.png,
  groundtruth.txt, language.txt; first_boxes {name: first line of groundtruth.txt} overrides."""
  for name, size, length in specs:
    folder = os.path.join(root, name)
    seq, = write_sequences(folder, [('imgs', size, length, 'a red square')])
    lines = [','.join(str(int(v)) for v in box) for box in seq.boxes]
    lines[0] = (first_boxes or {}).get(name, lines[0])
    with open(os.path.join(folder, 'groundtruth.txt'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    with open(os.path.join(folder, 'language.txt'), 'w') as f:
      f.write('a red square\n')


def test_tnl2k_tree_with_its_damaged_test_frame_tracks_to_completion(setup, tmp_path):
  """The TNL2K reader keeps the release's damaged frame in place; tracking records it and finishes."""
  from cost_jax.evaluation import results_io
  from input_pipeline import readers
  from input_pipeline.readers import tnl2k
  root = str(tmp_path / 'TNL2K')
  damaged_name = tnl2k.KNOWN_DAMAGED[0].split('/imgs/')[0]
  write_tnl2k(os.path.join(root, 'test'), [(damaged_name, (90, 120), 6), ('test_016_other', (70, 100), 4)])
  damaged = os.path.join(root, 'test', damaged_name, 'imgs', '00000003.png')
  with open(damaged, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + bytes(range(256)))  # a PNG signature, then garbage
  sequences = readers.load_dataset('tnl2k', root, split='test')
  out = str(tmp_path / 'results')
  done = track.track_dataset(setup['evaluator'], sequences, out, progress=False)
  assert sorted(done.tracked) == [damaged_name, 'test_016_other'] and done.failed == {}
  assert [(b.frame, b.path) for b in done.bad_frames[damaged_name]] == [(3, damaged)]
  for s in sequences:
    assert len(results_io.read_rows(results_io.result_file(out, s.name))) == len(s)
  assert list(results_io.read_tracking_report(out)['bad_frames']) == [damaged_name]


@pytest.mark.heavy
def test_jitted_step_equals_fully_op_by_op_step(setup):
  """As above with nothing jitted at all (minutes on a busy 2-core CPU)."""
  t, seq = setup['tracker'], setup['sequences'][1]
  frames = [tracker.load_frame(p) for p in seq.frames[:2]]
  t.initialize(frames[0], seq.boxes[0], seq.sentence)
  frame, wh = t._pad(frames[1]), tracker.image_wh(frames[1])
  _, box, score = t._step(setup['variables'], t.state, frame, wh)
  with jax.disable_jit():
    _, box_eager, score_eager = t.fns.step_slot(setup['variables'], t.state, frame, wh)
  assert relative(box, box_eager) <= 1e-5 and relative(score, score_eager) <= 1e-5


def _run(*args):
  """Runs `python -m args...` from the repository root; returns stdout (fails with stderr's tail)."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stdout


def usage_error(*args):
  """Runs `python -m args...`; asserts exit code 2 and one stderr line 'error: ...' (no traceback);
  returns that line."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False, timeout=300)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), run.stderr[-3000:]
  return lines[0]


def tiny_workdir(path):
  """A workdir holding one checkpoint of configs/cost_tiny.py's model with random weights."""
  from cost_jax import checkpoints
  saver = checkpoints.Checkpointer(path, async_save=False)
  saver.save(1, random_variables(cost.COST(cost_tiny.get_config().model)), {'next_step': 1}, -1)
  saver.close()
  return path


@pytest.fixture(scope='module')
def tnl2k_tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tnl2k'))
  write_tnl2k(root, [('nan_box', (70, 100), 3), ('negative', (70, 100), 3)],
              first_boxes={'nan_box': 'nan,nan,nan,nan', 'negative': '65,48,-13,13'})
  return root


@pytest.mark.parametrize('args, message', [
    (['--sequences=negative,typo,tpyo'], 'tnl2k: no sequence named typo, tpyo under '),
    (['--data_dir=/nowhere'], 'tnl2k: data root /nowhere is not a folder'),
    (['--slots=0'], 'flag --slots=0: 0 is not a positive integer'),
    (['--dataset=tnl2kk'], "unknown dataset 'tnl2kk'"),
])
def test_track_command_mistakes_are_one_line_and_exit_2(tnl2k_tree, tmp_path, args, message):
  line = usage_error('cost_jax.track', '--config=configs/cost_tiny.py', f'--workdir={tmp_path}',
                     '--dataset=tnl2k', f'--data_dir={tnl2k_tree}', f'--results_dir={tmp_path}', *args)
  assert message in line


def test_track_command_without_a_checkpoint_is_one_line(tnl2k_tree, tmp_path):
  line = usage_error('cost_jax.track', '--config=configs/cost_tiny.py', f'--workdir={tmp_path}/w',
                     '--dataset=tnl2k', f'--data_dir={tnl2k_tree}', f'--results_dir={tmp_path}')
  assert line == f'error: no checkpoint in --workdir={tmp_path}/w (no step folder in {tmp_path}/w/checkpoints)'


def test_track_command_with_no_startable_sequence_names_each_and_exits_2(tnl2k_tree, tmp_path):
  """NaN and negative-width first boxes: both sequences fail by name, no result file, exit code 2."""
  import subprocess
  import sys
  from cost_jax.evaluation import results_io
  work, results = tiny_workdir(str(tmp_path / 'work')), str(tmp_path / 'results')
  run = subprocess.run(
      [sys.executable, '-m', 'cost_jax.track', '--config=configs/cost_tiny.py', f'--workdir={work}',
       '--dataset=tnl2k', f'--data_dir={tnl2k_tree}', f'--results_dir={results}'],
      capture_output=True, text=True, check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = os.path.join(results, 'cost', 'tnl2k')
  assert run.returncode == 2 and 'Traceback' not in run.stderr, run.stderr[-3000:]
  assert run.stderr.strip().splitlines()[-1] == (
      'error: none of the 2 sequences could be tracked (listed in '
      f'{results_io.tracking_report_path(out)})')
  assert 'nan_box: not tracked: invalid first box: box [nan, nan, nan, nan] is not finite' in run.stderr
  assert 'FAILED negative: invalid first box: box [65.0, 48.0, -13.0, 13.0] has zero or negative size' in run.stdout
  assert os.listdir(out) == [results_io.TRACKING_REPORT]
  assert sorted(results_io.read_tracking_report(out)['failed']) == ['nan_box', 'negative']


@pytest.mark.heavy
def test_command_lines_end_to_end(tmp_path):
  """The docstring commands: track (then resumed), export, the standalone loader, visualize."""
  from cost_jax import checkpoints
  from configs import cost_tiny as tiny
  from input_pipeline import synthetic
  data, work, results = str(tmp_path / 'data'), str(tmp_path / 'work'), str(tmp_path / 'results')
  synthetic.generate(data, 'vlsot', videos=3, seed=1, verbose=False, min_frames=6, max_frames=9)
  saver = checkpoints.Checkpointer(work, async_save=False)
  saver.save(1, random_variables(cost.COST(tiny.get_config().model)), {'next_step': 1}, -1)
  saver.close()
  common = ['--config=configs/cost_tiny.py', f'--workdir={work}']
  track_args = ['cost_jax.track', *common, '--dataset=synthetic', f'--data_dir={data}',
                f'--results_dir={results}', '--config.track.batch_slots=2']
  assert '3 sequences tracked, 0 already done' in _run(*track_args)
  out = os.path.join(results, 'cost', 'synthetic')
  first = {n: open(os.path.join(out, n)).read() for n in sorted(os.listdir(out)) if '_time' not in n}
  assert '0 sequences tracked, 3 already done' in _run(*track_args)
  assert {n: open(os.path.join(out, n)).read() for n in first} == first
  _run('cost_jax.export', *common, f'--out={tmp_path / "exported"}')
  name = sorted(first)[0][:-len('.txt')]
  ours = np.loadtxt(os.path.join(out, name + '.txt'), delimiter=',')
  loaded = _run('cost_jax.export_runtime', f'--dir={tmp_path / "exported"}',
                f'--frames={os.path.join(data, name, "imgs", "*.jpg")}',
                '--box=' + ','.join(f'{v:.3f}' for v in ours[0]),
                '--sentence=' + open(os.path.join(data, name, 'language.txt')).read().strip())
  exported = np.array([[float(v) for v in line.split(',')] for line in loaded.split()])
  assert exported.shape == ours.shape
  assert np.mean(np.abs(exported - ours).max(axis=1) <= 1e-2) >= 0.9  # 3-decimal files, random net
  _run('cost_jax.visualize', '--dataset=synthetic', f'--data_dir={data}', f'--sequence={name}',
       f'--results_dir={results}', '--attention', *common, f'--out={tmp_path / "v.gif"}')
  with Image.open(tmp_path / 'v.gif') as gif:
    assert gif.n_frames == len(ours)

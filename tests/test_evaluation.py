"""Metrics against hand-computed cases, the originals' rules one by one, and the result-file contract."""

import json
import os

import numpy as np
import pytest

from cost_jax.evaluation import evaluate, read_rows, result_path, write_results, write_times
from cost_jax.evaluation import metrics as M
from cost_jax.evaluation.results_io import SequenceFailure, format_boxes, read_times
from input_pipeline.sequence import Sequence

N = 5
GT = np.tile([20.0, 30.0, 10.0, 10.0], (N, 1))  # a 10x10 px target, still


def make_seq(name='seq', dataset='tnl2k', boxes=GT, visible=None, attributes=None):
  boxes = np.asarray(boxes, dtype=np.float64)
  visible = np.ones(len(boxes), bool) if visible is None else visible
  return Sequence(name=name, dataset=dataset, frames=[f'{i:08d}.jpg' for i in range(len(boxes))],
                  boxes=boxes, visible=visible, sentence='a target', attributes=attributes or {})


def score(pred, seq=None, protocol='pytracking', compat=False, tmp=None):
  """Metrics of one sequence through the file path (write, read, score)."""
  seq = seq or make_seq()
  write_results(result_path(tmp, 'trk', 'ds', seq.name), pred)
  return evaluate([seq], tmp, ['trk'], 'ds', protocol, compat)['trk']['ds']


def shifted(dx):
  pred = GT.copy()
  pred[:, 0] += dx
  return pred


# ------------------------------------------------------------------ thresholds and formulas

def test_overlap_thresholds_equal_torch_arange_bit_for_bit():
  torch = pytest.importorskip('torch')
  ref = torch.arange(0.0, 1.0 + 0.05, 0.05, dtype=torch.float64).numpy()
  assert np.array_equal(M.OVERLAP_THRESHOLDS, ref)
  assert np.array_equal(M.NORM_CENTER_THRESHOLDS, torch.arange(0, 51, dtype=torch.float64).numpy() / 100.0)


def test_iou_and_center_error_are_the_continuous_formulas():
  pred = np.array([[0.0, 0.0, 4.0, 2.0], [1.5, 0.5, 2.0, 2.0], [10.0, 10.0, 1.0, 1.0]])
  gt = np.array([[2.0, 0.0, 4.0, 2.0], [0.5, 0.5, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
  np.testing.assert_allclose(M.iou(pred, gt), [4 / 12, 2 / 6, 0.0])
  np.testing.assert_allclose(M.center_error(pred, gt), [2.0, 1.0, np.sqrt(200.0)])
  np.testing.assert_allclose(M.center_error(pred, gt, normalized=True), [0.5, 0.5, np.sqrt(200.0)])


# ------------------------------------------------------------------ hand-computed cases

@pytest.mark.parametrize('protocol', ['pytracking', 'ostrack', 'vlsot'])
def test_perfect_tracker_precision_one_auc_twenty_of_21(tmp_path, protocol):
  m = score(GT, protocol=protocol, tmp=str(tmp_path))
  assert m['auc'] == pytest.approx(20 / 21)  # no IoU exceeds the last threshold, 1.0
  assert m['precision'] == 1.0 and m['norm_precision'] == 1.0
  assert m['frames'] == N and m['sequences'] == 1 and m['failed'] == {}
  assert m['protocol'] == protocol and m['result_format'] == 'int'
  if protocol == 'vlsot':
    assert m['np_auc'] == 1.0 and m['ciou_auc'] == pytest.approx(20 / 21) and m['macc'] == 1.0
  else:
    assert m['np_auc'] is None and m['ciou_auc'] is None and m['macc'] is None


@pytest.mark.parametrize('protocol', ['pytracking', 'ostrack', 'vlsot'])
def test_known_shift(tmp_path, protocol):
  # 5 px right: IoU = 50 / 150 = 1/3, centre error 5 px = 0.5 target widths; frame 1 is set to GT.
  m = score(shifted(5.0), protocol=protocol, tmp=str(tmp_path))
  # frame 1 beats 20 thresholds; frames 2..5 beat 0, 0.05, .., 0.30 (7 thresholds)
  assert m['auc'] == pytest.approx((20 + 4 * 7) / (21 * N))
  assert m['precision'] == 1.0  # 5 px <= 20 px
  assert m['norm_precision'] == pytest.approx(1 / N)  # 0.5 > 0.2: only frame 1
  if protocol == 'vlsot':
    assert m['np_auc'] == pytest.approx((51 + 4 * 1) / (51 * N))  # 0.5 <= only the last threshold 0.50
    # CIoU = IoU - d^2/c^2 (same aspect: v = 0) = 1/3 - 25/(15^2 + 10^2) = 0.2564: beats 0..0.25 (6)
    assert m['ciou_auc'] == pytest.approx((20 + 4 * 6) / (21 * N))
    assert m['macc'] == pytest.approx(1 / 3)  # the accuracy script scores the raw frame 1 too


def test_precision_curve_at_hand_computed_thresholds():
  overlap, center, norm, valid = M.toolkit_frame_errors(shifted(5.0), GT, None, 'tnl2k', 'pytracking')
  curves = M.toolkit_curves(overlap, center, norm)
  np.testing.assert_allclose(center, [0, 5, 5, 5, 5])
  assert curves['precision'][4] == pytest.approx(1 / N) and curves['precision'][5] == 1.0  # error <= thr
  assert curves['norm_precision'][49] == pytest.approx(1 / N) and curves['norm_precision'][50] == 1.0
  assert valid.all() and curves['success'].dtype == np.float32  # stored like ave_success_rate_plot_*


def test_iou_equal_to_a_threshold_is_not_a_success():
  gt = np.tile([0.0, 0.0, 4.0, 4.0], (2, 1)) + [1, 1, 0, 0]
  pred = gt.copy()
  pred[1] = [1.0, 1.0, 4.0, 2.0]  # IoU = 8/16 = 0.5 exactly
  overlap, center, norm, _ = M.toolkit_frame_errors(pred, gt, None, 'otb', 'pytracking')
  assert overlap[1] == 0.5
  success = M.toolkit_curves(overlap, center, norm)['success']
  assert success[9] == 1.0 and success[10] == 0.5  # 0.5 > 0.45, not > 0.5


# ------------------------------------------------------------------ validity rules

def test_absent_frames_lasot_vs_lasot_ext_vs_no_visibility(tmp_path):
  visible = np.array([1, 1, 0, 1, 1], bool)
  got = {d: score(GT, make_seq(dataset=d, visible=visible), tmp=str(tmp_path / d))
         for d in ('lasot', 'lasot_ext', 'tnl2k')}
  # invisible frame 3: a miss for success and precision (stays in the denominator)
  for d in ('lasot', 'lasot_ext'):
    assert got[d]['auc'] == pytest.approx(4 * 20 / (21 * N)) and got[d]['precision'] == pytest.approx(4 / N)
  assert got['lasot']['norm_precision'] == pytest.approx(4 / N)  # 'lasot': a miss for both precisions
  assert got['lasot_ext']['norm_precision'] == 1.0  # 'lasot_extension_subset': a hit
  assert got['tnl2k']['precision'] == 1.0  # the original TNL2K passes no target_visible


def test_invalid_ground_truth_pytracking_vs_ostrack(tmp_path):
  gt = GT.copy()
  gt[:, 0] = [20, 0, 20, 20, 20]  # frame 2: x = 0 (valid for ostrack: w, h > 0)
  gt[3] = [20, 30, 0, 10]  # frame 4: w = 0 (invalid for both)
  seq = make_seq(boxes=gt)
  pyt = score(gt, seq, 'pytracking', tmp=str(tmp_path / 'a'))
  ost = score(gt, seq, 'ostrack', tmp=str(tmp_path / 'b'))
  assert pyt['auc'] == pytest.approx(3 * 20 / (21 * N)) and pyt['precision'] == pytest.approx(3 / N)
  assert ost['auc'] == pytest.approx(4 * 20 / (21 * N)) and ost['precision'] == pytest.approx(4 / N)
  assert pyt['norm_precision'] == 1.0 and ost['norm_precision'] == 1.0  # invalid frames: hits


def test_nan_in_ground_truth_fails_the_sequence(tmp_path):
  gt = GT.copy()
  gt[2] = np.nan
  m = score(GT, make_seq(boxes=gt), tmp=str(tmp_path))
  assert 'NaN in the ground truth at frames [3]' in m['failed']['seq'] and m['sequences'] == 0


# ------------------------------------------------------------------ prediction rules

def test_first_frame_is_set_to_ground_truth_after_zero_size_replacement():
  pred = GT.copy()
  pred[0] = [0.0, 0.0, 5.0, 5.0]  # frame 1 far off: replaced by GT for scoring ...
  pred[1] = [9.0, 9.0, 0.0, 3.0]  # ... but frame 2 (zero size) copies the raw frame 1 first
  overlap, center, _, _ = M.toolkit_frame_errors(pred, GT, None, 'tnl2k', 'pytracking')
  np.testing.assert_allclose(overlap, [1, 0, 1, 1, 1])
  np.testing.assert_allclose(center[1], np.hypot(22.5, 32.5))


def test_zero_size_prediction_takes_the_previous_box():
  pred = shifted(5.0)
  pred[2] = [300, 300, 0, 0]
  pred[3] = [300, 300, 7, 0]  # chains: frame 4 takes frame 3's replacement
  overlap, _, _, _ = M.toolkit_frame_errors(pred, GT, None, 'tnl2k', 'pytracking')
  np.testing.assert_allclose(overlap, [1, 1 / 3, 1 / 3, 1 / 3, 1 / 3])


@pytest.mark.parametrize('protocol', ['pytracking', 'ostrack', 'vlsot'])
def test_nan_and_negative_size_are_errors_negative_xy_is_not(tmp_path, protocol):
  pred = GT.copy()
  pred[3, 1] = np.nan
  assert 'NaN in the prediction at frames [4]' in score(pred, protocol=protocol,
                                                        tmp=str(tmp_path / 'n'))['failed']['seq']
  pred = GT.copy()
  pred[2, 3] = -1.0
  assert 'negative width/height at frames [3]' in score(pred, protocol=protocol,
                                                        tmp=str(tmp_path / 'w'))['failed']['seq']
  pred = GT.copy()
  pred[2, :2] = -3.0
  assert score(pred, protocol=protocol, tmp=str(tmp_path / 'x'))['failed'] == {}


# ------------------------------------------------------------------ lengths: strict vs compat

@pytest.mark.parametrize('protocol', ['pytracking', 'ostrack', 'vlsot'])
def test_longer_result_strict_fails_compat_truncates(tmp_path, protocol):
  pred = np.concatenate([GT, GT[:2] + 100])
  strict = score(pred, protocol=protocol, tmp=str(tmp_path / 's'))
  assert strict['failed'] == {'seq': 'result has 7 lines, ground truth 5 frames'}
  assert strict['auc'] is None and strict['sequences'] == 0 and strict['frames'] == 0
  compat = score(pred, protocol=protocol, compat=True, tmp=str(tmp_path / 'c'))
  assert compat['failed'] == {} and compat['auc'] == pytest.approx(20 / 21)


def test_shorter_result_compat_pads_zeros_except_lasot(tmp_path):
  pred = GT[:4]
  assert 'result has 4 lines' in score(pred, tmp=str(tmp_path / 's'))['failed']['seq']
  padded = score(pred, compat=True, tmp=str(tmp_path / 'c'))
  # the zero box padded at frame 5 is scored as it is (the zero-size rule ran before padding)
  assert padded['auc'] == pytest.approx(4 * 20 / (21 * N)) and padded['precision'] == pytest.approx(4 / N)
  lasot = score(pred, make_seq(dataset='lasot'), compat=True, tmp=str(tmp_path / 'l'))
  assert 'shorter results fail for lasot' in lasot['failed']['seq']


def test_vlsot_compat_cuts_both_series_to_the_shorter(tmp_path):
  m = score(shifted(5.0)[:3], protocol='vlsot', compat=True, tmp=str(tmp_path))
  assert m['frames'] == 3 and m['auc'] == pytest.approx((20 + 2 * 7) / (21 * 3))
  assert m['macc'] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ VL-SOT absent frames and mACC

def test_vlsot_absent_frame_is_a_miss_and_scores_zero_accuracy(tmp_path):
  gt = GT.copy()
  gt[2] = 0.0  # 0,0,0,0 = absent in groundtruth_rect.txt
  pred = GT.copy()  # COST predicts a box on every frame, never an empty line
  m = score(pred, make_seq(boxes=gt), protocol='vlsot', tmp=str(tmp_path))
  assert m['auc'] == pytest.approx(4 * 20 / (21 * N)) and m['precision'] == pytest.approx(4 / N)
  assert m['ciou_auc'] == pytest.approx(4 * 20 / (21 * N))
  assert m['macc'] == pytest.approx(4 / N)  # the absent frame scores 0 for a box prediction
  # an empty line (or a single 0) there is the accuracy script's "not exist": it scores 1
  rows = [tuple(b) for b in pred]
  assert M.vlsot_accuracy(rows[:2] + [()] + rows[3:], gt) == 1.0
  assert M.vlsot_accuracy(rows[:2] + [(0.0,)] + rows[3:], gt) == 1.0


def test_vlsot_reader_nan_rows_are_the_toolkits_zero_rows():
  gt = GT.copy()
  gt[2] = np.nan
  a = M.vlsot_curves(GT.copy(), gt)
  b = M.vlsot_curves(GT.copy(), np.nan_to_num(gt))
  assert all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ files: bad input never scored

def test_nan_wrong_line_count_and_missing_sequence_reported_by_name(tmp_path):
  seqs = [make_seq(n) for n in ('good', 'has_nan', 'short_line', 'blank_line', 'missing')]
  d = str(tmp_path)
  write_results(result_path(d, 'trk', 'ds', 'good'), shifted(5.0))
  nan = GT.copy()
  nan[1, 2] = np.nan
  write_results(result_path(d, 'trk', 'ds', 'has_nan'), nan)
  lines = format_boxes(GT).splitlines()
  with open(result_path(d, 'trk', 'ds', 'short_line'), 'w') as f:
    f.write('\n'.join(lines[:3] + ['20,30,10'] + lines[4:]) + '\n')
  with open(result_path(d, 'trk', 'ds', 'blank_line'), 'w') as f:
    f.write('\n'.join(lines[:2] + [''] + lines[2:]) + '\n')
  m = evaluate(seqs, d, ['trk'], 'ds', 'pytracking')['trk']['ds']
  assert set(m['failed']) == {'has_nan', 'short_line', 'blank_line', 'missing'}
  assert 'NaN' in m['failed']['has_nan'] and 'missing result file' in m['failed']['missing']
  assert 'do not hold 4 numbers' in m['failed']['short_line']
  assert m['sequences'] == 1 and m['auc'] == pytest.approx((20 + 4 * 7) / (21 * N))
  # compat reads like np.loadtxt: the blank line is skipped (6 lines -> 5), the 3-number line still fails
  c = evaluate(seqs, d, ['trk'], 'ds', 'pytracking', compat=True)['trk']['ds']
  assert set(c['failed']) == {'has_nan', 'short_line', 'missing'} and c['sequences'] == 2


def test_unreadable_token_is_reported(tmp_path):
  path = str(tmp_path / 'x.txt')
  with open(path, 'w') as f:
    f.write('1,2,3,4\n1,2,abc,4\n')
  with pytest.raises(SequenceFailure, match=r"line 2: cannot read '1,2,abc,4'"):
    read_rows(path)


def test_write_results_round_trip_floats_ints_and_times(tmp_path):
  boxes = np.array([[10.98765, -0.5, 3.25, 7.0], [-2.7, 4.0, 0.4, 1e4 + 0.3456]])
  path = str(tmp_path / 'trk' / 'ds' / 's.txt')
  write_results(path, boxes)
  np.testing.assert_allclose(np.array(read_rows(path)), boxes, atol=5e-4)
  assert open(path).read().splitlines()[0] == '10.988,-0.500,3.250,7.000'
  write_results(path, boxes, int_results=True)  # np.savetxt(fmt='%d') truncates toward zero
  assert open(path).read() == '10,0,3,7\n-2,4,0,10000\n'
  write_times(path, [0.01, 0.0205])
  assert os.path.basename(path.replace('.txt', '_time.txt')) in os.listdir(os.path.dirname(path))
  np.testing.assert_allclose(read_times(path), [0.01, 0.0205])
  tab = str(tmp_path / 't.txt')  # published raw results use tabs (pytracking's delimiter='\t')
  with open(tab, 'w') as f:
    f.write('1\t2\t3\t4\n')
  assert read_rows(tab) == [(1.0, 2.0, 3.0, 4.0)]


def test_result_format_float_vs_int(tmp_path):
  m = score(GT + 0.25, tmp=str(tmp_path))
  assert m['result_format'] == 'float'


# ------------------------------------------------------------------ report: json, attributes, plots

def test_report_writes_metrics_json_attribute_tables_and_plots(tmp_path):
  from cost_jax.evaluation import report
  d = str(tmp_path)
  seqs = [make_seq('a', attributes={'fast_motion': 1, 'length': 0, 'relative_speed': 0.4}),
          make_seq('b', attributes={'fast_motion': 0.0, 'length': 2, 'relative_speed': 1.3})]
  for s in seqs:
    write_results(result_path(d, 'perfect', 'ds', s.name), GT)
    write_results(result_path(d, 'shift', 'ds', s.name), shifted(5.0) if s.name == 'a' else GT)
  printed = []
  out = report.run(seqs, d, 'ds', protocol='ostrack', echo=printed.append)
  with open(os.path.join(d, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(out))
  keys = {'auc', 'precision', 'norm_precision', 'np_auc', 'ciou_auc', 'macc', 'frames', 'sequences',
          'failed', 'protocol', 'result_format'}
  assert set(saved) == {'perfect', 'shift'} and set(saved['shift']['ds']) == keys
  assert saved['shift']['ds']['auc'] == pytest.approx(((20 + 4 * 7) / (21 * N) + 20 / 21) / 2)
  with open(os.path.join(d, 'attributes_ds.json')) as f:
    attrs = json.load(f)
  assert set(attrs) == {'fast_motion', 'length=0', 'length=2'}
  assert attrs['fast_motion']['shift']['auc'] == pytest.approx((20 + 4 * 7) / (21 * N))
  assert attrs['length=2']['shift']['auc'] == pytest.approx(20 / 21)
  for kind in ('success', 'precision', 'norm_precision'):
    with open(os.path.join(d, 'plots', f'ds_{kind}.png'), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'perfect' in printed[1] and '95.24' in printed[1]
  # a second dataset merges into metrics.json; the plots folder is never taken for a tracker
  report.run(seqs, d, 'ds2', protocol='ostrack', plots=False, echo=printed.append)
  with open(os.path.join(d, 'metrics.json')) as f:
    assert set(json.load(f)['perfect']) == {'ds', 'ds2'}


def test_minus_one_forms_equal_the_continuous_formulas():
  """pytracking/OSTrack compute IoU with x + w - 1 corners and +1 sizes, centres as x + (w - 1)/2:
  on random float boxes these equal the continuous formulas to rounding."""
  rng = np.random.default_rng(0)
  pred = np.concatenate([rng.uniform(-5, 50, (200, 2)), rng.uniform(0.5, 30, (200, 2))], axis=1)
  gt = np.concatenate([rng.uniform(0, 50, (200, 2)), rng.uniform(0.5, 30, (200, 2))], axis=1)
  inter_wh = np.clip(np.minimum(pred[:, :2] + pred[:, 2:], gt[:, :2] + gt[:, 2:])
                     - np.maximum(pred[:, :2], gt[:, :2]), 0, None)
  inter = inter_wh.prod(axis=1)
  ref_iou = inter / (pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - inter)
  np.testing.assert_allclose(M.iou(pred, gt), ref_iou, rtol=1e-12, atol=1e-12)
  d = pred[:, :2] + pred[:, 2:] / 2 - gt[:, :2] - gt[:, 2:] / 2
  np.testing.assert_allclose(M.center_error(pred, gt), np.hypot(d[:, 0], d[:, 1]), rtol=1e-12)
  np.testing.assert_allclose(M.center_error(pred, gt, normalized=True),
                             np.hypot(d[:, 0] / gt[:, 2], d[:, 1] / gt[:, 3]), rtol=1e-10)
  assert np.isclose(ref_iou, M.vlsot_iou(pred, gt), rtol=1e-12, atol=1e-12).all()


CLI_SCRIPT = r'''
import sys
import numpy as np
import input_pipeline.readers as readers
from input_pipeline.sequence import Sequence

def fake_load_dataset(name, root, split=None, attributes_file=None):
  boxes = np.tile([20.0, 30.0, 10.0, 10.0], (5, 1))
  return [Sequence(name=n, dataset=name, frames=[str(i) for i in range(5)], boxes=boxes,
                   visible=np.ones(5, bool), sentence='') for n in ('a', 'b')]

readers.load_dataset = fake_load_dataset
from absl import app
from cost_jax import evaluate
app.run(evaluate.main, argv=['evaluate'] + sys.argv[1:])
'''


def test_cli_prints_table_and_writes_metrics_json(tmp_path):
  import subprocess
  import sys
  d = str(tmp_path)
  for name in ('a', 'b'):
    write_results(result_path(d, 'cost', 'vlsot230', name), shifted(5.0))
    write_results(result_path(d, 'other', 'vlsot230', name), GT)
  os.remove(result_path(d, 'other', 'vlsot230', 'b'))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', CLI_SCRIPT, '--dataset=vlsot230', f'--data_dir={d}',
                        f'--results_dir={d}', '--trackers=cost,other', '--noplots'],
                       cwd=root, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert 'protocol vlsot' in out.stdout and 'FAILED other/b: missing result file' in out.stdout
  assert 'scored on different sequence sets' in out.stdout
  with open(os.path.join(d, 'metrics.json')) as f:
    m = json.load(f)
  assert m['cost']['vlsot230']['auc'] == pytest.approx((20 + 4 * 7) / (21 * N))
  assert m['cost']['vlsot230']['macc'] == pytest.approx(1 / 3)
  assert m['other']['vlsot230']['sequences'] == 1 and list(m['other']['vlsot230']['failed']) == ['b']


def test_complete_iou_hand_computed_with_aspect_term():
  pred, gt = np.array([[0.0, 0.0, 4.0, 2.0]]), np.array([[0.0, 0.0, 2.0, 2.0]])
  # IoU 4/8; centres (2,1) vs (1,1): d^2 = 1; enclosing box 4 x 2: c^2 = 20
  v = 4 / np.pi ** 2 * (np.arctan(1.0) - np.arctan(0.5)) ** 2
  expected = 0.5 - 1 / 20 - v / (0.5 + v + np.finfo(float).eps) * v
  np.testing.assert_allclose(M.vlsot_complete_iou(pred, gt), [expected], rtol=1e-12)
  assert np.isnan(M.vlsot_complete_iou(pred, np.zeros((1, 4))))[0]  # absent GT: NaN, a miss


@pytest.mark.parametrize('fmt', ['lasot', 'vlsot'])
def test_synthetic_benchmark_through_the_readers(tmp_path, fmt):
  """Generated tree -> readers -> a tracker exact on visible frames, far off on the others."""
  from input_pipeline import synthetic
  from input_pipeline.readers import load_dataset
  root = str(tmp_path / 'data')
  synthetic.generate(root, fmt, videos=2, seed=0, verbose=False, width=160, height=120,
                     min_frames=30, max_frames=30, occlusion_fraction=1.0)
  seqs = load_dataset('synthetic', root)
  d = str(tmp_path / 'results')
  for s in seqs:
    assert (~s.visible).any()  # every video has an occlusion
    pred = np.where(s.visible[:, None], s.boxes, [[80.0, 60.0, 10.0, 10.0]])
    write_results(result_path(d, 'trk', 'synthetic', s.name), pred)
  for protocol in ('pytracking', 'ostrack', 'vlsot'):
    m = evaluate(seqs, d, None, 'synthetic', protocol)['trk']['synthetic']
    if protocol == 'vlsot':  # the toolkit: absent = 0,0,0,0 in the ground truth
      hit = [~(s.boxes == 0).all(1) for s in seqs]
    else:  # the synthetic set passes its visibility; validity by the protocol's rule
      rule = (lambda b: (b > 0).all(1)) if protocol == 'pytracking' else (lambda b: (b[:, 2:] > 0).all(1))
      hit = [s.visible & rule(s.boxes) for s in seqs]
    rate = np.mean([h.mean() for h in hit])
    assert m['failed'] == {} and m['frames'] == sum(len(s) for s in seqs)
    # a float box's IoU with itself can round to 1 + 1 ulp in the originals' formula (above the last
    # threshold); the toolkit's rect_iou clips to 1
    assert 20 / 21 * rate - 1e-9 <= m['auc'] <= rate + 1e-9
    if protocol == 'vlsot':
      assert m['auc'] == pytest.approx(20 / 21 * rate)
    assert m['precision'] == pytest.approx(rate)
    if protocol == 'vlsot':
      assert m['macc'] == pytest.approx(rate)  # a box on an absent frame scores 0
    else:
      assert m['norm_precision'] == 1.0  # invalid frames are hits for normalised precision


# ------------------------------------------------------------------ tracking report, command mistakes

def test_tracking_report_is_copied_into_metrics_json_and_names_sequences_not_tracked(tmp_path):
  from cost_jax.evaluation import report, results_io
  d = str(tmp_path)
  seqs = [make_seq('a'), make_seq('b'), make_seq('c')]
  write_results(result_path(d, 'cost', 'ds', 'a'), GT)
  write_results(result_path(d, 'cost', 'ds', 'c'), GT)
  bad = [{'frame': 3, 'file': '/data/a/00000003.jpg', 'reason': 'unreadable frame (OSError: x)'}]
  results_io.write_tracking_report(os.path.join(d, 'cost', 'ds'), {
      'failed': {'b': 'invalid first box: box [nan, nan, nan, nan] is not finite',
                 'other_dataset_seq': 'not in this evaluation'},
      'bad_frames': {'a': bad}})
  write_results(result_path(d, 'plain', 'ds', 'a'), GT)  # a folder without a report
  printed = []
  out = report.run(seqs, d, 'ds', protocol='ostrack', plots=False, echo=printed.append)
  m = out['cost']['ds']
  assert m['failed'] == {'b': 'not tracked: invalid first box: box [nan, nan, nan, nan] is not finite'}
  assert m['tracking'] == {'failed': {'b': 'invalid first box: box [nan, nan, nan, nan] is not finite'},
                           'bad_frames': {'a': bad}}
  assert 'tracking' not in out['plain']['ds']
  assert out['plain']['ds']['failed']['b'].startswith('missing result file')
  with open(os.path.join(d, 'metrics.json')) as f:
    assert json.load(f)['cost']['ds']['tracking'] == m['tracking']
  assert ('NOTE cost: 1 unreadable frame(s) in 1 sequence(s) kept the previous box while tracking '
          '(metrics.json: tracking.bad_frames)') in printed
  with open(results_io.tracking_report_path(os.path.join(d, 'cost', 'ds')), 'w') as f:
    f.write('{"failed": [')
  out = report.run(seqs, d, 'ds', trackers=['cost'], protocol='ostrack', plots=False,
                   echo=printed.append)
  assert out['cost']['ds']['tracking']['error'].startswith(
      f'{results_io.tracking_report_path(os.path.join(d, "cost", "ds"))}: unreadable tracking report')
  assert printed[-1].startswith('WARNING cost: ')


def _evaluate(*args):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, '-m', 'cost_jax.evaluate', *args], capture_output=True,
                        text=True, cwd=root, check=False, timeout=300)


@pytest.fixture
def lasot_tree(tmp_path):
  from tests.test_readers import lasot_sequence
  data = str(tmp_path / 'data')
  for name in ('cat-1', 'cat-2'):
    lasot_sequence(data, name)
  return data


def test_evaluate_exits_2_when_every_sequence_of_a_tracker_failed(lasot_tree, tmp_path):
  results = str(tmp_path / 'results')
  write_results(result_path(results, 'good', 'lasot_ext', 'cat-1'), GT[:4])
  write_results(result_path(results, 'good', 'lasot_ext', 'cat-2'), GT[:4])
  write_results(result_path(results, 'broken', 'lasot_ext', 'cat-1'), np.full((4, 4), np.nan))
  run = _evaluate('--dataset=lasot_ext', f'--data_dir={lasot_tree}', f'--results_dir={results}',
                  '--noplots')
  assert run.returncode == 2 and 'Traceback' not in run.stderr, run.stderr[-3000:]
  assert run.stderr.strip().splitlines() == [
      'error: every sequence (2) failed for broken, so nothing was scored (reasons: the FAILED '
      'lines above)']
  assert 'FAILED broken/cat-1: NaN in the prediction' in run.stdout
  assert 'FAILED broken/cat-2: missing result file' in run.stdout
  with open(os.path.join(results, 'metrics.json')) as f:
    assert json.load(f)['good']['lasot_ext']['sequences'] == 2  # the table and file are still written
  run = _evaluate('--dataset=lasot_ext', f'--data_dir={lasot_tree}', f'--results_dir={results}',
                  '--trackers=good', '--noplots')
  assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize('args, message', [
    (['--results_dir=/nowhere'], '--results_dir=/nowhere is not a folder'),
    (['--trackers=good,nope'], 'no tracker folder nope under '),
    (['--data_dir=/nowhere'], 'lasot_ext: data root /nowhere is not a folder'),
    (['--protocol=pytrack'], 'flag --protocol=pytrack: value should be one of'),
])
def test_evaluate_mistakes_are_one_line_and_exit_2(lasot_tree, tmp_path, args, message):
  from tests.test_tracker import usage_error
  results = str(tmp_path / 'results')
  write_results(result_path(results, 'good', 'lasot_ext', 'cat-1'), GT[:4])
  line = usage_error('cost_jax.evaluate', '--dataset=lasot_ext', f'--data_dir={lasot_tree}',
                     f'--results_dir={results}', *args)
  assert message in line

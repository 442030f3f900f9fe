"""Synthetic data: determinism, boxes on the drawn target, marked hard cases, layouts the readers parse."""

import dataclasses
import filecmp
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from input_pipeline import readers
from input_pipeline import synthetic

SMALL = synthetic.Options(width=128, height=96, min_frames=10, max_frames=16)


def test_relative_speed_hand_computed():
  boxes = np.array([[0, 0, 2, 2], [3, 4, 2, 2], [3, 4, 4, 1]], np.float64)
  # centres (1,1) -> (4,5): 5 px / sqrt(4) = 2.5; (4,5) -> (5,4.5): sqrt(1.25) / 2
  np.testing.assert_allclose(synthetic.relative_speeds(boxes), [2.5, np.sqrt(1.25) / 2])


def test_shape_alpha_covers_box_centre_and_stays_inside_box():
  for shape in synthetic.SHAPES:
    x0, y0, alpha = synthetic.shape_alpha(shape, (10.3, 5.6, 12.0, 9.0))
    cx, cy = int(10.3 + 6.0) - x0, int(5.6 + 4.5) - y0
    assert alpha[cy, cx] == pytest.approx(1.0), shape
    # Nothing drawn outside the box (pixels fully outside [10.3, 22.3] x [5.6, 14.6]).
    ys, xs = np.nonzero(alpha > 0)
    assert xs.min() + x0 >= 10 and xs.max() + x0 <= 22, shape
    assert ys.min() + y0 >= 5 and ys.max() + y0 <= 14, shape


def test_same_seed_same_video_and_independent_of_count():
  a = synthetic.make_video(3, 1, SMALL)
  b = synthetic.make_video(3, 1, SMALL)
  assert a.sentence == b.sentence
  np.testing.assert_array_equal(a.boxes, b.boxes)
  for fa, fb in zip(a.frames, b.frames):
    np.testing.assert_array_equal(fa, fb)
  c = synthetic.make_video(4, 1, SMALL)
  assert not np.array_equal(a.boxes[:len(c.boxes)][:1], c.boxes[:1])


def test_generate_is_deterministic_on_disk(tmp_path):
  synthetic.generate(str(tmp_path / 'a'), 'vlsot', 3, seed=7, options=SMALL, verbose=False)
  synthetic.generate(str(tmp_path / 'b'), 'vlsot', 2, seed=7, options=SMALL, verbose=False)
  for name in ('synth_0000', 'synth_0001'):
    for f in ('groundtruth_rect.txt', 'language.txt', 'absent.txt', 'imgs/000001.jpg'):
      assert filecmp.cmp(tmp_path / 'a' / name / f, tmp_path / 'b' / name / f, shallow=False)


def test_boxes_lie_on_the_drawn_target():
  checked = 0
  for index in range(12):
    video = synthetic.make_video(0, index)
    if video.fast or video.twin == 'position':
      continue  # long blur streaks (fast, or 1 target size a frame): the centre is a blend
    colour = np.array(synthetic.COLOURS[video.colour])
    for t in np.nonzero(video.clean & video.visible)[0][video.grey_frames:]:  # grey start: no colour
      x, y, w, h = video.boxes[t]
      pixel = video.frames[t][int(y + h / 2), int(x + w / 2)].astype(int)
      assert np.abs(pixel - colour).max() <= 12, (index, t)
      checked += 1
  assert checked > 300


def test_motion_blur_streaks_along_the_motion():
  # A shift of 2 box widths spreads coverage: the centre is partly covered, the streak is longer.
  _, _, sharp = synthetic.shape_alpha('square', (20.0, 20.0, 8.0, 8.0))
  _, _, blurred = synthetic.shape_alpha('square', (20.0, 20.0, 8.0, 8.0), (16.0, 0.0), 8)
  assert blurred.sum() == pytest.approx(sharp.sum(), rel=1e-3)  # same ink
  assert (blurred.max(0) > 0).sum() >= (sharp.max(0) > 0).sum() + 14  # 16 px longer, x only
  assert (blurred.max(1) > 0).sum() == (sharp.max(1) > 0).sum()


def test_hard_cases_are_marked():
  found = {'occluded': 0, 'out_of_view': 0, 'twin': 0}
  for index in range(40):
    video = synthetic.make_video(0, index, dataclasses.replace(SMALL, occlusion_fraction=0.5,
                                                                 out_of_view_fraction=0.5))
    for t in np.nonzero(video.occluded)[0]:  # the occluder hides the whole target
      colour = np.array(synthetic.COLOURS[video.colour])
      x, y, w, h = video.boxes[t]
      cx, cy = int(x + w / 2), int(y + h / 2)
      if 0 <= cx < SMALL.width and 0 <= cy < SMALL.height:
        assert np.abs(video.frames[t][cy, cx].astype(int) - colour).max() > 60
      found['occluded'] += 1
    for t in np.nonzero(video.out_of_view)[0]:
      x, y, w, h = video.boxes[t]
      inside = (max(0, min(x + w, SMALL.width) - max(x, 0)) * max(0, min(y + h, SMALL.height) - max(y, 0)))
      assert inside < 0.25 * w * h
      found['out_of_view'] += 1
    invisible = ~video.visible
    np.testing.assert_array_equal(video.annotation[invisible], 0.0)
    np.testing.assert_array_equal(invisible, video.occluded | video.out_of_view)
    if video.twin:
      found['twin'] += 1
      size = np.sqrt(video.boxes[0, 2] * video.boxes[0, 3])
      centre = video.boxes[0, :2] + video.boxes[0, 2:] / 2
      twin_centre = video.twin_boxes[0, :2] + video.twin_boxes[0, 2:] / 2
      assert np.linalg.norm(centre - twin_centre) <= 3.1 * size  # near the target in frame 1
      assert ('identical' in video.sentence) == (video.twin != 'colour')  # colour: named by colour
      if video.twin == 'position':  # the sentence's side holds in every frame
        centres = video.boxes[:, :2] + video.boxes[:, 2:] / 2
        twins = video.twin_boxes[:, :2] + video.twin_boxes[:, 2:] / 2
        axis, sign = {'to the left of': (0, -1), 'to the right of': (0, 1), 'above': (1, -1),
                      'below': (1, 1)}[next(r for r in synthetic.RELATIONS.values() if r in video.sentence)]
        assert (sign * (centres[:, axis] - twins[:, axis]) > 0).all()
  assert min(found.values()) > 0, found


def _centres(boxes):
  return boxes[:, :2] + boxes[:, 2:] / 2


def test_language_critical_twins_need_the_sentence():
  """Every twin looks like the target in frame 1; the sentence names the cue that tells them apart,
  and that cue holds: position (the named side in every frame; the twin close behind, so after a step
  it is nearer than the target to where the target was), colour (the same formation, a twin of
  another colour, and a grey first frame: the template shows no colour), motion (they set off
  opposite ways)."""
  options = dataclasses.replace(synthetic.Options(), twin_fraction=1.0, min_frames=40, max_frames=60)
  seen = {kind: 0 for kind in synthetic.TWIN_KINDS}
  for index in range(30):
    video = synthetic.make_video(11, index, options)
    kind = video.twin
    seen[kind] += 1
    assert video.attributes['similar_object'] == video.attributes['language_ambiguity'] == 1
    assert not video.fast and not video.occluded.any() and not video.out_of_view.any()
    twin = video.twin_boxes
    np.testing.assert_allclose(twin[0, 2:], video.boxes[0, 2:])  # same size in frame 1
    words = video.sentence.split()
    assert words[0] == video.colour and video.shape in words
    centres, twins = _centres(video.boxes), _centres(twin)
    motion_axis = 0 if video.direction in ('left', 'right') else 1
    if kind in ('position', 'colour'):
      relation = {'position': next((r for r in synthetic.RELATIONS.values() if r in video.sentence), None),
                  'colour': synthetic.RELATIONS[video.direction]}[kind]
      axis, sign = {'to the left of': (0, -1), 'to the right of': (0, 1), 'above': (1, -1),
                    'below': (1, 1)}[relation]
      assert (sign * (centres[:, axis] - twins[:, axis]) > 0).all()  # the side holds in every frame
      assert axis == motion_axis  # in line: the twin follows behind
      to_twin = np.linalg.norm(twins[1] - centres[0])
      to_target = np.linalg.norm(centres[1] - centres[0])
      assert to_twin < to_target or to_target > 1.5 * max(twin[0, 2:])  # (unless a border reflected)
    if kind == 'colour':
      assert video.twin_colour != video.colour
      assert video.sentence == f'{video.colour} {video.shape} moving {video.direction}'
      assert 1 <= video.grey_frames <= 6 and video.attributes['illumination_variation'] == 1
      for t, frame in enumerate(video.frames[:video.grey_frames + 1]):
        grey = np.all(frame[..., 0] == frame[..., 1]) and np.all(frame[..., 1] == frame[..., 2])
        assert grey == (t < video.grey_frames)  # the template frame shows no colour
    else:
      assert 'identical' in words and video.twin_colour == video.colour
    if kind == 'motion':
      assert f'moving {video.direction}' in video.sentence
      assert f'moving {synthetic.OPPOSITE[video.direction]}' in video.sentence
      unit = np.array(synthetic.DIRECTIONS[video.direction])
      step, twin_step = (np.diff(_centres(b)[:2], axis=0)[0] for b in (video.boxes, twin))
      # as named at the start (until a border reflects one of them): opposite ways
      assert step @ unit > 0 or twin_step @ unit < 0, (step, twin_step, video.direction)
  assert min(seen.values()) >= 3, seen


def test_layouts_parse_with_the_readers(tmp_path):
  for fmt, name in (('lasot', 'lasot_ext'), ('vlsot', 'vlsot270')):
    out = str(tmp_path / fmt)
    report = synthetic.generate(out, fmt, 5, seed=1, options=dataclasses.replace(SMALL, twin_fraction=0.6),
                                verbose=False)
    for reader in (name, 'synthetic'):
      sequences = readers.load_dataset(reader, out)
      assert sorted(s.name for s in sequences) == sorted(e['name'] for e in report['sequences'])
    by_name = {s.name: s for s in readers.load_dataset('synthetic', out)}
    for index, entry in enumerate(report['sequences']):
      video = synthetic.make_video(1, index, dataclasses.replace(SMALL, twin_fraction=0.6))
      seq = by_name[entry['name']]
      assert seq.sentence == video.sentence
      np.testing.assert_allclose(seq.boxes, video.annotation, atol=0.005)
      np.testing.assert_array_equal(seq.visible, video.visible)
      for t in np.nonzero(video.clean)[0][:3]:  # the JPEG on disk shows the target at the box centre
        x, y, w, h = video.boxes[t]
        pixel = np.asarray(Image.open(seq.frames[t]).convert('RGB'))[int(y + h / 2), int(x + w / 2)]
        if not video.fast:
          expected = synthetic.COLOURS[video.colour]
          if t < video.grey_frames:
            expected = synthetic.desaturate(np.array([[expected]], np.uint8))[0, 0]
          assert np.abs(pixel.astype(int) - expected).max() <= 40
      for kind, attribute in synthetic.CUE_ATTRIBUTES.items():  # from generator_report.json
        assert seq.attributes[attribute] == int(video.twin == kind)
      if fmt == 'vlsot':
        attrs = {k: seq.attributes[k] for k in synthetic.ATTRIBUTE_NAMES}
        assert attrs == video.attributes
        assert seq.attributes['relative_speed'] == pytest.approx(
            synthetic.relative_speeds(video.boxes).mean(), abs=1e-4)
    train = readers.load_dataset('synthetic', out, split='train')
    test = readers.load_dataset('synthetic', out, split='test')
    assert len(test) == 1 and len(train) == 4
    assert not {s.name for s in train} & {s.name for s in test}


def test_report_states_the_distribution(tmp_path):
  report = synthetic.generate(str(tmp_path), 'lasot', 4, seed=2, options=SMALL, verbose=False)
  on_disk = json.load(open(tmp_path / 'generator_report.json'))
  assert on_disk['speed'] == json.loads(json.dumps(report['speed']))
  assert sum(report['speed']['frame_steps']) == report['frames'] - 4
  assert tuple(report['speed']['stated']['fast']) == synthetic.FAST_SPEED
  assert report['speed']['stated']['fast_fraction_of_videos'] == SMALL.fast_fraction


def test_speed_distribution_mostly_followable():
  speeds, fast = [], 0
  for index in range(40):
    video = synthetic.make_video(5, index, SMALL)
    speeds.append(synthetic.relative_speeds(video.boxes))
    fast += video.fast
  speeds = np.concatenate(speeds)
  assert 0.6 < (speeds <= 2.0).mean() < 0.98  # most within the search window, a minority beyond
  assert 1 <= fast <= 14


def test_cli_prints_the_report(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'input_pipeline.synthetic', f'--out={tmp_path}', '--format=vlsot',
       '--videos=2', '--seed=3', '--width=96', '--height=72'],
      capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert 'wrote 2 vlsot videos' in result.stdout and 'beyond 2 sizes' in result.stdout
  assert len(readers.load_dataset('vlsot230', str(tmp_path))) == 2
  names = open(tmp_path / 'attribute_names.txt').read().split()
  assert tuple(names) == synthetic.ATTRIBUTE_NAMES and len(names) == 17


@pytest.mark.heavy
def test_forty_default_videos_well_under_a_minute(tmp_path):
  start = time.process_time()
  synthetic.generate(str(tmp_path), 'lasot', 40, seed=0, verbose=False)
  assert time.process_time() - start < 30

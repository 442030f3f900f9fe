"""Visualisation: boxes and sentence where they belong, a GIF round trip, and [OBJ] attention computed
on exactly the crops the tracker used."""

import os

import numpy as np
from PIL import Image
import pytest

from cost_jax import tracker
from cost_jax import visualize
from tests.test_tracker import relative, setup, tiny_config  # noqa: F401  (setup is a fixture)


def test_draw_frame_puts_boxes_and_sentence_in_place():
  frame = np.zeros((40, 60, 3), np.uint8)
  image = np.asarray(visualize.draw_frame(frame, (5, 6, 10, 8), (30, 20, 12, 10), 'a kite'))
  strip = visualize.TEXT_STRIP_PX
  assert image.shape == (40 + strip, 60, 3)
  assert tuple(image[strip + 6, 5]) == visualize.GT_COLOUR  # top-left corner of (5, 6, 10, 8)
  assert tuple(image[strip + 6 + 7, 5 + 9]) == visualize.GT_COLOUR  # bottom-right: x+w-1, y+h-1
  assert tuple(image[strip + 20, 30]) == visualize.PRED_COLOUR
  assert image[strip + 10, 10].sum() == 0  # inside the box: untouched
  assert image[:strip].max() > 200 and image[strip:, 45:].max() == 0  # text on the strip only


def test_heat_overlay_covers_the_window_only():
  cfg = tiny_config().model
  frame = np.zeros((100, 100, 3), np.uint8)
  attention = np.zeros((20, 20), np.float32)
  attention[0, 0] = 1.0  # the top-left token only
  out = visualize.heat_overlay(frame, attention, np.array([50.0, 50.0, 40.0]), cfg)
  # window [30, 70)^2; token (0, 0) covers its first 1/20 = 2 px cell
  assert out[30, 30].sum() > 0 and out[29, 29].sum() == 0 and out[60, 60].sum() == 0


def test_gif_round_trip(setup, tmp_path):  # noqa: F811
  seq = setup['sequences'][1]
  boxes = seq.boxes + 1.0
  path = visualize.render(seq, boxes, str(tmp_path / 'b.gif'))
  with Image.open(path) as gif:
    assert gif.n_frames == len(seq)
    h, w = tracker.load_frame(seq.frames[0]).shape[:2]
    assert gif.size == (w, h + visualize.TEXT_STRIP_PX)


def test_attention_is_computed_on_the_trackers_crops(setup):  # noqa: F811
  """The full forward pass (with attention) on visualize's crops gives the tracker's own step."""
  seq = setup['sequences'][1]
  live = setup['tracker']
  live.initialize(tracker.load_frame(seq.frames[0]), seq.boxes[0], seq.sentence)
  boxes = [seq.boxes[0], live.track(tracker.load_frame(seq.frames[1]))['target_bbox']]
  attention = visualize.ObjAttention(setup['config'], setup['model'], setup['variables'],
                                     setup['tokenizer'])
  frame = tracker.load_frame(seq.frames[1])
  first = tracker.load_frame(seq.frames[0])
  ids, mask = setup['tokenizer'].encode(seq.sentence)
  outputs, weights, _, split = attention._forward(
      setup['variables'], first, tracker.image_wh(first), np.float32(seq.boxes[0]), frame,
      tracker.image_wh(frame), np.float32(seq.boxes[0]), ids, mask)
  grid = setup['config'].model.token.grid
  box, _ = tracker.select_box(outputs, tracker.hann_window(grid), setup['config'].track.hann_weight,
                             setup['config'].track.score_map)
  window = tracker.crops.crop_window(np.float32(seq.boxes[0]), 4.0, 64.0)
  predicted = tracker.update_box(seq.boxes[0], tracker.crops.crop_to_box(np.asarray(box), window),
                                 tracker.image_wh(frame), 1.0, 1.0)
  assert relative(predicted, boxes[1]) <= 1e-5
  assert 0 < float(np.sum(weights)) <= 1 + 1e-5  # a share of [OBJ]'s softmax over all tokens
  maps = attention.maps(seq, np.array(boxes + [boxes[-1]] * (len(seq) - 2)))
  assert maps[0] is None and maps[1][0].shape == (grid, grid) and maps[1][0].max() == 1.0
  # [OBJ]'s softmax row splits into itself, the sentence and the image; the words are its text part
  total = float(split['obj_self'] + split['obj_text'] + split['obj_visual'])
  assert abs(total - 1.0) <= 1e-5 and abs(float(np.sum(weights)) - float(split['obj_visual'])) <= 1e-5
  assert abs(float(np.sum(split['obj_words'])) - float(split['obj_text'])) <= 1e-6
  assert np.all(np.asarray(split['obj_words'])[mask == 0] == 0)  # padding gets nothing (masked keys)
  assert 0 < float(split['visual_text']) < 1
  word, share = maps[1][2]['top_word']
  assert word in setup['tokenizer'].tokens(ids) and 0 <= share <= maps[1][2]['obj_text'] + 1e-6
  assert visualize.mean_split(maps)['obj_text'] == np.mean([m[2]['obj_text'] for m in maps[1:]])


def test_attention_note_on_a_second_strip_line():
  frame = np.zeros((40, 60, 3), np.uint8)
  split = {'obj_text': 0.12, 'obj_visual': 0.85, 'obj_self': 0.03, 'visual_text': 0.031,
           'top_word': ('green', 0.05)}
  note = visualize.split_note(split)
  assert note == '[OBJ] text 12% image 85% (most: green 5%) | tokens text 3%'
  image = np.asarray(visualize.draw_frame(frame, None, None, 'a kite', note=note))
  strip = visualize.TEXT_STRIP_PX
  assert image.shape == (40 + 2 * strip, 60, 3)
  assert image[strip:2 * strip].max() > 200 and image[2 * strip:].max() == 0


def test_an_unreadable_frame_is_drawn_black_and_labelled(setup, tmp_path):  # noqa: F811
  from tests.test_tracker import damaged_copy
  seq = damaged_copy(str(tmp_path), setup['sequences'][1], 'b_bad', bad=[2])
  path = visualize.render(seq, seq.boxes, str(tmp_path / 'b.gif'))
  with Image.open(path) as gif:
    assert gif.n_frames == len(seq)
    gif.seek(2)
    frame = np.asarray(gif.convert('RGB'))[visualize.TEXT_STRIP_PX:]
    gif.seek(1)
    before = np.asarray(gif.convert('RGB'))[visualize.TEXT_STRIP_PX:]
  x, y, w, h = (int(v) for v in seq.boxes[2])
  outside = np.ones(frame.shape[:2], bool)
  outside[y - 1:y + h + 1, x - 1:x + w + 1] = False  # the boxes are still drawn
  assert frame[outside].max() == 0 and before[outside].max() > 0


@pytest.fixture(scope='module')
def tree_and_results(tmp_path_factory):
  from cost_jax.evaluation import results_io
  from tests.test_tracker import write_tnl2k
  root = str(tmp_path_factory.mktemp('vis'))
  write_tnl2k(os.path.join(root, 'data'), [('seq_a', (70, 100), 3), ('seq_b', (70, 100), 3)])
  results = os.path.join(root, 'results')
  results_io.write_results(results_io.result_path(results, 'cost', 'tnl2k', 'seq_b'), np.ones((2, 4)))
  return os.path.join(root, 'data'), results


@pytest.mark.parametrize('args, message', [
    (['--sequence=seq_c'], 'tnl2k: no sequence named seq_c under '),
    (['--sequence=seq_a'], 'missing result file '),
    (['--sequence=seq_b'], 'seq_b.txt: 2 boxes for the 3 frames of seq_b'),
    (['--sequence=seq_b', '--attention'], '--attention needs --config and --workdir'),
    (['--sequence=seq_b', '--fps=x'], "flag --fps=x: invalid literal for int() with base 10: 'x'"),
])
def test_visualize_mistakes_are_one_line_and_exit_2(tree_and_results, args, message):
  from tests.test_tracker import usage_error
  data, results = tree_and_results
  line = usage_error('cost_jax.visualize', '--dataset=tnl2k', f'--data_dir={data}',
                     f'--results_dir={results}', *args)
  assert message in line

"""Sentence-only start: find the described object in the first frame when no box is given.

With no first-frame box there is no template. A missing template is the blank template
(`input_pipeline.crops.blank_template`: the normalisation mean, about zero once normalised); training
replaces a share of templates with it (config.train.template_drop) so that the model learns to find the
target from the sentence alone. Grounding runs the tracker's own step (`SlotFunctions.predict`: search
crop, trunk, visual transformer against the blank template, token conv, VL transformer with the
sentence, heads) over search windows that tile the first frame at a few scales, and keeps the best
token of all windows:

  sides    s0, s0 k, s0 k^2, ... below L, then L     s0 = crop.search_min_side_px, L = max(W, H) px,
                                                     k = track.ground_scale_step (2)
  windows  squares of each side whose centres lie side/2 inside the frame's edges, evenly spaced at
           most (1 - o) side apart (o = track.ground_overlap, 0.5); along an axis shorter than the side,
           one window centred on it. With o = 0.5 every point at least side/4 from the frame's edge lies
           in the central half of some window of each scale.
  score    the tracker's windowed score of each token, (1 - w) sigmoid(logit) + w hann, so a target
           near one window's edge is taken from a neighbour in which it is central
  box      crop_to_box(best token's box, its window), clipped like a tracked box (tracker.update_box)

A window of side s is searched as the tracker searches a target of about s/4 px (factor-4 search crop),
so the smallest scale serves targets up to s0/4 px and the larger ones bigger targets. All windows of a
frame go through one jitted function, `track.ground_batch` windows a call (vmapped over windows; the
last batch is filled by repeating its last window and those outputs are dropped), so one compilation
serves every frame of a padded size. `cost_jax.tracker.Tracker.ground`, `cost_jax.track --init=sentence`
(through BatchedEvaluator) and `cost_jax.track_video` all use `Grounder`.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

from cost_jax import box_ops
from cost_jax import tracker
from input_pipeline import crops

Grounding = collections.namedtuple('Grounding', ['box', 'score', 'window', 'num_windows'])
Grounding.__doc__ = """box [4] float64 (x, y, w, h) px, score float (windowed), window [3] (cx, cy, side)
px that held the best token, num_windows int (how many windows were searched)."""


# ---------------------------------------------------------------- the windows (pure)

def window_sides(image_wh, min_side, scale_step):
  """Window sides px, ascending: min_side * scale_step^k while below L = max(W, H), then L.

  A frame no larger than min_side gets one side, min_side.
  """
  if scale_step <= 1:
    raise ValueError(f'track.ground_scale_step={scale_step}: must be > 1')
  longer = float(max(image_wh[0], image_wh[1]))
  sides, side = [], float(min_side)
  while side < longer:
    sides.append(side)
    side *= scale_step
  sides.append(max(longer, float(min_side)))
  return sides


def axis_centres(length, side, overlap):
  """Window centres [n] px along an axis of `length` px: first and last side/2 inside the edges,
  evenly spaced at most (1 - overlap) * side apart; [length / 2] when side >= length."""
  if not 0 <= overlap < 1:
    raise ValueError(f'track.ground_overlap={overlap}: must be in [0, 1)')
  if side >= length:
    return np.array([length / 2.0])
  n = int(np.ceil((length - side) / ((1.0 - overlap) * side) - 1e-9)) + 1
  return np.linspace(side / 2.0, length - side / 2.0, max(n, 2))


def tile_windows(image_wh, min_side, scale_step=2.0, overlap=0.5):
  """Search windows tiling a W x H frame: float32 [K, 3] (cx, cy, side) px, by scale, row, column."""
  width, height = float(image_wh[0]), float(image_wh[1])
  windows = []
  for side in window_sides(image_wh, min_side, scale_step):
    for cy in axis_centres(height, side, overlap):
      for cx in axis_centres(width, side, overlap):
        windows.append((cx, cy, side))
  return np.asarray(windows, np.float32)


def batches(windows, size):
  """[K, 3] windows -> [ceil(K / size), size, 3], the last batch filled with copies of the last window."""
  count = -(-len(windows) // size)
  filled = np.concatenate([windows, np.repeat(windows[-1:], count * size - len(windows), axis=0)])
  return filled.reshape(count, size, windows.shape[-1])


# ---------------------------------------------------------------- the search (device)

class Grounder:
  """Finds the sentence's object in a frame with the blank template.

    grounder = Grounder(tracker.SlotFunctions(config, model), variables, tokenizer)
    found = grounder.ground(frame, 'red circle moving left')   # -> Grounding
  """

  def __init__(self, fns, variables, tokenizer):
    self.fns = fns
    self.config = fns.config
    self.variables = variables
    self.tokenizer = tokenizer
    self._encode = jax.jit(self._encode_fn)
    self._windows = jax.jit(jax.vmap(self._window_fn, in_axes=(None, None, None, None, None, 0)))

  def _encode_fn(self, variables, text_ids, text_mask):
    """Text [L] -> (blank template's cache, text cache)."""
    m = self.config.model
    blank = jnp.asarray(crops.blank_template(m.template_size, m.image_mean))
    return self.fns.encode(variables, blank, text_ids, text_mask)

  def _window_fn(self, variables, template_cache, text_cache, frame, image_wh, window):
    """One window [3] -> (its best token's box [4] px, clipped like a tracked box, score)."""
    box, score = self.fns.predict(variables, template_cache, text_cache, frame, image_wh, window)
    box = tracker.update_box(box, box, image_wh, 1.0, self.config.track.min_size_px)
    return box, score

  def windows(self, image_wh):
    """The windows searched in a frame of this size: [K, 3] (cx, cy, side) px."""
    c, k = self.config.crop, self.config.track
    return tile_windows(image_wh, c.search_min_side_px, k.ground_scale_step, k.ground_overlap)

  def window_results(self, frame, sentence):
    """Every window's best token: (windows [K, 3], boxes [K, 4] px, scores [K])."""
    k = self.config.track
    wh = tracker.image_wh(frame)
    padded = tracker.pad_frame(frame, tracker.padded_shape([frame.shape], k.pad_multiple))
    ids, mask = self.tokenizer.encode(sentence)
    template_cache, text_cache = self._encode(self.variables, ids, mask)
    windows = self.windows(wh)
    boxes, scores = [], []
    for batch in batches(windows, k.ground_batch):
      b, s = self._windows(self.variables, template_cache, text_cache, padded, wh, batch)
      boxes.append(np.asarray(b, np.float64))
      scores.append(np.asarray(s, np.float64))
    return windows, np.concatenate(boxes)[:len(windows)], np.concatenate(scores)[:len(windows)]

  def ground(self, frame, sentence):
    """frame uint8 [H, W, 3], sentence -> Grounding: the best-scoring token over all windows (the
    first such window on a tie)."""
    windows, boxes, scores = self.window_results(frame, sentence)
    best = int(np.argmax(scores))
    return Grounding(boxes[best], float(scores[best]), windows[best], len(windows))


# ---------------------------------------------------------------- how well frame 1 was found

def start_overlaps(ground_truth, starts):
  """IoU [N] of each sequence's start box with its frame-1 ground truth; both [N, 4] (x, y, w, h) px."""
  gt = box_ops.xywh_to_xyxy(np.asarray(ground_truth, np.float64))
  ours = box_ops.xywh_to_xyxy(np.asarray(starts, np.float64))
  return np.asarray(box_ops.iou(ours, gt), np.float64)


def start_report(overlaps, what='frame 1 vs its ground truth'):
  """One line on sentence-only starts: mean IoU and the share found (IoU > 0.5) over sequences."""
  overlaps = np.asarray(overlaps, np.float64)
  found = int(np.sum(overlaps > 0.5))
  return (f'sentence-only start, {what}: mean IoU {overlaps.mean():.3f}, '
          f'IoU > 0.5 in {found} of {len(overlaps)} sequences')

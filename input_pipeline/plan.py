"""The training stream's planner (docs/design.md §2): example g as a pure function of (seed, g).

Example g = step * B + j of the global batch is planned in Python from a counter-based Philox
generator keyed by (seed, g, attempt) -- stateless: no state survives between examples, so any
example can be rebuilt alone, on any host, after any restart. The plan picks a dataset by weight, a
sequence, a visible template frame and a visible search frame at most max_gap frames apart, jitters
both boxes (TransT's units: size x exp(N(0, scale_jitter)), centre + sqrt(w h) centre_jitter U(-1/2,
1/2)), picks per-image brightness and a joint grayscale flip, and reads each frame's header (image
size, `images.image_size`) -- or, from TFDS, its bytes. It clips the windows with the header's size
and computes all geometry in float64 numpy, so the pixels that input_pipeline.stream renders from an
`ExamplePlan` are the same bytes in tf.data and in an eager rebuild.

Bad data never shifts later samples: a plan that meets an empty sentence
(sequence.is_empty_sentence, the rule input_pipeline.check applies), a box that is not finite and
positive or misses the image, a missing or unreadable frame, retries the same g with attempt + 1,
and the plan counts each replaced attempt by reason. After MAX_ATTEMPTS bad attempts in a row it
raises DataError. Any other sentence is data: accents and punctuation go to BERT's uncased
normaliser, and a sentence longer than text.max_len tokens is truncated (`truncated_sentences()`
names them).

This module is numpy only (no TensorFlow), so plans can be built and tested without it.
"""

import collections
import math
import types
import typing

import numpy as np

from input_pipeline import crops
from input_pipeline import images
from input_pipeline import sequence as sequence_lib
from input_pipeline import tokenize

REASONS = ('empty_sentence', 'no_visible_frame', 'bad_box', 'box_outside_image', 'missing_frame',
           'corrupt_frame')
MAX_ATTEMPTS = 64  # consecutive bad attempts for one example before the data is declared unusable
DECODE_MARGIN = 4  # px decoded beyond the window: chroma upsampling is wrong at a crop's border


class DataError(RuntimeError):
  """The datasets cannot give an example: MAX_ATTEMPTS attempts in a row hit bad data."""


class ExamplePlan(typing.NamedTuple):
  """Everything the pixel stage needs for one example, as numpy (shapes for one example; a host
  batch of plans stacks each field on a leading axis). Rows of the [2, ...] fields: template,
  search.

  The one definition of the fields' order: tf.numpy_function hands the plan to TF as a flat tuple in
  this order, with the dtypes of `DTYPES` and the shapes of `shapes(text_len)`.
  """
  g: np.ndarray  # int64 []: the global example index
  t_path: np.ndarray  # bytes []: template frame's file (raw source), b'' when t_bytes holds it
  s_path: np.ndarray  # bytes []: search frame's file
  t_bytes: np.ndarray  # bytes []: template frame's encoded bytes (TFDS source), b'' for raw
  s_bytes: np.ndarray  # bytes []: search frame's encoded bytes
  regions: np.ndarray  # int32 [2, 4]: pixels to decode, (y0, y1, x0, x1) (window_region)
  resize_boxes: np.ndarray  # float32 [2, 4]: crop_and_resize boxes of the windows in their regions
  brightness: np.ndarray  # float32 [2]: brightness factor per image
  gray: np.ndarray  # bool []: both images to grayscale
  search_box: np.ndarray  # float32 [4]: the target in the search crop, normalised (cx, cy, w, h)
  text_ids: np.ndarray  # int32 [L]: the sentence's tokens
  text_mask: np.ndarray  # int32 [L]
  text_key: np.ndarray  # int32 []: sequence_lib.text_key of text_ids
  sequence_key: np.ndarray  # int32 []
  counts: np.ndarray  # int32 [len(REASONS)]: attempts replaced before this one, by reason
  attempt: np.ndarray  # int64 []: the attempt this plan is


# numpy dtype of each field (bytes: a variable-length byte string, tf.string).
DTYPES = ExamplePlan(g=np.int64, t_path=bytes, s_path=bytes, t_bytes=bytes, s_bytes=bytes,
                     regions=np.int32, resize_boxes=np.float32, brightness=np.float32,
                     gray=np.bool_, search_box=np.float32, text_ids=np.int32, text_mask=np.int32,
                     text_key=np.int32, sequence_key=np.int32, counts=np.int32, attempt=np.int64)


def shapes(text_len):
  """The ExamplePlan of each field's shape for one example (text_len = the tokenizer's max_len)."""
  return ExamplePlan(g=[], t_path=[], s_path=[], t_bytes=[], s_bytes=[], regions=[2, 4],
                     resize_boxes=[2, 4], brightness=[2], gray=[], search_box=[4],
                     text_ids=[text_len], text_mask=[text_len], text_key=[], sequence_key=[],
                     counts=[len(REASONS)], attempt=[])


def _box_ok(box):
  x, y, w, h = (float(v) for v in box)
  return all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0


def _box_in_image(box, size):
  x, y, w, h = box
  return x < size[0] and y < size[1] and x + w > 0 and y + h > 0


def jitter_boxes(rng, boxes, center_jitter, scale_jitter):
  """TransT's jitter of (x, y, w, h) boxes [n, 4]: size x exp(N(0, s)), centre + sqrt(w h) c
  U(-1/2, 1/2).

  center_jitter, scale_jitter: [n] (template and search differ).
  """
  size = boxes[:, 2:4] * np.exp(rng.normal(size=(len(boxes), 2)) * scale_jitter[:, None])
  spread = np.sqrt(size[:, 0] * size[:, 1]) * center_jitter
  offset = spread[:, None] * (rng.random((len(boxes), 2)) - 0.5)
  centre = boxes[:, :2] + boxes[:, 2:4] / 2.0 + offset
  return np.concatenate([centre - size / 2.0, size], axis=1)


def window_region(window, height, width):
  """Rows/cols (y0, y1, x0, x1) of an H x W frame that a window's bilinear samples read, widened by
  DECODE_MARGIN and clipped to the image (never empty)."""
  half = float(window[2]) / 2.0
  def span(c, n):
    lo = math.floor(float(c) - half) - DECODE_MARGIN
    hi = math.ceil(float(c) + half) + DECODE_MARGIN
    lo = min(max(lo, 0), n - 1)
    return lo, min(max(hi, lo + 1), n)
  y0, y1 = span(window[1], height)
  x0, x1 = span(window[0], width)
  return y0, y1, x0, x1


class _SequenceInfo:
  """What the planner needs per sequence, computed once: visible frames, tokens (truncated to
  max_len), the sentence's problem ('empty_sentence' or None) and its untruncated token count."""

  def __init__(self, seq, tokenizer):
    self.seq = seq
    self.visible = np.flatnonzero(seq.visible)
    self.problem = 'empty_sentence' if sequence_lib.is_empty_sentence(seq.sentence) else None
    self.ids, self.mask = tokenizer.encode(seq.sentence if self.problem is None else '')
    self.text_key = sequence_lib.text_key(self.ids)
    self.tokens = tokenizer.length(seq.sentence) if self.problem is None else 0


class Planner:
  """Planner(config, sequences_by_dataset, host_id=0, num_hosts=1, frame_reader=None): the plans of
  this host's examples, and the count of the replacements in what was handed out.

  Host h of H plans examples [h b, (h+1) b) of every global batch (b = B / H).
  frame_reader(sequence, index) -> bytes reads frames (tfds_builders gives one for
  config.data.source = 'tfds'); None (raw) = the planner reads each file's header and the plan
  names the file. input_pipeline.stream's
  PairStream is a Planner that also renders the plans' pixels.
  """

  def __init__(self, config, sequences_by_dataset, host_id=0, num_hosts=1, frame_reader=None):
    batch = config.train.batch_size
    if batch % num_hosts:
      raise ValueError(f'global batch {batch} is not divisible by {num_hosts} hosts')
    if not 0 <= host_id < num_hosts:
      raise ValueError(f'host_id {host_id} not in [0, {num_hosts})')
    self.config = config
    # Plain copies of the fields the planner reads for every example (ConfigDict lookups are slow).
    self._data = types.SimpleNamespace(**config.data.to_dict())
    self._crop = types.SimpleNamespace(**config.crop.to_dict())
    c, d = config.crop, config.data
    self._factors = np.array([c.template_factor, c.search_factor])  # rows: template, search
    self._min_sides = np.array([c.template_min_side_px, c.search_min_side_px])
    self._center_jitter = np.array([d.template_center_jitter, d.center_jitter])
    self._scale_jitter = np.array([d.template_scale_jitter, d.scale_jitter])
    self._out_sizes = np.array([config.model.template_size, config.model.search_size])
    self._seed = int(config.seed)
    self.global_batch = batch
    self.host_batch = batch // num_hosts
    self.host_id = host_id
    self._read = frame_reader or self._default_reader(config, sequences_by_dataset)
    tokenizer = tokenize.tokenizer_for(config.model)
    self.text_len = tokenizer.max_len
    weights = {k: float(v) for k, v in dict(config.data.weights).items() if float(v) > 0}
    missing = sorted(set(weights) - set(sequences_by_dataset))
    if missing or not weights:
      raise ValueError(f'config.data.weights {dict(config.data.weights)} names datasets without '
                       f'sequences: {missing or "none weighted"}; '
                       f'given {sorted(sequences_by_dataset)}')
    self.datasets = sorted(weights)
    self._cumulative = np.cumsum([weights[d] for d in self.datasets]) / sum(weights.values())
    self._infos = []
    for name in self.datasets:
      seqs = list(sequences_by_dataset[name])
      if not seqs:
        raise ValueError(f'dataset {name!r} has no sequences')
      self._infos.append([_SequenceInfo(s, tokenizer) for s in seqs])
    self._counts = collections.Counter()

  @staticmethod
  def _default_reader(config, sequences_by_dataset):
    if config.data.source == 'raw':
      return None
    if config.data.source == 'tfds':
      from input_pipeline import tfds_builders
      return tfds_builders.FrameReader(config.data.tfds_dir, sequences_by_dataset)
    raise ValueError(f"config.data.source {config.data.source!r}: expected 'raw' or 'tfds'")

  def _rng(self, g, attempt):
    key = (self._seed << 64) | (int(g) << 16) | int(attempt)
    return np.random.Generator(np.random.Philox(key=key))

  def _try(self, g, attempt):
    """One attempt at example g: (plan dict, None) or (None, reason)."""
    d, c = self._data, self._crop
    rng = self._rng(g, attempt)
    infos = self._infos[int(np.searchsorted(self._cumulative, rng.random(), side='right'))]
    info = infos[rng.integers(len(infos))]
    if info.problem:
      return None, info.problem
    if not len(info.visible):
      return None, 'no_visible_frame'
    t = info.visible[rng.integers(len(info.visible))]
    lo = np.searchsorted(info.visible, t - d.max_gap, side='left')
    hi = np.searchsorted(info.visible, t + d.max_gap, side='right')
    s = info.visible[rng.integers(lo, hi)]
    boxes = info.seq.boxes[[t, s]]
    if not (_box_ok(boxes[0]) and _box_ok(boxes[1])):
      return None, 'bad_box'
    paths, data, sizes = [], [], []
    for index, box in zip((t, s), boxes):
      try:
        if self._read is None:
          paths.append(info.seq.frames[index])
          data.append(b'')
          size = images.file_image_size(paths[-1])
        else:
          paths.append('')
          data.append(self._read(info.seq, index))
          size = images.image_size(data[-1])
      except OSError:
        return None, 'missing_frame'
      except ValueError:
        return None, 'corrupt_frame'
      if not _box_in_image(box, size):
        return None, 'box_outside_image'
      sizes.append(size)
    # template and search together: rows [template, search]
    windows = crops.crop_window(jitter_boxes(rng, boxes, self._center_jitter, self._scale_jitter),
                                self._factors, self._min_sides, c.size_rule)
    brightness = rng.uniform(max(0.0, 1.0 - d.brightness), 1.0 + d.brightness, size=2)
    gray = rng.random() < d.grayscale_prob
    regions = np.array([window_region(w, h, wd) for w, (wd, h) in zip(windows, sizes)], np.int32)
    # (x0, y0, 0) of each region
    origin = np.stack([regions[:, 2], regions[:, 0], np.zeros(2)], axis=1)
    resize_boxes = crops.resize_box(windows - origin, regions[:, 1] - regions[:, 0],
                                    regions[:, 3] - regions[:, 2], self._out_sizes)
    return dict(t_path=paths[0], s_path=paths[1], t_bytes=data[0], s_bytes=data[1], windows=windows,
                regions=regions, resize_boxes=resize_boxes.astype(np.float32),
                brightness=brightness, gray=gray,
                search_box=crops.box_to_crop(boxes[1], windows[1]), ids=info.ids, mask=info.mask,
                text_key=info.text_key, sequence_key=info.seq.sequence_key,
                sequence=info.seq, frames=(int(t), int(s))), None

  def plan(self, g, first_attempt=0):
    """(plan, attempt, reasons Counter) for example g, trying attempts first_attempt,
    first_attempt + 1, ..."""
    reasons = collections.Counter()
    for attempt in range(first_attempt, first_attempt + MAX_ATTEMPTS):
      result, reason = self._try(g, attempt)
      if result is not None:
        return result, attempt, reasons
      reasons[reason] += 1
    raise DataError(f'example {g}: {MAX_ATTEMPTS} attempts in a row hit bad data '
                    f'({dict(reasons)}); run `python -m input_pipeline.check` on the datasets')

  def _plan_np(self, g, first_attempt):
    """plan(g) as an ExamplePlan of numpy values (DTYPES)."""
    plan, attempt, reasons = self.plan(int(g), int(first_attempt))
    return ExamplePlan(
        g=np.int64(g), t_path=np.array(plan['t_path'].encode(), dtype=object),
        s_path=np.array(plan['s_path'].encode(), dtype=object),
        t_bytes=np.array(plan['t_bytes'], dtype=object),
        s_bytes=np.array(plan['s_bytes'], dtype=object),
        regions=plan['regions'], resize_boxes=plan['resize_boxes'],
        brightness=plan['brightness'].astype(np.float32), gray=np.bool_(plan['gray']),
        search_box=plan['search_box'].astype(np.float32), text_ids=plan['ids'],
        text_mask=plan['mask'],
        text_key=np.int32(plan['text_key']), sequence_key=np.int32(plan['sequence_key']),
        counts=np.array([reasons[r] for r in REASONS], np.int32), attempt=np.int64(attempt))

  def _undecodable_np(self, g):
    """An ExamplePlan of example g without frame bytes: its decode fails, so tf.data drops its
    batch."""
    empty = np.array(b'', dtype=object)
    length = self.text_len
    return ExamplePlan(
        g=np.int64(g), t_path=empty, s_path=empty, t_bytes=empty, s_bytes=empty,
        regions=np.zeros((2, 4), np.int32), resize_boxes=np.zeros((2, 4), np.float32),
        brightness=np.ones(2, np.float32), gray=np.bool_(False), search_box=np.zeros(4, np.float32),
        text_ids=np.zeros(length, np.int32), text_mask=np.zeros(length, np.int32),
        text_key=np.int32(0), sequence_key=np.int32(0), counts=np.zeros(len(REASONS), np.int32),
        attempt=np.int64(0))

  def _plan_step_np(self, step, failures):
    """The ExamplePlans of this host's examples of global batch `step`, each field stacked: one
    Python call per batch (in tf.data, a numpy_function call per example costs more CPU than its
    plan). An error goes into `failures` as (step, error) -- the stream ends its dataset on it and
    raises it in the caller -- and the batch becomes undecodable plans, which tf.data drops."""
    indices = self.host_indices(int(step))
    try:
      rows = [self._plan_np(g, 0) for g in indices]
    except Exception as e:  # raised by the stream's iterate; tf.data would log it, then drop it
      failures.append((int(step), e))
      rows = [self._undecodable_np(g) for g in indices]
    return ExamplePlan(*(np.stack(column) for column in zip(*rows)))

  def host_indices(self, step):
    """Global example indices g [b] that this host builds for global batch `step`."""
    start = step * self.global_batch + self.host_id * self.host_batch
    return np.arange(start, start + self.host_batch, dtype=np.int64)

  def _count(self, counts):
    """Adds a batch's replacement counts (int [b, len(REASONS)]) to replacements()."""
    for reason, n in zip(REASONS, np.sum(counts, axis=0)):
      if n:
        self._counts[reason] += int(n)

  def replacements(self):
    """{reason: count} of examples replaced in the batches handed out so far."""
    return dict(self._counts)

  def truncated_sentences(self):
    """{'dataset/sequence': tokens} of the sentences longer than text.max_len tokens, which every
    example of that sequence trains on truncated to their first text.max_len tokens."""
    return {f'{info.seq.dataset}/{info.seq.name}': info.tokens for infos in self._infos
            for info in infos if info.tokens > self.text_len}

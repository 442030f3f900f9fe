"""The training stream (docs/design.md §2): template/search pairs as a pure function of (seed, g).

Example g = step * B + j of the global batch is planned in Python from a counter-based Philox
generator keyed by (seed, g, attempt) -- stateless: no state survives between examples, so any
example can be rebuilt alone, on any host, after any restart. The plan picks a dataset by weight, a
sequence, a visible template frame and a visible search frame at most max_gap frames apart, jitters
both boxes (TransT's units: size x exp(N(0, scale_jitter)), centre + sqrt(w h) centre_jitter U(-1/2,
1/2)), picks per-image brightness and a joint grayscale flip, and reads each frame's header (image
size) -- or, from TFDS, its bytes. tf.data then reads the files (tf.io.read_file, no GIL), decodes only
each window (JPEG: `decode_and_crop_jpeg` on the window clipped to the image plus a small margin; PNG:
whole) and crops it with `crops.crop_tf_float`; pixels outside the image take the mean of the decoded
part (the frame mean when the window covers the frame). The planner clips windows with the header's
size (not extract_jpeg_shape in the graph) and computes all geometry in float64 numpy, so tf.data and
an eager rebuild give identical bytes.

Bad data never shifts later samples: a plan that meets an empty sentence (sequence.is_empty_sentence,
the rule input_pipeline.check applies), a box that is not finite and positive or misses the image, a
missing or unreadable frame, retries the same g with attempt + 1; a frame that only fails while
decoding makes tf.data drop its batch, whose examples are then rebuilt by the same function (the
failing one with the next attempt). Every replacement is counted by reason (`replacements()`). Any
other sentence is data: accents and punctuation go to BERT's uncased normaliser, and a sentence longer
than text.max_len tokens is truncated (`truncated_sentences()` names them). When MAX_ATTEMPTS attempts
in a row hit bad data, or the planner fails in any other way, the stream raises that error (DataError
for bad data) in the caller: tf.data's ignore_errors, which drops a batch whose frame fails to decode,
never sees a planner error, because the planner's first error also ends the dataset.

Host h of H builds examples [h b, (h+1) b) of every global batch (b = B / H); `to_global` joins the
host slices into one jax.Array, so the global batch is the same for any number of hosts.
"""

import collections
import io
import math
import queue
import threading
import types

import numpy as np
import tensorflow as tf
from PIL import Image

from input_pipeline import crops
from input_pipeline import sequence as sequence_lib
from input_pipeline import tokenize

REASONS = ('empty_sentence', 'no_visible_frame', 'bad_box', 'box_outside_image', 'missing_frame',
           'corrupt_frame')
BATCH_KEYS = ('template', 'search', 'search_box', 'text_ids', 'text_mask', 'text_key', 'sequence_key')
MAX_ATTEMPTS = 64  # consecutive bad attempts for one example before the data is declared unusable
# The planner's output for one example: g, template/search path (raw) and bytes (TFDS), decode regions
# [2, 4], crop_and_resize boxes [2, 4], brightness [2], grayscale, search_box [4], text ids and mask [L],
# text_key, sequence_key, replacement counts [len(REASONS)], attempt.
_PLAN_TYPES = (tf.int64, tf.string, tf.string, tf.string, tf.string, tf.int32, tf.float32, tf.float32,
               tf.bool, tf.float32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int64)
DECODE_MARGIN = 4  # px decoded beyond the window: chroma upsampling is wrong at a crop's border
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2/PIL grayscale


class DataError(RuntimeError):
  """The datasets cannot give an example: MAX_ATTEMPTS attempts in a row hit bad data."""


class Interrupted(Exception):
  """iterate's `stop()` became true while the stream waited for tf.data."""


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT/JPG/DAC)
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def image_size(data):
  """(width, height) from an encoded image's header; ValueError when it is not a readable image.

  JPEG (walks the marker segments to the frame header) and PNG (IHDR) are parsed here, in a few
  microseconds; other formats go through PIL.
  """
  if data[:2] == b'\xff\xd8':
    i = 2
    while i + 9 <= len(data):
      if data[i] != 0xFF:
        raise ValueError(f'bad JPEG marker at byte {i}')
      marker = data[i + 1]
      if marker == 0xFF:  # fill byte
        i += 1
      elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
        i += 2
      elif marker in _JPEG_SOF:
        height, width = int.from_bytes(data[i + 5:i + 7], 'big'), int.from_bytes(data[i + 7:i + 9], 'big')
        break
      elif marker in (0xDA, 0xD9):
        raise ValueError('JPEG without a frame header')
      else:
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
    else:
      raise ValueError('truncated JPEG header')
  elif data[:8] == _PNG_SIGNATURE and data[12:16] == b'IHDR' and len(data) >= 24:
    width, height = int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
  else:
    try:
      with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    except Exception as e:  # PIL raises several types for bad headers
      raise ValueError(f'unreadable image: {e}') from e
  if width <= 0 or height <= 0:
    raise ValueError(f'image size {width} x {height}')
  return width, height


def file_image_size(path):
  """(width, height) of an image file from its first bytes (tf.io.read_file reads the rest in the
  graph, without the GIL); OSError when missing, ValueError when unreadable."""
  with open(path, 'rb') as f:
    data = f.read(4096)
    while True:
      try:
        return image_size(data)
      except ValueError:
        more = f.read(max(len(data), 65536))
        if not more:
          raise
        data += more


def _box_ok(box):
  x, y, w, h = (float(v) for v in box)
  return math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0


def _box_in_image(box, size):
  x, y, w, h = box
  return x < size[0] and y < size[1] and x + w > 0 and y + h > 0


def jitter_boxes(rng, boxes, center_jitter, scale_jitter):
  """TransT's jitter of (x, y, w, h) boxes [n, 4]: size x exp(N(0, s)), centre + sqrt(w h) c U(-1/2, 1/2).

  center_jitter, scale_jitter: [n] (template and search differ).
  """
  size = boxes[:, 2:4] * np.exp(rng.normal(size=(len(boxes), 2)) * scale_jitter[:, None])
  offset = (np.sqrt(size[:, 0] * size[:, 1]) * center_jitter)[:, None] * (rng.random((len(boxes), 2)) - 0.5)
  centre = boxes[:, :2] + boxes[:, 2:4] / 2.0 + offset
  return np.concatenate([centre - size / 2.0, size], axis=1)


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


class PairStream:
  """PairStream(config, sequences_by_dataset, host_id=0, num_hosts=1): host-local batches of pairs.

  `.batch(step)` and `.iterate(start_step)` give dicts of numpy arrays (b = B / num_hosts):
  template uint8 [b, Ht, Ht, 3], search uint8 [b, Hs, Hs, 3], search_box f32 [b, 4] (normalised cx, cy,
  w, h in the search crop), text_ids / text_mask int32 [b, L], text_key / sequence_key int32 [b].
  frame_reader(sequence, index) -> bytes reads frames (tfds_builders gives one for config.data.source =
  'tfds'); None (raw) = the planner reads each file's header and tf.io.read_file the file.
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
      raise ValueError(f'config.data.weights {dict(config.data.weights)} names datasets without sequences: '
                       f'{missing or "none weighted"}; given {sorted(sequences_by_dataset)}')
    self.datasets = sorted(weights)
    self._cumulative = np.cumsum([weights[d] for d in self.datasets]) / sum(weights.values())
    self._infos = []
    for name in self.datasets:
      seqs = list(sequences_by_dataset[name])
      if not seqs:
        raise ValueError(f'dataset {name!r} has no sequences')
      self._infos.append([_SequenceInfo(s, tokenizer) for s in seqs])
    self._counts = collections.Counter()
    self._example_fn = tf.function(self._example)

  @staticmethod
  def _default_reader(config, sequences_by_dataset):
    if config.data.source == 'raw':
      return None
    if config.data.source == 'tfds':
      from input_pipeline import tfds_builders
      return tfds_builders.FrameReader(config.data.tfds_dir, sequences_by_dataset)
    raise ValueError(f"config.data.source {config.data.source!r}: expected 'raw' or 'tfds'")

  # ------------------------------------------------------------------------------ plan (Python)

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
          size = file_image_size(paths[-1])
        else:
          paths.append('')
          data.append(self._read(info.seq, index))
          size = image_size(data[-1])
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
    origin = np.stack([regions[:, 2], regions[:, 0], np.zeros(2)], axis=1)  # (x0, y0, 0) of each region
    resize_boxes = crops.resize_box(windows - origin, regions[:, 1] - regions[:, 0],
                                    regions[:, 3] - regions[:, 2], self._out_sizes)
    return dict(t_path=paths[0], s_path=paths[1], t_bytes=data[0], s_bytes=data[1], windows=windows,
                regions=regions, resize_boxes=resize_boxes.astype(np.float32),
                brightness=brightness, gray=gray,
                search_box=crops.box_to_crop(boxes[1], windows[1]), ids=info.ids, mask=info.mask,
                text_key=info.text_key, sequence_key=info.seq.sequence_key,
                sequence=info.seq, frames=(int(t), int(s))), None

  def plan(self, g, first_attempt=0):
    """(plan, attempt, reasons Counter) for example g, trying attempts first_attempt, first_attempt+1, ..."""
    reasons = collections.Counter()
    for attempt in range(first_attempt, first_attempt + MAX_ATTEMPTS):
      result, reason = self._try(g, attempt)
      if result is not None:
        return result, attempt, reasons
      reasons[reason] += 1
    raise DataError(f'example {g}: {MAX_ATTEMPTS} attempts in a row hit bad data ({dict(reasons)}); '
                    'run `python -m input_pipeline.check` on the datasets')

  def _plan_np(self, g, first_attempt):
    """plan(g) as the numpy tuple _PLAN_TYPES describes."""
    plan, attempt, reasons = self.plan(int(g), int(first_attempt))
    counts = np.array([reasons[r] for r in REASONS], np.int32)
    return (np.int64(g), np.array(plan['t_path'].encode(), dtype=object),
            np.array(plan['s_path'].encode(), dtype=object),
            np.array(plan['t_bytes'], dtype=object), np.array(plan['s_bytes'], dtype=object),
            plan['regions'], plan['resize_boxes'], plan['brightness'].astype(np.float32),
            np.bool_(plan['gray']), plan['search_box'].astype(np.float32), plan['ids'], plan['mask'],
            np.int32(plan['text_key']), np.int32(plan['sequence_key']), counts, np.int64(attempt))

  def _undecodable_np(self, g):
    """A plan of example g without frame bytes: its decode fails, so tf.data drops its batch."""
    length = self.text_len
    return (np.int64(g), np.array(b'', dtype=object), np.array(b'', dtype=object),
            np.array(b'', dtype=object), np.array(b'', dtype=object), np.zeros((2, 4), np.int32),
            np.zeros((2, 4), np.float32), np.ones(2, np.float32), np.bool_(False),
            np.zeros(4, np.float32), np.zeros(length, np.int32), np.zeros(length, np.int32),
            np.int32(0), np.int32(0), np.zeros(len(REASONS), np.int32), np.int64(0))

  def _plan_step_np(self, step, failures):
    """The plans of this host's examples of global batch `step`, stacked: one Python call per batch
    (a numpy_function call per example costs more CPU than its plan). An error goes into `failures`
    (which ends the dataset, see _dataset) and the batch becomes undecodable plans, dropped."""
    indices = self.host_indices(int(step))
    try:
      rows = [self._plan_np(g, 0) for g in indices]
    except Exception as e:  # raised by iterate; tf.data would log it with a traceback, then drop it
      failures.append((int(step), e))
      rows = [self._undecodable_np(g) for g in indices]
    return tuple(np.stack([row[i] for row in rows]) for i in range(len(_PLAN_TYPES)))

  # ------------------------------------------------------------------------------ pixels (TF)

  def _pixels(self, *plan):
    """One planned example (tensors as _PLAN_TYPES) -> dict of tensors: read, decode, crop, jitter."""
    m = self.config.model
    (g, t_path, s_path, t_bytes, s_bytes, regions, boxes, brightness, gray, search_box, ids, mask, text_key,
     seq_key, counts, attempt) = plan
    regions = tf.ensure_shape(regions, [2, 4])
    boxes = tf.ensure_shape(boxes, [2, 4])
    brightness = tf.ensure_shape(brightness, [2])
    gray = tf.ensure_shape(gray, [])
    template = render(encoded_frame(t_path, t_bytes), regions[0], boxes[0], m.template_size, brightness[0], gray)
    search = render(encoded_frame(s_path, s_bytes), regions[1], boxes[1], m.search_size, brightness[1], gray)
    return dict(g=tf.ensure_shape(g, []), attempt=tf.ensure_shape(attempt, []), template=template,
                search=search, search_box=tf.ensure_shape(search_box, [4]),
                text_ids=tf.ensure_shape(ids, [self.text_len]),
                text_mask=tf.ensure_shape(mask, [self.text_len]),
                text_key=tf.ensure_shape(text_key, []), sequence_key=tf.ensure_shape(seq_key, []),
                counts=tf.ensure_shape(counts, [len(REASONS)]))

  def _example(self, g, first_attempt):
    """Example g from attempt first_attempt on, as a dict of tensors."""
    plan = tf.numpy_function(self._plan_np, [g, first_attempt], _PLAN_TYPES, stateful=False)
    return self._pixels(*plan)

  def example(self, g):
    """Example g built eagerly (dict of numpy), as tf.data builds it; a frame that fails to decode
    moves on to the next attempt, counted as 'corrupt_frame'."""
    first, extra = 0, collections.Counter()
    while True:
      _, attempt, _ = self.plan(g, first)
      try:
        example = {k: v.numpy() for k, v in self._example_fn(tf.constant(g, tf.int64),
                                                              tf.constant(first, tf.int64)).items()}
      except tf.errors.OpError:
        extra['corrupt_frame'] += 1
        first = attempt + 1
        if first > MAX_ATTEMPTS * 4:
          raise RuntimeError(f'example {g}: every attempt failed to decode')
        continue
      example['counts'] = example['counts'] + np.array([extra[r] for r in REASONS], np.int32)
      return example

  # ------------------------------------------------------------------------------ batches

  def host_indices(self, step):
    """Global example indices g [b] that this host builds for global batch `step`."""
    start = step * self.global_batch + self.host_id * self.host_batch
    return np.arange(start, start + self.host_batch, dtype=np.int64)

  def _dataset(self, start_step, failures):
    """tf.data: plans per host batch (Python, one thread, ahead) -> examples decoded in parallel ->
    host batches (examples in g order) -> batches with a failed decode dropped.

    The planner's errors go into `failures` as (step, error); the first ends the steps (take_while),
    so the dataset stops right after the steps already planned; iterate then raises the error.
    """
    planning = lambda: np.bool_(not failures)
    plan_step = lambda step: self._plan_step_np(step, failures)
    steps = tf.data.Dataset.range(start_step, 2 ** 62).take_while(
        lambda step: tf.reshape(tf.numpy_function(planning, [], tf.bool, stateful=True), []))
    plans = steps.map(lambda step: tf.numpy_function(plan_step, [step], _PLAN_TYPES, stateful=False))
    parallel = self.config.data.num_parallel_calls
    ds = plans.prefetch(2).unbatch().map(
        self._pixels, num_parallel_calls=tf.data.AUTOTUNE if parallel < 0 else parallel, deterministic=True)
    # ignore_errors after batch keeps map+batch fused (fast); a batch holding a frame that fails to
    # decode is dropped whole and rebuilt example by example, identically, in _batches.
    ds = ds.batch(self.host_batch).ignore_errors(log_warning=False)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(max(1, self.config.data.prefetch))

  def _batches(self, chunks, steps):
    """Host batches from tf.data's batches of surviving examples, rebuilding any example it dropped.

    Without drops every chunk is exactly the next host batch; after a drop, chunks are split into
    examples and regrouped by g.
    """
    pending = []  # examples read ahead, in increasing g
    for step in steps:
      want = self.host_indices(step)
      if not pending:
        chunk = next(chunks, None)
        if chunk is not None and np.array_equal(chunk['g'], want):
          yield self._finish(chunk)
          continue
        pending = _split(chunk)
      examples = []
      for g in want:
        if not pending:
          pending = _split(next(chunks, None))
        if pending and pending[0]['g'] == g:
          examples.append(pending.pop(0))
        else:
          examples.append(self.example(int(g)))  # dropped by tf.data
      yield self._finish(_stack(examples))

  def _finish(self, batch):
    """Counts the batch's replacements; returns the public fields."""
    for reason, n in zip(REASONS, np.sum(batch['counts'], axis=0)):
      if n:
        self._counts[reason] += int(n)
    return {k: batch[k] for k in BATCH_KEYS}

  def batch(self, step):
    """The host-local slice of global batch `step` (dict of numpy arrays)."""
    return self._finish(_stack([self.example(int(g)) for g in self.host_indices(step)]))

  def iterate(self, start_step=0, stop=None):
    """Host batches start_step, start_step + 1, ... (tf.data, prefetching), forever.

    Raises the planner's error (DataError: the data is unusable) where the batch it failed would
    be. tf.data is read in a daemon thread, so the caller waits in Python, where signal handlers run:
    stop() (e.g. "SIGTERM arrived"), polled while waiting, raises Interrupted.
    """
    failures = []
    chunks = _read_ahead(self._chunks(self._dataset(start_step, failures), failures), stop)

    def steps():
      step = start_step
      while True:
        yield step
        step += 1

    def batches():
      try:
        yield from self._batches(chunks, steps())
      finally:
        chunks.close()  # closing or dropping the batches ends the reading thread

    return batches()

  @staticmethod
  def _chunks(dataset, failures):
    """tf.data's batches, then the planner's error when that is what ended them (of the earliest
    step: tf.data may plan several steps at once)."""
    yield from dataset.as_numpy_iterator()
    if failures:
      raise min(failures, key=lambda failure: failure[0])[1]

  def replacements(self):
    """{reason: count} of examples replaced in the batches handed out so far."""
    return dict(self._counts)

  def truncated_sentences(self):
    """{'dataset/sequence': tokens} of the sentences longer than text.max_len tokens, which every
    example of that sequence trains on truncated to their first text.max_len tokens."""
    return {f'{info.seq.dataset}/{info.seq.name}': info.tokens for infos in self._infos
            for info in infos if info.tokens > self.text_len}


_DONE = object()


def _read_ahead(iterator, stop=None, poll_s=0.1):
  """The items of `iterator`, read one ahead in a daemon thread; its error is raised here, in
  order. While waiting, stop() (when given) is polled every poll_s seconds; true raises Interrupted.
  Closing this generator (or dropping it) ends the thread and closes `iterator`."""
  slot = queue.Queue(maxsize=1)
  closed = threading.Event()

  def hand_over(entry):
    while not closed.is_set():
      try:
        slot.put(entry, timeout=poll_s)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not hand_over((item, None)):
          break
      else:
        hand_over((_DONE, None))
    except BaseException as e:  # handed to the reader, which raises it
      hand_over((_DONE, e))
    finally:
      close = getattr(iterator, 'close', None)
      if close is not None:
        close()

  threading.Thread(target=produce, name='pair-stream', daemon=True).start()
  try:
    while True:
      try:
        item, error = slot.get(timeout=poll_s)
      except queue.Empty:
        if stop is not None and stop():
          raise Interrupted('stopped while waiting for the input') from None
        continue
      if error is not None:
        raise error
      if item is _DONE:
        return
      yield item
  finally:
    closed.set()


def _split(chunk):
  """A batched dict of numpy -> list of per-example dicts ([] for None)."""
  if chunk is None:
    return []
  return [{k: v[i] for k, v in chunk.items()} for i in range(len(chunk['g']))]


def _stack(examples):
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def encoded_frame(path, data):
  """The encoded frame: the file at `path` (read in the graph) when given, else `data`."""
  return tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: data)


def render(contents, region, box, size, brightness, gray):
  """Encoded frame -> uint8 crop [size, size, 3] with colour jitter.

  region: int32 [4] (y0, y1, x0, x1) pixels to decode; box: crops.resize_box of the window in that
  region. All geometry comes from the planner (float64 numpy), and every op here is elementwise or
  exact (the fill is an integer sum), so tf.data and an eager call give identical bytes.
  """
  image = decode_region(contents, region)
  fill = region_mean(image)
  crop = crops.crop_tf_float(image, None, size, fill, box=box)
  crop = tf.cond(gray, lambda: grayscale(crop), lambda: crop)
  # round half up and clip to 0..255: x + 0.5 clipped to [0, 255.5], truncated by the cast
  return tf.cast(tf.clip_by_value(crop * brightness + 0.5, 0.0, 255.5), tf.uint8)


def grayscale(image):
  """[..., 3] RGB -> luma repeated on 3 channels (elementwise: the same bytes in every execution mode)."""
  luma = image[..., 0:1] * _GRAY[0] + image[..., 1:2] * _GRAY[1] + image[..., 2:3] * _GRAY[2]
  return tf.concat([luma, luma, luma], axis=-1)


def region_mean(region):
  """Per-channel mean [3] float32 of a uint8 image, summed exactly in int64 (order-independent)."""
  total = tf.reduce_sum(tf.cast(region, tf.int64), axis=(0, 1))
  count = tf.cast(tf.shape(region)[0] * tf.shape(region)[1], tf.float64)
  return tf.cast(tf.cast(total, tf.float64) / count, tf.float32)


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


def decode_region(contents, region):
  """uint8 [y1-y0, x1-x0, 3] pixels of an encoded frame: JPEG decodes only that window
  (decode_and_crop_jpeg), other formats decode whole and slice."""
  y0, y1, x0, x1 = region[0], region[1], region[2], region[3]

  def jpeg():
    return tf.image.decode_and_crop_jpeg(contents, tf.stack([y0, x0, y1 - y0, x1 - x0]), channels=3)

  def other():
    return tf.io.decode_image(contents, channels=3, expand_animations=False)[y0:y1, x0:x1]

  return tf.ensure_shape(tf.cond(tf.io.is_jpeg(contents), jpeg, other), [None, None, 3])


def to_global(batch, mesh, spec):
  """Host-local batch (dict of numpy, leading dim b) -> dict of global jax.Arrays sharded by spec on mesh."""
  import jax
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}

"""The training stream (docs/design.md §2): template/search pairs as a pure function of (seed, g).

input_pipeline.plan plans each example in numpy (which frames, which windows, the jitter, the
sentence; stateless in (seed, g, attempt)); this module turns the plans into pixels and batches.
tf.data reads the files (tf.io.read_file, no GIL), decodes only each window (JPEG:
`decode_and_crop_jpeg` on the window clipped to the image plus a small margin; PNG: whole) and crops
it with `crops.crop_tf_float`; pixels outside the image take the mean of the decoded part (the frame
mean when the window covers the frame). All geometry comes from the planner, so tf.data and an eager
rebuild give identical bytes.

Bad data never shifts later samples: the planner replaces a bad attempt itself (plan.py); a frame
that only fails while decoding makes tf.data drop its batch, whose examples are then rebuilt by the
same function (the failing one with the next attempt). Every replacement is counted by reason
(`replacements()`). When the planner fails (DataError for bad data, or any other error) the stream
raises that error in the caller: tf.data's ignore_errors, which drops a batch whose frame fails to
decode, never sees a planner error, because the planner's first error also ends the dataset.

Host h of H builds examples [h b, (h+1) b) of every global batch (b = B / H); `to_global` joins the
host slices into one jax.Array, so the global batch is the same for any number of hosts.
"""

import collections
import queue
import threading

import numpy as np
import tensorflow as tf

from input_pipeline import crops
from input_pipeline import plan as plan_lib

# The planner's names that callers of the stream use (stream.DataError, stream.REASONS, ...).
DataError = plan_lib.DataError
REASONS = plan_lib.REASONS
MAX_ATTEMPTS = plan_lib.MAX_ATTEMPTS
window_region = plan_lib.window_region

BATCH_KEYS = ('template', 'search', 'search_box', 'text_ids', 'text_mask', 'text_key',
              'sequence_key')
# TF dtype of each ExamplePlan field, in the plan's order (what tf.numpy_function returns).
_PLAN_TYPES = tuple(tf.string if d is bytes else tf.as_dtype(d) for d in plan_lib.DTYPES)
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2/PIL grayscale


class Interrupted(Exception):
  """iterate's `stop()` became true while the stream waited for tf.data."""


class PairStream(plan_lib.Planner):
  """PairStream(config, sequences_by_dataset, host_id=0, num_hosts=1, frame_reader=None): host-local
  batches of pairs.

  `.batch(step)` and `.iterate(start_step)` give dicts of numpy arrays (b = B / num_hosts):
  template uint8 [b, Ht, Ht, 3], search uint8 [b, Hs, Hs, 3], search_box f32 [b, 4] (normalised
  cx, cy, w, h in the search crop), text_ids / text_mask int32 [b, L], text_key / sequence_key
  int32 [b].
  The planning (plan, host_indices, replacements, truncated_sentences, frame_reader) is
  plan.Planner's; this class adds the pixels, the batches and tf.data.
  """

  def __init__(self, config, sequences_by_dataset, host_id=0, num_hosts=1, frame_reader=None):
    super().__init__(config, sequences_by_dataset, host_id, num_hosts, frame_reader)
    self._shapes = plan_lib.shapes(self.text_len)
    self._example_fn = tf.function(self._example)

  # ------------------------------------------------------------------------------ pixels (TF)

  def _pixels(self, plan):
    """One ExamplePlan of tensors -> dict of tensors: read, decode, crop, jitter."""
    m = self.config.model
    p = plan_lib.ExamplePlan(*(tf.ensure_shape(v, s) for v, s in zip(plan, self._shapes)))
    template = render(encoded_frame(p.t_path, p.t_bytes), p.regions[0], p.resize_boxes[0],
                      m.template_size, p.brightness[0], p.gray)
    search = render(encoded_frame(p.s_path, p.s_bytes), p.regions[1], p.resize_boxes[1],
                    m.search_size, p.brightness[1], p.gray)
    return dict(g=p.g, attempt=p.attempt, template=template, search=search, search_box=p.search_box,
                text_ids=p.text_ids, text_mask=p.text_mask, text_key=p.text_key,
                sequence_key=p.sequence_key, counts=p.counts)

  def _planned(self, fn, *args):
    """tf.numpy_function(fn, args) returning an ExamplePlan (one example or a stacked batch)."""
    return plan_lib.ExamplePlan(*tf.numpy_function(fn, list(args), _PLAN_TYPES, stateful=False))

  def _example(self, g, first_attempt):
    """Example g from attempt first_attempt on, as a dict of tensors."""
    return self._pixels(self._planned(self._plan_np, g, first_attempt))

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
    plans = steps.map(lambda step: self._planned(plan_step, step))
    parallel = self.config.data.num_parallel_calls
    ds = plans.prefetch(2).unbatch().map(
        self._pixels, num_parallel_calls=tf.data.AUTOTUNE if parallel < 0 else parallel,
        deterministic=True)
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
    self._count(batch['counts'])
    return {k: batch[k] for k in BATCH_KEYS}

  def batch(self, step):
    """The host-local slice of global batch `step` (dict of numpy arrays)."""
    return self._finish(_stack([self.example(int(g)) for g in self.host_indices(step)]))

  def iterate(self, start_step=0, stop=None):
    """Host batches start_step, start_step + 1, ... (tf.data, prefetching), forever.

    Raises the planner's error (DataError: the data is unusable) where the batch it failed would
    be. tf.data is read in a daemon thread, so the caller waits in Python, where signal handlers
    run: stop() (e.g. "SIGTERM arrived"), polled while waiting, raises Interrupted.
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
  """[..., 3] RGB -> luma repeated on 3 channels (elementwise: the same bytes in every execution
  mode)."""
  luma = image[..., 0:1] * _GRAY[0] + image[..., 1:2] * _GRAY[1] + image[..., 2:3] * _GRAY[2]
  return tf.concat([luma, luma, luma], axis=-1)


def region_mean(region):
  """Per-channel mean [3] float32 of a uint8 image, summed exactly in int64 (order-independent)."""
  total = tf.reduce_sum(tf.cast(region, tf.int64), axis=(0, 1))
  count = tf.cast(tf.shape(region)[0] * tf.shape(region)[1], tf.float64)
  return tf.cast(tf.cast(total, tf.float64) / count, tf.float32)


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
  """Host-local batch (dict of numpy, leading dim b) -> dict of global jax.Arrays sharded by spec
  on mesh."""
  import jax
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}

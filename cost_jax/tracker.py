"""COST tracker (docs/design.md §4): pytracking-style `initialize` / `track`, and batched
evaluation.

`initialize(frame, box, sentence)` crops the template around the first box and runs the template
branch and the text encoder once; the caches stay on the device. `track(frame)` is one jitted step:
search crop around the last box (input_pipeline.crops, the module shared with the training stream), backbone,
visual transformer, token conv, VL transformer and heads (`COST.track_step`), then the post-processing:

  score = (1 - w) * p + w * hann,  hann = outer(hanning(grid), hanning(grid)) row-major,
          p = sigmoid(logit) or, track.score_map='softmax', exp(logit - max logit)
  box   = crop_to_box(boxes[argmax score])      (the best token's box, back to frame pixels)
  size update rate r (1 = take the new size), centre clipped to the image, w and h in
  [min_size_px, image width/height].

Everything on the device is a pure function of one slot (`init_slot`, `step_slot`); batched evaluation
vmaps them over N slots. Frames of different sizes share a batch by zero-padding to a common size
(rounded up to `track.pad_multiple`, so few shapes compile); each slot carries its true image size and
the crop reads only the valid part of its frame, so padding never changes a result. The crop enters the
network unrounded (float 0..255, see `crop_valid`).

Bad input (docs/design.md §2: bad data is normal): a frame that does not load (missing, undecodable)
is counted as a `BadFrame`, gets the previous box, and no network step uses it; a sequence whose
first frame does not load or whose first box cannot start a track (`box_ops.start_box_problem`)
fails by name, and the others go on.
"""

import collections
import concurrent.futures
import os
import struct
import time
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cost_jax import box_ops
from input_pipeline import crops


# ---------------------------------------------------------------- post-processing (pure)

def hann_window(grid):
  """[grid*grid] float32 outer(hanning(grid), hanning(grid)), row-major like the visual tokens."""
  h = np.hanning(grid)
  return np.outer(h, h).reshape(-1).astype(np.float32)


SCORE_MAPS = ('sigmoid', 'softmax')


def token_scores(logits, hann, hann_weight, score_map='sigmoid'):
  """[T] logits, [T] window -> [T] score = (1 - w) * p + w * hann.

  score_map 'sigmoid': p = sigmoid(logit), each token on its own (TransT's post-processing).
  'softmax': p = exp(logit - max logit), the token softmax that the localisation loss trains, scaled
  so the best token has 1. Sigmoids saturate: a target and a look-alike both near 1 leave the window
  to decide, whatever the sentence said; the softmax keeps their logit difference (a look-alike
  2 logits behind weighs e^-2 = 0.14 of the target).
  """
  if score_map == 'softmax':
    p = jnp.exp(logits - jnp.max(logits))
  elif score_map == 'sigmoid':
    p = jax.nn.sigmoid(logits)
  else:
    raise ValueError(f'track.score_map must be one of {SCORE_MAPS}, got {score_map!r}')
  return (1.0 - hann_weight) * p + hann_weight * hann


def select_box(outputs, hann, hann_weight, score_map='sigmoid'):
  """One slot's head outputs -> (box [4] normalised cx,cy,w,h in the search crop, score scalar).

  Dense head: the token with the best windowed score under `score_map`; the score returned is that
  token's sigmoid-windowed score, which compares across crops (the softmax map's best is always 1;
  grounding ranks windows by this score). Head 'obj' (boxes [1, 4], no logits): its box.
  """
  boxes = outputs['boxes']
  if 'logits' not in outputs:
    return boxes[0], jnp.ones((), boxes.dtype)
  best = jnp.argmax(token_scores(outputs['logits'], hann, hann_weight, score_map))
  return boxes[best], token_scores(outputs['logits'][best], jnp.asarray(hann)[best], hann_weight)


def update_box(previous, predicted, image_wh, size_update_rate, min_size_px):
  """Previous and predicted (x, y, w, h) px -> the new box.

  Centre from the prediction, clipped to [0, W] x [0, H]; size = r * predicted + (1 - r) * previous,
  clipped to [min_size_px, W] x [min_size_px, H]. image_wh: [2] (W, H) px.
  """
  previous = jnp.asarray(previous, jnp.float32)
  predicted = jnp.asarray(predicted, jnp.float32)
  image_wh = jnp.asarray(image_wh, jnp.float32)
  centre = predicted[:2] + predicted[2:] / 2
  size = size_update_rate * predicted[2:] + (1.0 - size_update_rate) * previous[2:]
  centre = jnp.clip(centre, 0.0, image_wh)
  size = jnp.clip(size, min_size_px, jnp.maximum(image_wh, min_size_px))
  return jnp.concatenate([centre - size / 2, size])


# ---------------------------------------------------------------- one slot, on the device

def crop_valid(frame, image_wh, window, out_size):
  """crops.crop_jax_float of the valid part [:H', :W'] of a zero-padded frame -> float32 [S, S, 3].

  frame uint8 [H, W, 3], image_wh [2] = (W', H') px. Outside the valid part the frame reads as its
  per-channel mean (crop_jax's padding rule). The mean is an exact integer sum divided by W'H' (frames up
  to 16.8 Mpx), so it does not depend on how much padding there is. The crop stays unrounded (values
  0..255; the model normalises uint8 and float alike): rounding to uint8 flips the many bilinear samples
  that land exactly on .5 whenever XLA fuses the arithmetic differently (jitted vs op by op, batched vs
  single), and a one-grey-level flip moves the predicted box by 1e-3 px.
  """
  rows = jnp.arange(frame.shape[0])[:, None] < image_wh[1]
  cols = jnp.arange(frame.shape[1])[None, :] < image_wh[0]
  valid = (rows & cols)[..., None]
  total = jnp.sum(jnp.where(valid, frame, 0).astype(jnp.uint32), axis=(0, 1))
  fill = total.astype(jnp.float32) / (image_wh[0] * image_wh[1])
  image = jnp.where(valid, frame.astype(jnp.float32), fill)
  return crops.crop_jax_float(image, window, out_size, fill)


class SlotFunctions:
  """The tracker's device functions for ONE slot (unbatched); vmap them for N slots.

  A slot's state: {'template': template cache, 'text': text cache (the model's pytrees, batch 1),
  'box': [4] float32 (x, y, w, h) px, the last box}.
  """

  def __init__(self, config, model):
    self.config = config
    self.model = model
    self.apply = model.apply  # (variables, *args, method=...) -> outputs; replaceable in tests
    self.hann = hann_window(config.model.token.grid)

  def crop(self, frame, image_wh, box, factor, min_side, out_size):
    """Window around box [4] px -> (crop float32 [S, S, 3] in 0..255, window [3] (cx, cy, side) px)."""
    window = crops.crop_window(box, factor, min_side, self.config.crop.size_rule)
    return crop_valid(frame, image_wh, window, out_size), window

  def init_slot(self, variables, frame, image_wh, box, text_ids, text_mask):
    """frame uint8 [H, W, 3], image_wh [2], box [4] (x, y, w, h) px, text [L] -> slot state."""
    c, m = self.config.crop, self.config.model
    box = jnp.asarray(box, jnp.float32)
    template, _ = self.crop(frame, image_wh, box, c.template_factor, c.template_min_side_px,
                            m.template_size)
    template_cache, text_cache = self.encode(variables, template, text_ids, text_mask)
    return {'template': template_cache, 'text': text_cache, 'box': box}

  def encode(self, variables, template, text_ids, text_mask):
    """Template [St, St, 3] (0..255) and text [L] -> (template cache, text cache), batch 1."""
    template_cache = self.apply(variables, template[None], method=type(self.model).encode_template)
    text_cache = self.apply(variables, text_ids[None], text_mask[None],
                            method=type(self.model).encode_text)
    return template_cache, text_cache

  def predict(self, variables, template_cache, text_cache, frame, image_wh, window):
    """The search crop at window [3] (cx, cy, side) px -> (box [4] (x, y, w, h) px, score).

    The best token by windowed score (select_box), its box mapped back to frame pixels; not clipped.
    """
    m, k = self.config.model, self.config.track
    search = crop_valid(frame, image_wh, window, m.search_size)
    outputs = self.apply(variables, template_cache, text_cache, search[None],
                         method=type(self.model).track_step)
    outputs = jax.tree.map(lambda a: a[0], outputs)
    box_norm, score = select_box(outputs, self.hann, k.hann_weight, k.score_map)
    return crops.crop_to_box(box_norm, window, m.search_size).astype(jnp.float32), score

  def step_slot(self, variables, state, frame, image_wh):
    """One tracked frame: (state, frame uint8 [H, W, 3], image_wh [2]) -> (state, box [4], score)."""
    c, k = self.config.crop, self.config.track
    window = crops.crop_window(state['box'], c.search_factor, c.search_min_side_px, c.size_rule)
    predicted, score = self.predict(variables, state['template'], state['text'], frame, image_wh,
                                    window)
    box = update_box(state['box'], predicted, image_wh, k.size_update_rate, k.min_size_px)
    return dict(state, box=box), box, score


# ---------------------------------------------------------------- frames on the host

def load_frame(path):
  """Image file -> uint8 [H, W, 3] RGB."""
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))


# What reading or decoding one image file raises (PIL: UnidentifiedImageError and truncation are
# OSErrors, a broken PNG chunk a SyntaxError, a damaged zlib stream zlib.error).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)

# One frame that did not load: frame = its 1-based number (the result file's line), path, reason.
BadFrame = collections.namedtuple('BadFrame', ['frame', 'path', 'reason'])


class StartError(ValueError):
  """A sequence that cannot start: its first frame does not load or its first box is invalid."""


def try_load(load, path):
  """(frame, None), or (None, reason) when load(path) raises one of DECODE_ERRORS."""
  try:
    return load(path), None
  except DECODE_ERRORS as e:
    return None, f'unreadable frame ({type(e).__name__}: {e})'


def start_frame(load, path, box):
  """The first frame of a track, or StartError saying why the track cannot start there.

  box (x, y, w, h) px must pass box_ops.start_box_problem in that frame.
  """
  frame, reason = try_load(load, path)
  if reason:
    raise StartError(f'first frame {path}: {reason}')
  problem = box_ops.start_box_problem(box, (frame.shape[1], frame.shape[0]))
  if problem:
    raise StartError(f'invalid first box: {problem}')
  return frame


def log_bad_frame(name, bad):
  logging.warning('%s: frame %d (%s): %s; the previous box is carried over', name, bad.frame,
                  bad.path, bad.reason)


def track_files(initialize, track, paths, box, load=load_frame, name=''):
  """One sequence from frame files: (boxes [N, 4] float64 px (frame 0 = box), [BadFrame]).

  initialize(frame, box) starts the track, track(frame) -> box [4] px steps it. A frame that does
  not load keeps the previous box and is not stepped on (logged, returned). Raises StartError when
  the first frame does not load or box cannot start a track.
  """
  initialize(start_frame(load, paths[0], box), box)
  boxes, bad = [np.asarray(box, np.float64)], []
  for k, path in enumerate(paths[1:], 2):
    frame, reason = try_load(load, path)
    if reason:
      bad.append(BadFrame(k, path, reason))
      log_bad_frame(name or os.path.dirname(path), bad[-1])
      boxes.append(boxes[-1])
    else:
      boxes.append(np.asarray(track(frame), np.float64))
  return np.stack(boxes), bad


def padded_shape(shapes, multiple):
  """[(H, W), ...] -> (H, W) covering all of them, each rounded up to `multiple` px."""
  h = max(s[0] for s in shapes)
  w = max(s[1] for s in shapes)
  return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def pad_frame(frame, shape):
  """uint8 [h, w, 3] -> uint8 [H, W, 3], zero-padded at the bottom and right."""
  out = np.zeros(tuple(shape) + (3,), np.uint8)
  out[:frame.shape[0], :frame.shape[1]] = frame
  return out


def image_wh(frame):
  """uint8 [H, W, 3] -> float32 [2] (W, H)."""
  return np.array([frame.shape[1], frame.shape[0]], np.float32)


class _SlotTracker:
  """What Tracker and BatchedEvaluator share: config's model as SlotFunctions, the variables, the
  tokenizer, the jitted slot initialisation and the sentence-only start (built when first asked)."""

  def __init__(self, config, variables, tokenizer, model, use_language):
    from cost_jax.models import cost  # the network is only needed where the tracker runs
    self.fns = SlotFunctions(config, model or cost.COST(config.model))
    self.config = config
    self.variables = variables
    self.tokenizer = tokenizer
    self.use_language = use_language
    self._init = jax.jit(self.fns.init_slot)
    self._grounder = None

  def _encode(self, sentence):
    """(ids, mask) of the sentence, or of the empty one when use_language=False."""
    return self.tokenizer.encode(sentence if self.use_language else '')

  def grounder(self):
    """cost_jax.grounding.Grounder over this tracker's model and variables (ValueError when
    use_language=False: a sentence-only start needs the sentence)."""
    if not self.use_language:
      raise ValueError('a sentence-only start needs the sentence (use_language=False)')
    if self._grounder is None:
      from cost_jax import grounding
      self._grounder = grounding.Grounder(self.fns, self.variables, self.tokenizer)
    return self._grounder


# ---------------------------------------------------------------- one sequence

class Tracker(_SlotTracker):
  """pytracking-style tracker for one sequence at a time.

    tracker = Tracker(config, variables, tokenizer)
    tracker.initialize(frame, [x, y, w, h], 'kite flying in the sky')
    tracker.track(frame)  # -> {'target_bbox': [x, y, w, h], 'score': float}
  """

  def __init__(self, config, variables, tokenizer, model=None, use_language=True):
    super().__init__(config, variables, tokenizer, model, use_language)
    self._step = jax.jit(self.fns.step_slot)
    self.state = None

  def _pad(self, frame):
    """Frames are zero-padded to a multiple of track.pad_multiple: one compilation serves many sizes."""
    return pad_frame(frame, padded_shape([frame.shape], self.config.track.pad_multiple))

  def initialize(self, frame, box, sentence=''):
    """frame uint8 [H, W, 3], box (x, y, w, h) px, sentence str -> {'target_bbox': box}."""
    ids, mask = self._encode(sentence)
    self.state = self._init(self.variables, self._pad(frame), image_wh(frame),
                            np.asarray(box, np.float32), ids, mask)
    return {'target_bbox': [float(v) for v in box]}

  def track(self, frame):
    """frame uint8 [H, W, 3] -> {'target_bbox': [x, y, w, h] px, 'score': best windowed score}."""
    self.state, box, score = self._step(self.variables, self.state, self._pad(frame),
                                        image_wh(frame))
    return {'target_bbox': [float(v) for v in np.asarray(box)], 'score': float(score)}

  def ground(self, frame, sentence):
    """Sentence-only start (cost_jax.grounding): frame uint8 [H, W, 3] -> {'target_bbox': [x, y, w, h]
    px, 'score': its windowed score, 'windows': how many windows were searched}. Pass the box to
    `initialize` to start the track from it."""
    found = self.grounder().ground(frame, sentence)
    return {'target_bbox': [float(v) for v in found.box], 'score': found.score,
            'windows': found.num_windows}

  def track_files(self, paths, box, sentence='', load=load_frame):
    """A sequence of frame files -> (boxes [N, 4] px, [BadFrame]); see `track_files`."""
    return track_files(lambda frame, b: self.initialize(frame, b, sentence),
                       lambda frame: self.track(frame)['target_bbox'], paths, box, load)


# ---------------------------------------------------------------- many sequences, batched

SequenceResult = collections.namedtuple('SequenceResult',
                                        ['sequence', 'boxes', 'times', 'bad_frames', 'failure'],
                                        defaults=((), None))
SequenceResult.__doc__ = """One sequence's outcome: boxes [N, 4] float64 px, times [N] s, bad_frames
(BadFrame, ...) that kept the previous box; or failure (the reason, boxes and times None)."""


def _set_slot(stacked, one, index):
  """Write one slot's state (unbatched pytree) into slot `index` of the stacked [N, ...] state."""
  return jax.tree.map(lambda s, o: s.at[index].set(o), stacked, one)


class BatchedEvaluator(_SlotTracker):
  """N slots advance in lock-step under one jitted, vmapped step; a finished slot gets the next sequence.

  Frames of one step are zero-padded to a common shape rounded up to `config.track.pad_multiple`
  (each slot keeps its true size, so results do not depend on the padding). An idle slot (no sequence
  left) steps on a blank frame and its output is dropped. Each slot's next frame is decoded on a thread
  while the device runs the current step. Per-frame time = the step's wall time (frame decoding
  included) divided by the number of busy slots (amortised); frame 0's time is the slot's initialisation.
  A frame that does not load steps its slot on a blank frame like an idle slot, and the slot keeps
  its previous box; a sequence that cannot start is yielded with its failure and its slot takes the
  next one.

  init='box' starts each sequence from its first ground-truth box; init='sentence' from the sentence
  alone (cost_jax.grounding searches frame 0; the ground truth is never read), and frame 0's result
  is the grounded box.
  """

  def __init__(self, config, variables, tokenizer, num_slots=None, model=None, use_language=True,
               load=load_frame, init='box'):
    if init not in ('box', 'sentence'):
      raise ValueError(f"init={init!r}: expected 'box' or 'sentence'")
    super().__init__(config, variables, tokenizer, model, use_language)
    self.num_slots = num_slots or config.track.batch_slots
    self.load = load
    self.sentence_start = init == 'sentence'
    if self.sentence_start:
      self.grounder()  # built now: a tracker without language fails here, not at a sequence
    self._step = jax.jit(jax.vmap(self.fns.step_slot, in_axes=(None, 0, 0, 0)))
    self._set = jax.jit(_set_slot, donate_argnums=0)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.num_slots)

  def _start_box(self, sequence, frame):
    """Frame 0's box [4] px: the ground truth, or the sentence-only start's (init='sentence')."""
    if not self.sentence_start:
      return np.asarray(sequence.boxes[0], np.float64)
    return self.grounder().ground(frame, sequence.sentence).box

  def _start_frame(self, sequence):
    """Frame 0, or StartError: with init='box' its ground-truth box must be able to start a track;
    with init='sentence' only the frame must load (the ground truth is not used)."""
    if not self.sentence_start:
      return start_frame(self.load, sequence.frames[0], sequence.boxes[0])
    frame, reason = try_load(self.load, sequence.frames[0])
    if reason:
      raise StartError(f'first frame {sequence.frames[0]}: {reason}')
    return frame

  def _start(self, state, index, sequence):
    """Initialise `sequence` into slot `index` -> (state, seconds, frame 0's box [4] px); StartError
    when it cannot start."""
    tic = time.perf_counter()
    frame = self._start_frame(sequence)
    shape = padded_shape([frame.shape], self.config.track.pad_multiple)
    ids, mask = self._encode(sequence.sentence)
    box = self._start_box(sequence, frame)
    one = self._init(self.variables, pad_frame(frame, shape), image_wh(frame),
                     np.asarray(box, np.float32), ids, mask)
    if state is None:
      state = jax.tree.map(lambda a: jnp.broadcast_to(a, (self.num_slots,) + a.shape), one)
    else:
      state = self._set(state, one, index)
    jax.block_until_ready(state)
    return state, time.perf_counter() - tic, box

  def run(self, sequences, on_frames=None):
    """Yields a SequenceResult(sequence, boxes [N, 4] float64 px, times [N] s) as each one ends.

    Frame 0's box is the initialisation: the ground truth, as in pytracking's results, or with
    init='sentence' the grounded box. A sequence that cannot start is yielded as
    SequenceResult(sequence, None, None, (), reason).
    on_frames(n), when given, is called with the number of frames each initialisation or step did.
    """
    on_frames = on_frames or (lambda n: None)
    queue = collections.deque(sequences)
    slots = [None] * self.num_slots  # per slot: {'sequence', 'next', 'boxes', 'times'} or None
    state = None
    while True:
      for i in range(self.num_slots):
        while slots[i] is None and queue:
          sequence = queue.popleft()
          try:
            state, seconds, box = self._start(state, i, sequence)
          except StartError as e:
            logging.warning('%s: not tracked: %s', sequence.name, e)
            yield SequenceResult(sequence, None, None, (), str(e))
            continue
          slots[i] = {'sequence': sequence, 'next': 1, 'bad': [],
                      'boxes': [np.asarray(box, np.float64)], 'times': [seconds]}
          on_frames(1)
          if len(sequence) == 1:
            yield self._result(slots[i])
            slots[i] = None
      busy = [i for i in range(self.num_slots) if slots[i] is not None]
      if not busy:
        return
      tic = time.perf_counter()
      frames = {i: self._frame(slots[i], slots[i]['next']) for i in busy}
      frames = {i: f for i, f in frames.items() if f is not None}  # None: did not load
      if frames:  # dispatched, not waited on
        carried = {i: slots[i]['boxes'][-1] for i in busy if i not in frames}
        state, boxes = self._step_frames(state, frames, carried)
      for i in busy:  # the next frames decode while the device works
        if slots[i]['next'] + 1 < len(slots[i]['sequence']):
          self._prefetch(slots[i], slots[i]['next'] + 1)
      boxes = np.asarray(boxes, np.float64) if frames else None
      seconds = (time.perf_counter() - tic) / len(busy)
      on_frames(len(busy))
      for i in busy:
        slot = slots[i]
        slot['boxes'].append(boxes[i] if i in frames else slot['boxes'][-1])
        slot['times'].append(seconds)
        slot['next'] += 1
        if slot['next'] == len(slot['sequence']):
          yield self._result(slot)
          slots[i] = None

  def _step_frames(self, state, frames, carried):
    """One vmapped step on {slot: frame} -> (state, boxes [N, 4] on the device).

    Slots without a frame step on a blank one: idle slots, and the slots in carried {slot: previous
    box [4] px} (their frame did not load), which then get that box back in the state (an extra
    dispatch only then, no sync).
    """
    shape = padded_shape([f.shape for f in frames.values()], self.config.track.pad_multiple)
    blank = np.zeros(shape + (3,), np.uint8)
    batch = np.stack([pad_frame(frames[i], shape) if i in frames else blank
                      for i in range(self.num_slots)])
    sizes = np.stack([image_wh(frames[i]) if i in frames else image_wh(blank)
                      for i in range(self.num_slots)])
    state, boxes, _ = self._step(self.variables, state, batch, sizes)
    if carried:
      index = np.asarray(list(carried))
      previous = np.asarray(list(carried.values()), np.float32)
      state = dict(state, box=state['box'].at[index].set(previous))
    return state, boxes

  def _prefetch(self, slot, index):
    """Start decoding frame `index` of the slot's sequence on the loader threads."""
    slot['loading'] = (index, self._pool.submit(try_load, self.load, slot['sequence'].frames[index]))

  def _frame(self, slot, index):
    """Frame `index` of the slot's sequence (the prefetched one, else decoded now), or None when it
    does not load (recorded in slot['bad'] and logged)."""
    loading = slot.pop('loading', None)
    if loading is not None and loading[0] == index:
      frame, reason = loading[1].result()
    else:
      frame, reason = try_load(self.load, slot['sequence'].frames[index])
    if reason:
      slot['bad'].append(BadFrame(index + 1, slot['sequence'].frames[index], reason))
      log_bad_frame(slot['sequence'].name, slot['bad'][-1])
    return frame

  @staticmethod
  def _result(slot):
    return SequenceResult(slot['sequence'], np.stack(slot['boxes']), np.asarray(slot['times']),
                          tuple(slot['bad']))

"""Synthetic small-object vision-language tracking videos, in the LaSOT and VL-SOT layouts
(docs/design.md §6).

  python -m input_pipeline.synthetic --out=data/synth --format=vlsot --videos=40 --seed=0

Each video: a textured background seen by a panning camera, one small target (6-22 px) drawn as a
saturated colour + shape, moving mostly in one direction (reflected at the borders), with motion blur
along its velocity. Its sentence names colour, shape and initial motion ("red circle moving left").
Clutter: muted background blobs and up to `clutter_objects` other shapes of *other* colours.

Stated speed distribution (relative speed = centre displacement per frame / sqrt(w*h) of the target,
VL-SOT500's "relative speed"): a video is 'fast' with probability `fast_fraction` (default 0.1), its
speed then drawn from U(2.2, 3.5) target sizes per frame -- beyond the +-2 sizes a factor-4 search window
follows; otherwise U(0.1, 1.2). The realised per-frame speeds are reported on stdout and in
<out>/generator_report.json.

Hard cases, each marked in the annotation files:
  * full occlusion: a static (world-fixed) opaque occluder on the target's path; frames where it covers
    the whole box are occluded (LaSOT full_occlusion.txt; VL-SOT absent.txt, box 0,0,0,0);
  * out of view: the target leaves through a border and comes back; frames with < 25% of its box inside
    the image are out of view (LaSOT out_of_view.txt; VL-SOT absent.txt, box 0,0,0,0). A partly visible
    target is annotated with the part of its box inside the image;
  * twins (`twin_fraction`, default 0.3): language-critical videos. A look-alike distractor is next
    to the target in frame 1 that the first-frame template cannot tell apart from it, and the
    sentence names the cue that does. The cue decides the kind
    (`twin_kinds`, default position 0.4, colour 0.4, motion 0.2):
      - 'position': an identical twin follows close behind the target in formation (1.15-1.4
        target sides between centres, `position_gap`) at 0.75-1.1 target sizes a frame
        (`position_speed`), so after every step the twin is nearer than the target to where the
        target was: a tracker that prefers the old position is drawn to the twin, and the sentence
        names the side ("red circle to the right of an identical circle, moving right");
      - 'colour': the same formation with a twin of the same shape and size in another colour, and
        the video starts in grey (its first 1-6 frames desaturated, `grey_frames`: a camera that
        starts in low light), so the first-frame template shows shape and size but not colour; the
        sentence names the colour as in every video ("red circle moving right");
      - 'motion': an identical twin starts behind the target and moves the opposite way ("red
        circle moving left, not the identical one moving right").
    Position and colour can be seen in a single frame pair (what COST's step sees); the direction
    of motion cannot (blur is symmetric), so 'motion' measures what a tracker without memory cannot
    read. Twin videos have no occluder, leave no border and are never fast, so the cue
    is what they test. All twins: attributes similar_object = language_ambiguity = 1; the cue is in
    generator_report.json ('cue'), which the synthetic reader turns into the attributes
    cue_position / cue_colour / cue_motion.

Layouts (parsed by input_pipeline.readers):
  lasot: <out>/<shape>/<shape>-<n>/img/00000001.jpg, groundtruth.txt, full_occlusion.txt,
         out_of_view.txt, nlp.txt; invisible frames have the box 0,0,0,0.
  vlsot: <out>/<name>/imgs/000001.jpg, groundtruth_rect.txt (0,0,0,0 = absent), language.txt,
         absent.txt (one 0/1 a line), attributes.txt (one comma row of 17 0/1 values, in the order of
         ATTRIBUTE_NAMES, also written to <out>/attribute_names.txt), relative_speed.txt (the video's
         mean relative speed).
Both: <out>/train.txt and <out>/test.txt (held-out names, `test_fraction` spread evenly),
<out>/generator_report.json. Video i depends only on (seed, i), never on the number of videos.
"""

import dataclasses
import json
import math
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

# Saturated colours, far from the muted background and from each other.
COLOURS = {
    'red': (225, 30, 30),
    'green': (30, 200, 45),
    'blue': (35, 75, 240),
    'yellow': (245, 225, 20),
    'magenta': (225, 35, 225),
    'cyan': (25, 215, 230),
    'orange': (255, 140, 0),
}
SHAPES = ('circle', 'square', 'triangle', 'diamond', 'cross')
DIRECTIONS = {'left': (-1.0, 0.0), 'right': (1.0, 0.0), 'up': (0.0, -1.0), 'down': (0.0, 1.0)}
OPPOSITE = {'left': 'right', 'right': 'left', 'up': 'down', 'down': 'up'}
RELATIONS = {'left': 'to the left of', 'right': 'to the right of', 'up': 'above', 'down': 'below'}
TWIN_KINDS = ('position', 'colour', 'motion')  # the cue that tells target and twin apart
CUE_ATTRIBUTES = {kind: f'cue_{kind}' for kind in TWIN_KINDS}  # added by the synthetic reader

# The 17 values of the synthetic VL-SOT attributes.txt, in file order (0/1 each).
ATTRIBUTE_NAMES = (
    'full_occlusion', 'partial_occlusion', 'out_of_view', 'fast_motion', 'motion_blur',
    'camera_motion', 'background_clutter', 'similar_object', 'scale_variation',
    'aspect_ratio_change', 'low_resolution', 'illumination_variation', 'deformation', 'rotation',
    'viewpoint_change', 'tiny_object', 'language_ambiguity')

FAST_SPEED = (2.2, 3.5)  # target sizes per frame
NORMAL_SPEED = (0.1, 1.2)


@dataclasses.dataclass(frozen=True)
class Options:
  """Generator settings; defaults keep the task learnable by the CPU demo."""
  width: int = 320
  height: int = 240
  min_frames: int = 30
  max_frames: int = 100
  min_size: float = 6.0  # px, target side
  max_size: float = 22.0
  fast_fraction: float = 0.1
  twin_fraction: float = 0.3
  twin_kinds: tuple = (('position', 0.4), ('colour', 0.4), ('motion', 0.2))
  position_gap: tuple = (1.15, 1.4)  # position, colour: target sides between the centres, behind
  position_speed: tuple = (0.75, 1.1)  # position, colour: target sizes a frame
  grey_frames: tuple = (1, 6)  # colour: the first k frames are desaturated, k uniform in this range
  occlusion_fraction: float = 0.15
  out_of_view_fraction: float = 0.1
  clutter_objects: int = 2  # at most, other-coloured shapes
  camera_speed: float = 1.5  # px per frame, at most
  test_fraction: float = 0.2
  jpeg_quality: int = 95
  name_prefix: str = 'synth'  # vlsot layout: video i is <name_prefix>_<i:04d>


@dataclasses.dataclass
class Video:
  """One generated video, before it is written.

  frames: list of uint8 [H, W, 3]; boxes: [N, 4] true (x, y, w, h) px, also off-image;
  annotation: [N, 4] as written (clipped to the image; 0,0,0,0 when invisible); visible, occluded,
  out_of_view: [N] bool; clean: [N] bool, target fully inside the image and overlapped by nothing;
  twin_boxes: [N, 4] true boxes of the look-alike distractor (None without one); twin_colour: its
  colour name; grey_frames: how many first frames are desaturated (colour twins).
  """
  index: int
  name: str
  shape: str
  colour: str
  direction: str
  sentence: str
  frames: list
  boxes: np.ndarray
  annotation: np.ndarray
  visible: np.ndarray
  occluded: np.ndarray
  out_of_view: np.ndarray
  clean: np.ndarray
  fast: bool
  twin: str  # '' or one of TWIN_KINDS
  attributes: dict
  twin_boxes: np.ndarray = None
  twin_colour: str = ''
  grey_frames: int = 0


# ------------------------------------------------------------------------- drawing


def _shape_polygons(shape, l, t, r, b):
  """Polygons (lists of (x, y)) and ellipses filling the box [l, r] x [t, b] tightly."""
  cx, cy = (l + r) / 2, (t + b) / 2
  if shape == 'circle':
    return [], [(l, t, r, b)]
  if shape == 'square':
    return [[(l, t), (r, t), (r, b), (l, b)]], []
  if shape == 'triangle':
    return [[(cx, t), (r, b), (l, b)]], []
  if shape == 'diamond':
    return [[(cx, t), (r, cy), (cx, b), (l, cy)]], []
  if shape == 'cross':
    hw, hh = 0.2 * (r - l), 0.2 * (b - t)
    return [[(cx - hw, t), (cx + hw, t), (cx + hw, b), (cx - hw, b)],
            [(l, cy - hh), (r, cy - hh), (r, cy + hh), (l, cy + hh)]], []
  raise ValueError(f'unknown shape {shape!r}')


def shape_alpha(shape, box, shift=(0.0, 0.0), blur_steps=1, supersample=4):
  """Anti-aliased coverage of a shape, with motion blur.

  box: (x, y, w, h) px, sub-pixel; shift: (dx, dy) px, the blur streak (centred on box).
  Returns (x0, y0, alpha float32 [h', w'] in [0, 1]) covering pixels x0.., y0...
  """
  x, y, w, h = box
  dx, dy = shift
  x0 = int(math.floor(x - abs(dx) / 2)) - 1
  y0 = int(math.floor(y - abs(dy) / 2)) - 1
  x1 = int(math.ceil(x + w + abs(dx) / 2)) + 1
  y1 = int(math.ceil(y + h + abs(dy) / 2)) + 1
  s = supersample
  acc = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.float32)
  for k in range(blur_steps):
    f = (k + 0.5) / blur_steps - 0.5 if blur_steps > 1 else 0.0
    l, t = (x + f * dx - x0) * s, (y + f * dy - y0) * s
    canvas = Image.new('L', (acc.shape[1], acc.shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    polygons, ellipses = _shape_polygons(shape, l, t, l + w * s, t + h * s)
    for polygon in polygons:
      draw.polygon(polygon, fill=255)
    for ellipse in ellipses:
      draw.ellipse(ellipse, fill=255)
    acc += np.asarray(canvas, np.float32)
  acc /= 255.0 * blur_steps
  alpha = acc.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
  return x0, y0, alpha


def composite(frame, x0, y0, alpha, colour):
  """frame[y0:, x0:] <- blend with a flat colour by alpha, clipped to the frame (in place)."""
  height, width = frame.shape[:2]
  ax0, ay0 = max(0, -x0), max(0, -y0)
  fx0, fy0 = max(0, x0), max(0, y0)
  fx1, fy1 = min(width, x0 + alpha.shape[1]), min(height, y0 + alpha.shape[0])
  if fx1 <= fx0 or fy1 <= fy0:
    return
  a = alpha[ay0:ay0 + fy1 - fy0, ax0:ax0 + fx1 - fx0, None]
  region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
  frame[fy0:fy1, fx0:fx1] = np.round(region * (1 - a) + np.asarray(colour, np.float32) * a)


def background_texture(rng, height, width):
  """Muted, low-saturation texture uint8 [height, width, 3]: smooth shading, grain and blobs."""
  def smooth_noise(cell, channels):
    gh, gw = height // cell + 2, width // cell + 2
    small = rng.random((gh, gw, channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(small[..., c]).resize(
        (gw * cell, gh * cell), Image.BILINEAR))[:height, :width] for c in range(channels)]
    return np.stack(planes, -1)

  base = 70 + 110 * smooth_noise(48, 1)
  tint = (smooth_noise(64, 3) - 0.5) * 30
  grain = (smooth_noise(4, 1) - 0.5) * 40
  texture = np.clip(base + tint + grain, 0, 255).astype(np.uint8)
  image = Image.fromarray(texture)
  draw = ImageDraw.Draw(image)
  for _ in range(int(height * width / 2500)):
    grey = rng.uniform(60, 190)
    fill = tuple(int(grey + rng.uniform(-18, 18)) for _ in range(3))
    l, t = rng.uniform(0, width), rng.uniform(0, height)
    w, h = rng.uniform(8, 60), rng.uniform(8, 60)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((l, t, l + w, t + h), fill=fill)
  return np.asarray(image).copy()


# ------------------------------------------------------------------------- motion


def _group_extent(centres, sizes):
  """Bounding box (l, t, r, b) of boxes given by centres [k, 2] and sizes [k, 2]."""
  lo = (centres - sizes / 2).min(axis=0)
  hi = (centres + sizes / 2).max(axis=0)
  return lo[0], lo[1], hi[0], hi[1]


def simulate_group(rng, n, start, velocity, offsets, size_fn, frame_wh, reflect_fn):
  """Centres [n, k, 2] of k boxes moving together (fixed offsets [k, 2] from the lead box).

  The lead velocity gets a smooth perpendicular wobble. At an image border reflect_fn(t, extent)
  decides: 'bounce' (mirror the position and the velocity), 'turn' (velocity only), '' (go on).
  """
  width, height = frame_wh
  centre = np.asarray(start, np.float64)
  vel = np.asarray(velocity, np.float64)
  speed = np.linalg.norm(vel)
  perp = np.array([-vel[1], vel[0]]) / max(speed, 1e-9)
  wobble = 0.0
  out = np.zeros((n, len(offsets), 2))
  for t in range(n):
    sizes = np.repeat(size_fn(t)[None], len(offsets), 0)
    centres = centre + offsets
    out[t] = centres
    wobble = float(np.clip(0.8 * wobble + rng.normal(0, 0.08), -0.25, 0.25))
    step = vel + wobble * speed * perp
    centre = centre + step
    l, tp, r, b = _group_extent(centre + offsets, sizes)
    action = reflect_fn(t, (l, tp, r, b))
    for axis, low, high, limit in ((0, l, r, width), (1, tp, b, height)):
      if (low < 0 and step[axis] < 0) or (high > limit and step[axis] > 0):
        if action:
          vel[axis], perp[axis] = -vel[axis], -perp[axis]
        if action == 'bounce':  # mirror at the border: the group never leaves the image
          centre[axis] += -2 * low if low < 0 else 2 * (limit - high)
  return out


def _inside_fraction(box, width, height):
  """Fraction of box (x, y, w, h) area inside [0, width] x [0, height]."""
  x, y, w, h = box
  iw = max(0.0, min(x + w, width) - max(x, 0.0))
  ih = max(0.0, min(y + h, height) - max(y, 0.0))
  return iw * ih / max(w * h, 1e-9)


def _clip_box(box, width, height):
  x, y, w, h = box
  x0, y0 = max(x, 0.0), max(y, 0.0)
  x1, y1 = min(x + w, float(width)), min(y + h, float(height))
  return np.array([x0, y0, x1 - x0, y1 - y0])


def _contains(outer, inner):
  """outer, inner: (x, y, w, h); inner lies entirely inside outer."""
  return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[0] + inner[2] <= outer[0] + outer[2]
          and inner[1] + inner[3] <= outer[1] + outer[3])


def _overlaps(a, b, margin=1.0):
  return (a[0] - margin < b[0] + b[2] and b[0] - margin < a[0] + a[2] and
          a[1] - margin < b[1] + b[3] and b[1] - margin < a[1] + a[3])


def relative_speeds(boxes):
  """Per-frame relative speed [N-1]: centre displacement / sqrt(w*h) of the earlier box."""
  centres = boxes[:, :2] + boxes[:, 2:] / 2
  step = np.linalg.norm(np.diff(centres, axis=0), axis=1)
  return step / np.sqrt(boxes[:-1, 2] * boxes[:-1, 3])


class LeaveAndReturn:
  """reflect_fn of an out-of-view video: bounce until a chosen frame, then let the target leave
  through the next border it meets, stay outside a few frames, turn back, and bounce again once
  fully inside."""

  def __init__(self, rng, n, frame_wh):
    self.exit_after = int(rng.integers(int(0.2 * n), int(0.5 * n) + 1))
    self.return_after = int(rng.integers(3, 11))
    self.frame_wh = frame_wh
    self.mode, self.out_frames = 'in', 0

  def __call__(self, t, extent):
    if t < self.exit_after:
      return 'bounce'
    l, tp, r, b = extent
    inside = _inside_fraction((l, tp, r - l, b - tp), *self.frame_wh)
    if self.mode == 'in':
      self.mode = 'leaving'
    if self.mode == 'leaving' and inside == 0.0:
      self.mode = 'out'
    if self.mode == 'out':
      self.out_frames += 1
      if self.out_frames < self.return_after:
        return ''
      self.mode = 'returning'
      return 'turn'
    if self.mode == 'returning' and inside > 1 - 1e-9:
      self.mode = 'done'
    return 'bounce' if self.mode == 'done' else ''


def clutter_objects(rng, n, target_colour, o, avoid=None):
  """Up to o.clutter_objects other shapes, never in the target's colour (nor `avoid`'s):
  [(shape, colour, boxes)]."""
  others = [c for c in COLOURS if c not in (target_colour, avoid)]
  objects = []
  for _ in range(int(rng.integers(0, o.clutter_objects + 1))):
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(others))
    side = rng.uniform(o.min_size, o.max_size)
    start = np.array([rng.uniform(side, o.width - side), rng.uniform(side, o.height - side)])
    angle = rng.uniform(0, 2 * math.pi)
    velocity = np.array([math.cos(angle), math.sin(angle)]) * rng.uniform(0.1, 1.0) * side
    path = simulate_group(rng, n, start, velocity, np.zeros((1, 2)), lambda t: np.array([side, side]),
                          (o.width, o.height), lambda t, e: 'bounce')[:, 0]
    objects.append((shape, colour, np.concatenate([path - side / 2, np.full((n, 2), side)], axis=1)))
  return objects


def camera_path(rng, n, pad, speed):
  """[n, 2] int top-left offsets into a texture padded by `pad`: a bounded random walk, <= speed
  px per frame per axis."""
  cam = np.zeros((n, 2))
  cam[0] = pad + rng.uniform(-pad / 2, pad / 2, size=2)
  velocity = rng.uniform(-speed, speed, size=2)
  for t in range(1, n):
    velocity = np.clip(velocity + rng.normal(0, 0.15, size=2), -speed, speed)
    cam[t] = cam[t - 1] + velocity
    for a in range(2):
      if not 0 <= cam[t, a] <= 2 * pad:
        velocity[a] = -velocity[a]
        cam[t, a] = np.clip(cam[t, a], 0, 2 * pad)
  return np.round(cam).astype(int)


def place_occluder(rng, world_centres, target_wh, velocity, n):
  """World box (x, y, w, h) of an opaque occluder centred on the target's world centre at a frame
  in the middle third, longer along the motion so that it hides the target for a few frames."""
  t = int(rng.integers(int(0.3 * n), int(0.7 * n) + 1))
  cx, cy = world_centres[t]
  side = max(target_wh)
  along = side * rng.uniform(1.6, 2.4) + np.linalg.norm(velocity) * rng.uniform(3, 8)
  across = side * rng.uniform(1.6, 2.4)
  ow, oh = (along, across) if abs(velocity[0]) >= abs(velocity[1]) else (across, along)
  return np.array([cx - ow / 2, cy - oh / 2, ow, oh])


def annotate(boxes, other_boxes, occluders, frame_wh):
  """Per-frame marks of the target's true boxes [n, 4].

  other_boxes: list of [n, 4] (twin, clutter); occluders: per frame (x, y, w, h) in the image or None.
  Returns {'annotation', 'visible', 'occluded', 'out_of_view', 'clean'} (see Video).
  """
  width, height = frame_wh
  n = len(boxes)
  marks = {k: np.zeros(n, bool) for k in ('visible', 'occluded', 'out_of_view', 'clean')}
  marks['annotation'] = np.zeros((n, 4))
  for t, box in enumerate(boxes):
    occluder = occluders[t]
    marks['occluded'][t] = occluder is not None and _contains(occluder, box)
    marks['out_of_view'][t] = _inside_fraction(box, width, height) < 0.25
    marks['visible'][t] = not (marks['occluded'][t] or marks['out_of_view'][t])
    if marks['visible'][t]:
      marks['annotation'][t] = _clip_box(box, width, height)
    blockers = [b[t] for b in other_boxes] + ([occluder] if occluder is not None else [])
    marks['clean'][t] = (_contains((0.0, 0.0, width, height), box) and
                         not any(_overlaps(box, other) for other in blockers))
  return marks


# ------------------------------------------------------------------------- one video


def _video_name(fmt, index, shape, class_counts, prefix='synth'):
  if fmt == 'lasot':
    class_counts[shape] = class_counts.get(shape, 0) + 1
    return f'{shape}-{class_counts[shape]}'
  return f'{prefix}_{index:04d}'


def make_video(seed, index, options=Options()):
  """Simulates and renders video `index`; depends only on (seed, index, options). Name set later."""
  rng = np.random.default_rng([seed, index])
  o = options
  width, height = o.width, o.height
  n = int(rng.integers(o.min_frames, o.max_frames + 1))
  colour = str(rng.choice(list(COLOURS)))
  shape = str(rng.choice(SHAPES))
  direction = str(rng.choice(list(DIRECTIONS)))
  side = rng.uniform(o.min_size, o.max_size)
  aspect = rng.uniform(0.75, 1.33)
  w0 = float(np.clip(side * math.sqrt(aspect), o.min_size, o.max_size))
  h0 = float(np.clip(side / math.sqrt(aspect), o.min_size, o.max_size))
  period, phase, amp = rng.uniform(25, 60), rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.12)

  def size_fn(t):
    scale = 1 + amp * math.sin(2 * math.pi * t / period + phase)
    return np.clip(np.array([w0, h0]) * scale, o.min_size, o.max_size)

  fast = bool(rng.random() < o.fast_fraction)
  twin = ''
  if rng.random() < o.twin_fraction:
    kinds, weights = zip(*o.twin_kinds)
    twin = str(kinds[int(np.searchsorted(np.cumsum(weights) / sum(weights), rng.random(),
                                          side='right'))])
  formation = twin in ('position', 'colour')  # the twin follows close behind the target
  occlusion = (not twin) and bool(rng.random() < o.occlusion_fraction)
  leaves = (not twin) and bool(rng.random() < o.out_of_view_fraction)
  if twin:
    fast = False  # a language-critical video tests the sentence, not the search range
  relative = rng.uniform(*(FAST_SPEED if fast else NORMAL_SPEED))
  if formation:
    relative = rng.uniform(*o.position_speed)
  if leaves:
    relative = max(relative, 0.6)
  size = math.sqrt(w0 * h0)
  unit = np.array(DIRECTIONS[direction])
  velocity = unit * relative * size

  # Twin placement: offset of the twin from the target, and the side of the target it names.
  relation = ''
  if formation:  # close behind: the target is `direction` of the twin
    relation = direction
    twin_offset = -unit * rng.uniform(*o.position_gap) * max(w0, h0)
  elif twin == 'motion':
    twin_offset = -unit * rng.uniform(1.6, 3.0) * size  # behind the target: they part at once
  else:
    twin_offset = np.zeros(2)
  offsets = np.array([[0.0, 0.0], twin_offset]) if formation else np.zeros((1, 2))
  spread = np.minimum(np.abs(twin_offset) + np.array([w0, h0]) * 1.2, np.array([width, height]) / 2)
  start = np.array([rng.uniform(spread[0], width - spread[0]),
                    rng.uniform(spread[1], height - spread[1])])

  policy = LeaveAndReturn(rng, n, (width, height)) if leaves else (lambda t, extent: 'bounce')
  paths = simulate_group(rng, n, start, velocity, offsets, size_fn, (width, height), policy)
  sizes = np.stack([size_fn(t) for t in range(n)])
  boxes = np.concatenate([paths[:, 0] - sizes / 2, sizes], axis=1)
  # (shape, colour, boxes [n, 4]) drawn below the target: clutter, then the twin (never hidden by clutter)
  twin_colour = colour
  if twin == 'colour':  # another colour, shared by no clutter object
    twin_colour = str(rng.choice([c for c in COLOURS if c != colour]))
  objects = clutter_objects(rng, n, colour, o, avoid=twin_colour)
  twin_boxes = None
  if formation:
    twin_boxes = np.concatenate([paths[:, 1] - sizes / 2, sizes], axis=1)
  elif twin == 'motion':
    twin_path = simulate_group(rng, n, start + twin_offset, -velocity, np.zeros((1, 2)), size_fn,
                               (width, height), lambda t, e: 'bounce')[:, 0]
    twin_boxes = np.concatenate([twin_path - sizes / 2, sizes], axis=1)
  if twin:
    objects.append((shape, twin_colour, twin_boxes))

  pad = int(math.ceil(o.camera_speed * o.max_frames / 2)) + 4
  texture = background_texture(rng, height + 2 * pad, width + 2 * pad)
  cam = camera_path(rng, n, pad, o.camera_speed)

  occluder_world = (place_occluder(rng, paths[:, 0] + cam, (w0, h0), velocity, n)
                    if occlusion else None)
  grey = rng.uniform(70, 170)
  occluder_colour = tuple(int(grey + rng.uniform(-15, 15)) for _ in range(3))
  occluders = ([None] * n if occluder_world is None else
               [occluder_world - np.array([cam[t, 0], cam[t, 1], 0, 0]) for t in range(n)])
  marks = annotate(boxes, [obj[2] for obj in objects], occluders, (width, height))
  frames = [_render(texture, cam[t], (width, height), objects, t, shape, colour, boxes,
                    occluders[t], occluder_colour) for t in range(n)]
  grey_frames = int(rng.integers(o.grey_frames[0], o.grey_frames[1] + 1)) if twin == 'colour' else 0
  for t in range(grey_frames):
    frames[t] = desaturate(frames[t])
  if twin == 'position':
    sentence = f'{colour} {shape} {RELATIONS[relation]} an identical {shape}, moving {direction}'
  elif twin == 'motion':
    sentence = f'{colour} {shape} moving {direction}, not the identical one moving {OPPOSITE[direction]}'
  else:
    sentence = f'{colour} {shape} moving {direction}'
  partly_hidden = any(occ is not None and _overlaps(b, occ, 0.0) for b, occ in zip(boxes, occluders))
  attributes = {
      'full_occlusion': int(marks['occluded'].any()),
      'partial_occlusion': int(partly_hidden),
      'out_of_view': int(marks['out_of_view'].any()),
      'fast_motion': int(fast),
      'motion_blur': int(relative_speeds(boxes).max() > 0.5),
      'camera_motion': 1,
      'background_clutter': int(len(objects) > (1 if twin else 0)),
      'similar_object': int(bool(twin)),
      'scale_variation': int(sizes.prod(1).max() / sizes.prod(1).min() > 1.2),
      'aspect_ratio_change': 0,
      'low_resolution': int(size < 10),
      'illumination_variation': int(grey_frames > 0),
      'deformation': 0,
      'rotation': 0,
      'viewpoint_change': 0,
      'tiny_object': int(size < 16),
      'language_ambiguity': int(bool(twin)),
  }
  return Video(index=index, name='', shape=shape, colour=colour, direction=direction,
               sentence=sentence, frames=frames, boxes=boxes, fast=fast, twin=twin,
               attributes=attributes, twin_boxes=twin_boxes, twin_colour=twin_colour,
               grey_frames=grey_frames, **marks)


def desaturate(frame):
  """uint8 [H, W, 3] -> the same frame in grey (ITU-R 601 luma on all three channels)."""
  luma = np.round(frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
  return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _render(texture, cam, frame_wh, objects, t, shape, colour, boxes, occluder, occluder_colour):
  """Frame t: background at the camera offset, other objects, the target, then the occluder."""
  width, height = frame_wh
  frame = texture[cam[1]:cam[1] + height, cam[0]:cam[0] + width].copy()

  def draw(obj_shape, obj_colour, obj_boxes):
    box = obj_boxes[t]
    prev = obj_boxes[max(t - 1, 0)]
    nxt = obj_boxes[min(t + 1, len(obj_boxes) - 1)]
    shift = (nxt[:2] + nxt[2:] / 2 - (prev[:2] + prev[2:] / 2)) / 4  # half-frame exposure streak
    steps = int(min(8, math.ceil(np.abs(shift).max())) or 1)
    x0, y0, alpha = shape_alpha(obj_shape, box, tuple(shift), steps)
    composite(frame, x0, y0, alpha, COLOURS[obj_colour])

  for obj_shape, obj_colour, obj_boxes in objects:
    draw(obj_shape, obj_colour, obj_boxes)
  draw(shape, colour, boxes)
  if occluder is not None:
    x, y, w, h = occluder
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = int(math.ceil(x + w)), int(math.ceil(y + h))
    composite(frame, x0, y0, np.ones((y1 - y0, x1 - x0), np.float32), occluder_colour)
  return frame


# ------------------------------------------------------------------------- writing


def _rows(array, fmt='{:.2f}'):
  return ''.join(','.join(fmt.format(v) for v in row) + '\n' for row in array)


def _write_text(path, text):
  with open(path, 'w') as f:
    f.write(text)


def write_video(out, fmt, video, options=Options()):
  """Writes one video in the LaSOT or VL-SOT layout; returns its folder."""
  if fmt == 'lasot':
    folder = os.path.join(out, video.shape, video.name)
    image_dir, digits = os.path.join(folder, 'img'), 8
  else:
    folder = os.path.join(out, video.name)
    image_dir, digits = os.path.join(folder, 'imgs'), 6
  os.makedirs(image_dir, exist_ok=True)
  for i, frame in enumerate(video.frames):
    Image.fromarray(frame).save(os.path.join(image_dir, f'{i + 1:0{digits}d}.jpg'),
                                quality=options.jpeg_quality, subsampling=0)
  boxes = _rows(video.annotation)
  write = lambda name, text: _write_text(os.path.join(folder, name), text)
  if fmt == 'lasot':
    write('groundtruth.txt', boxes)
    write('full_occlusion.txt', ','.join(str(int(v)) for v in video.occluded) + '\n')
    write('out_of_view.txt', ','.join(str(int(v)) for v in video.out_of_view) + '\n')
    write('nlp.txt', video.sentence + '\n')
  else:
    write('groundtruth_rect.txt', boxes)
    write('language.txt', video.sentence + '\n')
    write('absent.txt', ''.join(f'{int(not v)}\n' for v in video.visible))
    write('attributes.txt', ','.join(str(video.attributes[k]) for k in ATTRIBUTE_NAMES) + '\n')
    write('relative_speed.txt', f'{relative_speeds(video.boxes).mean():.4f}\n')
  return folder


def is_test(index, test_fraction):
  """Held-out videos, spread evenly: index i is test when floor((i+1)f) > floor(i f)."""
  return math.floor((index + 1) * test_fraction) > math.floor(index * test_fraction)


SPEED_BINS = (0.0, 0.5, 1.0, 2.0, 3.0, float('inf'))


def speed_report(videos, fast_fraction):
  """Stated and realised speed distribution over all frame steps of all videos (relative speed)."""
  speeds = np.concatenate([relative_speeds(v.boxes) for v in videos])
  counts, _ = np.histogram(speeds, bins=np.array(SPEED_BINS))
  return {
      'definition': 'centre displacement per frame / sqrt(w*h), target sizes per frame',
      'stated': {'fast_fraction_of_videos': fast_fraction, 'fast': FAST_SPEED, 'normal': NORMAL_SPEED},
      'bins': [f'{a}-{b}' for a, b in zip(SPEED_BINS[:-1], SPEED_BINS[1:])],
      'frame_steps': [int(c) for c in counts],
      'fraction_beyond_2': float((speeds > 2.0).mean()),
      'median': float(np.median(speeds)),
      'p90': float(np.percentile(speeds, 90)),
  }


def generate(out, fmt='lasot', videos=40, seed=0, options=None, verbose=True, **overrides):
  """Writes `videos` videos under `out` in layout fmt ('lasot' | 'vlsot'); returns the report dict.

  overrides: fields of Options (width=..., height=..., twin_fraction=...).
  """
  if fmt not in ('lasot', 'vlsot'):
    raise ValueError(f"format must be 'lasot' or 'vlsot', got {fmt!r}")
  options = dataclasses.replace(options or Options(), **overrides)
  start = time.time()
  os.makedirs(out, exist_ok=True)
  class_counts = {}
  made, entries, split = [], [], {'train': [], 'test': []}
  for index in range(videos):
    video = make_video(seed, index, options)
    name = video.name = _video_name(fmt, index, video.shape, class_counts, options.name_prefix)
    write_video(out, fmt, video, options)
    split['test' if is_test(index, options.test_fraction) else 'train'].append(name)
    speeds = relative_speeds(video.boxes)
    entries.append({
        'name': name, 'frames': len(video.frames), 'sentence': video.sentence,
        'size_px': float(np.sqrt(video.boxes[0, 2] * video.boxes[0, 3])), 'fast': video.fast,
        'twin': video.twin, 'cue': video.twin, 'mean_relative_speed': float(speeds.mean()),
        'occluded_frames': int(video.occluded.sum()), 'out_of_view_frames': int(video.out_of_view.sum()),
    })
    made.append(video)
    video.frames = None  # written; free the pixels
  for key, names in split.items():
    _write_text(os.path.join(out, f'{key}.txt'), ''.join(n + '\n' for n in names))
  if fmt == 'vlsot':
    _write_text(os.path.join(out, 'attribute_names.txt'), ''.join(n + '\n' for n in ATTRIBUTE_NAMES))
  speed = speed_report(made, options.fast_fraction)
  report = {
      'format': fmt, 'videos': videos, 'seed': seed, 'options': dataclasses.asdict(options),
      'frames': int(sum(e['frames'] for e in entries)),
      'twin_videos': int(sum(bool(e['twin']) for e in entries)),
      'twin_kinds': {k: int(sum(e['twin'] == k for e in entries)) for k in TWIN_KINDS},
      'fast_videos': int(sum(e['fast'] for e in entries)),
      'occlusion_videos': int(sum(e['occluded_frames'] > 0 for e in entries)),
      'out_of_view_videos': int(sum(e['out_of_view_frames'] > 0 for e in entries)),
      'speed': speed, 'split': {k: len(v) for k, v in split.items()},
      'seconds': round(time.time() - start, 2), 'sequences': entries,
  }
  with open(os.path.join(out, 'generator_report.json'), 'w') as f:
    json.dump(report, f, indent=1)
  if verbose:
    print(summary_text(report))
  return report


def summary_text(report):
  s = report['speed']
  lines = [
      f"wrote {report['videos']} {report['format']} videos, {report['frames']} frames, "
      f"in {report['seconds']} s (train {report['split']['train']}, test {report['split']['test']})",
      f"twins {report['twin_videos']} ("
      + ', '.join(f'{k} {v}' for k, v in report['twin_kinds'].items())
      + f"), fast {report['fast_videos']}, occlusion {report['occlusion_videos']}, "
      f"out of view {report['out_of_view_videos']}",
      f"speed ({s['definition']}): stated fast videos {s['stated']['fast_fraction_of_videos']:.0%} "
      f"~U{s['stated']['fast']}, others ~U{s['stated']['normal']}",
      'realised frame steps ' + ', '.join(f'[{b}): {c}' for b, c in zip(s['bins'], s['frame_steps']))
      + f"; beyond 2 sizes {s['fraction_beyond_2']:.1%}, median {s['median']:.2f}, p90 {s['p90']:.2f}",
  ]
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags, defined only when run as a program (so other programs can import this)."""
  flags.DEFINE_string('out', None, 'output folder')
  flags.DEFINE_enum('format', 'lasot', ['lasot', 'vlsot'], 'layout')
  flags.DEFINE_integer('videos', 40, 'number of videos')
  flags.DEFINE_integer('seed', 0, 'random seed')
  flags.DEFINE_integer('width', Options.width, 'frame width, px')
  flags.DEFINE_integer('height', Options.height, 'frame height, px')
  flags.DEFINE_float('twin_fraction', Options.twin_fraction, 'share of videos with an identical distractor')
  flags.DEFINE_float('fast_fraction', Options.fast_fraction, 'share of fast videos')
  flags.DEFINE_float('test_fraction', Options.test_fraction, 'share of videos listed in test.txt')


def main(argv):
  del argv
  if not FLAGS.out:
    sys.exit('--out=DIR is required')
  generate(FLAGS.out, FLAGS.format, FLAGS.videos, FLAGS.seed, width=FLAGS.width, height=FLAGS.height,
           twin_fraction=FLAGS.twin_fraction, fast_fraction=FLAGS.fast_fraction,
           test_fraction=FLAGS.test_fraction)


if __name__ == '__main__':
  define_flags()
  app.run(main)

"""Render a tracked sequence as an animated GIF: ground truth, prediction, sentence, [OBJ] attention.

  python -m cost_jax.visualize --dataset=synthetic --data_dir=data/synth --sequence=NAME \
      --results_dir=results [--tracker_name=cost] [--out=NAME.gif] \
      [--attention --config=configs/cost_tiny.py --workdir=runs/tiny]

Ground truth is drawn green, the prediction red, the sentence on a strip above the frame. With
--attention, the [OBJ] token's attention over the visual tokens (last VL layer, mean over heads; the
paper's third analysis) is laid over the search window of each frame as a heat map. The window is the
one the tracker used: the search crop around the previous frame's predicted box (from the result file),
with the template around the first ground-truth box, so the map shows what the tracker looked at.
A second strip line says how the attention splits between the sentence and the image: the share of
[OBJ]'s attention on the text tokens and on the visual tokens, the word it attends to most, and the
share that the visual tokens (what the dense head reads) give to the text; the means over the
sequence are printed and written to <out>.attention.json. A frame that does not load is drawn black,
labelled 'unreadable', without a heat map.
"""

import os

from absl import flags
import jax
import jax.numpy as jnp
from matplotlib import colormaps
from ml_collections import config_flags
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cost_jax import cli
from cost_jax import tracker
from cost_jax.evaluation import results_io
from input_pipeline import crops

GT_COLOUR = (0, 230, 0)
PRED_COLOUR = (255, 40, 40)
TEXT_STRIP_PX = 18  # height of the sentence strip above each frame
HEAT_ALPHA = 0.45  # opacity of the attention heat map at its maximum


# ---------------------------------------------------------------- [OBJ] attention

def attention_split(obj_row, visual_row, text_mask):
  """How the last VL layer's attention divides between sentence and image, for one example.

  obj_row, visual_row: [heads, 1+L+V] attention rows of [OBJ] and the mean of the visual queries;
  text_mask: [L]. Returns {'obj_text', 'obj_visual', 'obj_self', 'visual_text'} (fractions summing,
  for [OBJ], to 1 with obj_self) and 'obj_words' [L] ([OBJ]'s attention on each text token).
  """
  obj = jnp.mean(obj_row, axis=0)
  visual = jnp.mean(visual_row, axis=0)
  length = text_mask.shape[0]
  words = obj[1:1 + length] * text_mask
  return {'obj_text': jnp.sum(words), 'obj_visual': jnp.sum(obj[1 + length:]), 'obj_self': obj[0],
          'visual_text': jnp.sum(visual[1:1 + length] * text_mask), 'obj_words': words}


class ObjAttention:
  """[OBJ]'s attention over the visual tokens on the tracker's own crops (full forward pass), and
  how the attention divides between the sentence and the image (attention_split)."""

  def __init__(self, config, model, variables, tokenizer):
    self.config = config
    self.fns = tracker.SlotFunctions(config, model)
    self.variables = variables
    self.tokenizer = tokenizer
    self._forward = jax.jit(self._forward_fn)

  def _forward_fn(self, variables, first, first_wh, first_box, frame, frame_wh, previous_box,
                  text_ids, text_mask):
    """-> (head outputs of one slot, attention [grid^2] mean over heads, search window [3], split)."""
    c, m = self.config.crop, self.config.model
    template, _ = self.fns.crop(first, first_wh, first_box, c.template_factor,
                                c.template_min_side_px, m.template_size)
    search, window = self.fns.crop(frame, frame_wh, previous_box, c.search_factor,
                                   c.search_min_side_px, m.search_size)
    outputs, inter = self.fns.apply(variables, template[None], search[None], text_ids[None],
                                    text_mask[None], train=False, return_attention=True)
    tokens = m.token.grid ** 2
    attention = jnp.mean(inter['obj_attention'][0], axis=0)[-tokens:]  # [OBJ; text; visual] order
    split = attention_split(inter['obj_attention'][0], inter['visual_attention'][0], text_mask)
    return jax.tree.map(lambda a: a[0], outputs), attention, window, split

  def maps(self, sequence, boxes, load=tracker.load_frame):
    """Per frame t >= 1: (attention [grid, grid] scaled to max 1, window (cx, cy, side) px, split
    (attention_split as floats, 'top_word': (wordpiece, share))); None at frame 0 and at frames that
    do not load. tracker.StartError when the first frame does not load."""
    first = tracker.start_frame(load, sequence.frames[0], sequence.boxes[0])
    ids, mask = self.tokenizer.encode(sequence.sentence)
    pieces = self.tokenizer.tokens(ids)
    grid = self.config.model.token.grid
    result = [None]
    for t in range(1, len(sequence)):
      frame, reason = tracker.try_load(load, sequence.frames[t])
      if reason:
        result.append(None)
        continue
      _, attention, window, split = self._forward(
          self.variables, first, tracker.image_wh(first), np.asarray(sequence.boxes[0], np.float32),
          frame, tracker.image_wh(frame), np.asarray(boxes[t - 1], np.float32), ids, mask)
      attention = np.asarray(attention).reshape(grid, grid)
      words = np.asarray(split.pop('obj_words'))
      split = {k: float(v) for k, v in split.items()}
      best = int(np.argmax(words))
      split['top_word'] = (pieces[best], float(words[best]))
      result.append((attention / max(attention.max(), 1e-12), np.asarray(window), split))
    return result


def split_note(split):
  """One strip line from a maps() split: '[OBJ] text 12% image 85% (most: green 5%) | tokens text 3%'."""
  word, share = split['top_word']
  return (f"[OBJ] text {100 * split['obj_text']:.0f}% image {100 * split['obj_visual']:.0f}% "
          f"(most: {word} {100 * share:.0f}%) | tokens text {100 * split['visual_text']:.0f}%")


def mean_split(attention_maps):
  """Means over the frames of maps()' splits: {'obj_text', 'obj_visual', 'obj_self', 'visual_text'}."""
  splits = [m[2] for m in attention_maps if m is not None]
  return {k: float(np.mean([s[k] for s in splits])) for k in ('obj_text', 'obj_visual', 'obj_self',
                                                              'visual_text')}


def heat_overlay(frame, attention, window, model_cfg):
  """Blend an attention map [grid, grid] over the frame's search window -> uint8 [H, W, 3].

  Each token paints a square cell of the token spacing around its centre (crops.token_centers).
  """
  size = model_cfg.search_size
  centres = crops.token_centers(model_cfg)  # crop px, row-major
  spacing = float(centres[1, 0] - centres[0, 0])
  crop_heat = np.zeros((size, size), np.float32)
  for value, (x, y) in zip(attention.reshape(-1), centres):
    x0, y0 = int(round(x - spacing / 2)), int(round(y - spacing / 2))
    crop_heat[max(y0, 0):y0 + int(round(spacing)), max(x0, 0):x0 + int(round(spacing))] = value
  cx, cy, side = (float(v) for v in window)
  side_px = max(int(round(side)), 1)
  heat = np.asarray(Image.fromarray(crop_heat).resize((side_px, side_px), Image.BILINEAR))
  canvas = np.zeros(frame.shape[:2], np.float32)
  x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
  fx0, fy0 = max(x0, 0), max(y0, 0)
  fx1, fy1 = min(x0 + side_px, frame.shape[1]), min(y0 + side_px, frame.shape[0])
  if fx1 > fx0 and fy1 > fy0:
    canvas[fy0:fy1, fx0:fx1] = heat[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
  colours = colormaps['jet'](canvas)[..., :3] * 255
  alpha = (HEAT_ALPHA * np.clip(canvas, 0, 1))[..., None]
  return (frame * (1 - alpha) + colours * alpha).round().astype(np.uint8)


# ---------------------------------------------------------------- drawing

def draw_frame(frame, gt_box, pred_box, sentence, index=None, note=None):
  """uint8 [H, W, 3] frame -> PIL image [H + strip, W]: gt green, prediction red, sentence above
  (index: 0-based frame number, printed 1-based before the sentence; `note` on a second strip line
  when given)."""
  h, w = frame.shape[:2]
  strip = TEXT_STRIP_PX * (2 if note else 1)
  image = Image.new('RGB', (w, h + strip))
  image.paste(Image.fromarray(frame), (0, strip))
  draw = ImageDraw.Draw(image)
  for box, colour in ((gt_box, GT_COLOUR), (pred_box, PRED_COLOUR)):
    if box is not None and np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0:
      x, y, bw, bh = (float(v) for v in box)
      draw.rectangle([x, y + strip, x + bw - 1, y + bh - 1 + strip], outline=colour)
  label = sentence if index is None else f'#{index + 1} {sentence}'
  font = ImageFont.load_default()
  draw.text((2, 3), label, fill=(255, 255, 255), font=font)
  if note:
    draw.text((2, 3 + TEXT_STRIP_PX), note, fill=(255, 220, 120), font=font)
  return image


def render(sequence, boxes, out, attention_maps=None, model_cfg=None, fps=10,
           load=tracker.load_frame):
  """Write an animated GIF of the sequence to `out`; boxes [N, 4] predictions px.

  A frame that does not load is drawn black at the size of the previous one (of the next readable
  one at the start), labelled 'unreadable'; tracker.StartError when no frame loads.
  """
  loaded = [tracker.try_load(load, path) for path in sequence.frames]
  shapes = [frame.shape for frame, _ in loaded if frame is not None]
  if not shapes:
    raise tracker.StartError(f'{sequence.name}: no frame loads (frame 1: {loaded[0][1]})')
  images, shape = [], shapes[0]
  for t, (frame, reason) in enumerate(loaded):
    sentence, note = sequence.sentence, None
    if attention_maps is not None:
      note = ' '  # every frame gets the second line, so the GIF's size does not change
    if reason:
      frame, sentence = np.zeros(shape, np.uint8), f'unreadable frame; {sentence}'
    elif attention_maps is not None and attention_maps[t] is not None:
      attention, window, split = attention_maps[t]
      frame = heat_overlay(frame, attention, window, model_cfg)
      note = split_note(split)
    shape = frame.shape
    images.append(draw_frame(frame, sequence.boxes[t], boxes[t], sentence, t, note))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
  return out


def read_boxes(path):
  """A result file -> boxes [N, 4] px (strict: 4 numbers a line)."""
  return results_io.rows_to_boxes(results_io.read_rows(path))


def define_flags():
  """Command-line flags, defined only when run as a program."""
  flags.DEFINE_string('dataset', None, 'Dataset name.')
  flags.DEFINE_string('data_dir', None, 'Dataset root.')
  flags.DEFINE_string('split', None, 'Dataset split.')
  flags.DEFINE_string('sequence', None, 'Sequence name.')
  flags.DEFINE_string('results_dir', None, 'Folder of result folders.')
  flags.DEFINE_string('tracker_name', 'cost', 'Tracker folder under results_dir.')
  flags.DEFINE_string('out', None, 'GIF path; default <results_dir>/<tracker>/<dataset>/<seq>.gif.')
  flags.DEFINE_integer('fps', 10, 'Frames per second of the GIF.')
  flags.DEFINE_bool('attention', False, "Overlay [OBJ]'s attention (needs --config and --workdir).")
  config_flags.DEFINE_config_file('config', None, 'Model config (for --attention).')
  flags.DEFINE_string('workdir', None, 'Checkpoint workdir (for --attention).')
  flags.mark_flags_as_required(['dataset', 'data_dir', 'sequence', 'results_dir'])


def main(argv):
  del argv
  from cost_jax import track
  f = flags.FLAGS
  if f.attention and (f.config is None or f.workdir is None):
    raise cli.UsageError('--attention needs --config and --workdir')
  config = track.loaded_config(f.config) if f.config is not None else None
  sequence, = track.load_sequences(config, f.dataset, f.data_dir, f.split, [f.sequence])
  path = results_io.result_path(f.results_dir, f.tracker_name, f.dataset, sequence.name)
  try:
    boxes = read_boxes(path)
  except results_io.SequenceFailure as e:
    raise cli.UsageError(str(e) if path in str(e) else f'{path}: {e}') from None
  if len(boxes) != len(sequence):
    raise cli.UsageError(f'{path}: {len(boxes)} boxes for the {len(sequence)} frames of '
                         f'{sequence.name}')
  maps = None
  if f.attention:
    from cost_jax.models import cost
    from input_pipeline import tokenize
    variables = track.restore_variables(f.workdir, config)
    attention = ObjAttention(config, cost.COST(config.model), variables,
                             tokenize.tokenizer_for(config.model))
    try:
      maps = attention.maps(sequence, boxes)
    except tracker.StartError as e:
      raise cli.UsageError(f'{sequence.name}: {e}') from None
  out = f.out or path[:-len('.txt')] + '.gif'
  try:
    render(sequence, boxes, out, maps, config.model if config else None, f.fps)
  except tracker.StartError as e:
    raise cli.UsageError(str(e)) from None
  print(f'wrote {out}')
  if maps is not None:
    import json
    means = mean_split(maps)
    with open(out + '.attention.json', 'w') as fh:
      json.dump({'sequence': sequence.name, 'sentence': sequence.sentence, 'mean': means,
                 'frames': [m[2] if m is not None else None for m in maps]}, fh, indent=1)
    frames = sum(m is not None for m in maps)
    print(f"attention of the last VL layer, mean over {frames} frames: [OBJ] on the sentence "
          f"{100 * means['obj_text']:.1f}%, on the image {100 * means['obj_visual']:.1f}%; visual "
          f"tokens on the sentence {100 * means['visual_text']:.1f}%")


if __name__ == '__main__':
  define_flags()
  cli.run(main)

"""Frames in from a video file, a folder of frames or a glob; annotated MP4 and GIF out.

  source = open_source('clip.mp4')          # or 'seq/imgs' or 'seq/imgs/*.jpg'
  for frame in source: ...                   # uint8 [H, W, 3] RGB, decoded one at a time
  with VideoWriter('out.mp4', fps=25) as w:  # or 'out.gif'
    w.write(frame)

Videos are decoded and encoded with PyAV (`av`, whose wheel ships its own FFmpeg; no system FFmpeg),
one frame at a time, so a long video is never held in memory. Folders and globs are ordered as the
dataset readers order frames (input_pipeline.readers.common.frame_order: by the last number in the
name). Every problem with the input raises VideoError with the path and the reason.
"""

import glob
import os

import av
import numpy as np
from PIL import Image

from cost_jax import tracker
from input_pipeline.readers import common as readers_common

DEFAULT_FPS = 25.0  # frame rate given to the outputs of a frames folder or glob
GLOB_CHARACTERS = '*?['
PARENT_NAMED = ('img', 'imgs')  # benchmark layouts <sequence>/img(s)/: the sequence names the output


class VideoError(ValueError):
  """Input that cannot be read as frames; the message names the path and the problem."""


def _name_of_folder(folder):
  folder = os.path.abspath(folder)
  name = os.path.basename(folder)
  if name.lower() in PARENT_NAMED:
    name = os.path.basename(os.path.dirname(folder)) or name
  return name


class VideoFile:
  """A video file, decoded frame by frame with PyAV."""

  def __init__(self, path):
    self.path = path
    self.name = os.path.splitext(os.path.basename(path))[0]
    try:
      with av.open(path) as container:
        if not container.streams.video:
          raise VideoError(f'{path}: no video stream in the file (zero frames)')
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.num_frames = int(stream.frames) or None  # 0: the container does not say
    except av.error.FFmpegError as e:
      raise VideoError(f'{path}: not a video PyAV can read ({_reason(e)})') from None

  def __iter__(self):
    count = 0
    try:
      with av.open(self.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        for frame in container.decode(stream):
          count += 1
          yield frame.to_ndarray(format='rgb24')
    except av.error.FFmpegError as e:
      raise VideoError(f'{self.path}: cannot decode frame {count + 1} ({_reason(e)})') from None


class FrameFiles:
  """Image files in the readers' order, decoded one at a time."""

  def __init__(self, paths, name, what):
    self.paths = sorted(paths, key=readers_common.frame_order)
    self.name = name
    self.fps = DEFAULT_FPS
    self.num_frames = len(self.paths)
    if not self.paths:
      raise VideoError(f'{what}: no frames (image files {", ".join(readers_common.IMAGE_EXTENSIONS)})')

  def __iter__(self):
    for path in self.paths:
      try:
        yield tracker.load_frame(path)
      except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise VideoError(f'{path}: cannot read the frame ({e})') from None


def _reason(error):
  """FFmpeg's message without the errno and path PyAV adds."""
  return getattr(error, 'strerror', None) or str(error)


def open_source(spec):
  """A video file, a folder of frames or a glob of frames -> an iterable of uint8 [H, W, 3] frames
  with .name (the output name), .fps and .num_frames (None when the container does not say)."""
  if os.path.isdir(spec):
    paths = [os.path.join(spec, n) for n in os.listdir(spec)
             if n.lower().endswith(readers_common.IMAGE_EXTENSIONS) and not n.startswith('.')]
    return FrameFiles(paths, _name_of_folder(spec), spec)
  if os.path.isfile(spec):
    return VideoFile(spec)
  if any(c in spec for c in GLOB_CHARACTERS):
    paths = [p for p in glob.glob(spec) if os.path.isfile(p)]
    folder = os.path.dirname(paths[0]) if paths else os.path.dirname(spec)
    return FrameFiles(paths, _name_of_folder(folder or '.'), f'glob {spec!r}')
  raise VideoError(f'{spec}: no such video file or frames folder')


def same_size(frames, what):
  """Yields the frames, raising VideoError when one differs in size from the first."""
  first = None
  for index, frame in enumerate(frames):
    if first is None:
      first = frame.shape
    elif frame.shape != first:
      raise VideoError(f'{what}: frame {index + 1} is {frame.shape[1]}x{frame.shape[0]}, '
                       f'the first is {first[1]}x{first[0]}; every frame must have one size')
    yield frame


# ---------------------------------------------------------------- writing

class VideoWriter:
  """Streams uint8 [H, W, 3] RGB frames of one size into an MP4 (H.264, yuv420p) or a GIF.

  The size is taken from the first frame. H.264 needs even sides: odd ones are padded with one black
  row/column. A GIF frame gets its own 256-colour palette (PIL's median cut) and a delay of 1/fps s
  (rounded to GIF's 10 ms).
  """

  def __init__(self, path, fps):
    self.path = path
    self.fps = fps
    self.gif = path.lower().endswith('.gif')
    self._container = None
    self._stream = None
    self.frames = 0

  def _open(self, height, width):
    from fractions import Fraction
    self._container = av.open(self.path, 'w')
    rate = Fraction(self.fps).limit_denominator(1001)
    if self.gif:
      self._stream = self._container.add_stream('gif', rate=rate)
      self._stream.pix_fmt = 'pal8'
    else:
      self._stream = self._container.add_stream('libx264', rate=rate)
      self._stream.pix_fmt = 'yuv420p'
      self._stream.options = {'crf': '20', 'preset': 'veryfast'}
      height, width = height + height % 2, width + width % 2
    self._stream.width, self._stream.height = width, height

  def write(self, frame):
    """frame uint8 [H, W, 3] RGB (the size of the first frame)."""
    if self._container is None:
      self._open(*frame.shape[:2])
    if self.gif:
      video_frame = _pal8_frame(frame)
    else:
      h, w = self._stream.height, self._stream.width
      if frame.shape[:2] != (h, w):
        frame = tracker.pad_frame(frame, (h, w))
      video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')
    for packet in self._stream.encode(video_frame):
      self._container.mux(packet)
    self.frames += 1

  def close(self):
    if self._container is None:
      return
    for packet in self._stream.encode():
      self._container.mux(packet)
    self._container.close()
    self._container = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _pal8_frame(frame):
  """uint8 [H, W, 3] RGB -> a pal8 av.VideoFrame (PIL median-cut palette of 256 colours)."""
  image = Image.fromarray(frame).quantize(256)
  palette = np.asarray(image.getpalette(), np.uint8).reshape(-1, 3)[:256]
  argb = np.zeros((256, 4), np.uint8)
  argb[:, 0] = 255
  argb[:len(palette), 1:] = palette
  return av.VideoFrame.from_ndarray((np.asarray(image), argb), format='pal8')


def count_frames(path):
  """Frames in a video file (decoded, not the container's claim); for checks and tests."""
  with av.open(path) as container:
    return sum(1 for _ in container.decode(video=0))

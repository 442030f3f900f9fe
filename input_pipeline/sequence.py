"""The one record every dataset reader yields, and the stable keys used across datasets."""

import dataclasses
import hashlib

import numpy as np


def stable_key(text):
  """A 31-bit non-negative int from a string, identical across processes and hosts.

  Fits int32 (JAX's default integer) so keys can travel in batches and be compared on device.
  """
  digest = hashlib.sha1(text.encode('utf-8')).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF


def is_empty_sentence(sentence):
  """True when a sentence says nothing (None, '' or only whitespace): the one rule on sentences that
  input_pipeline.check and the training stream share. Any other text is data: accents, quotes and
  dashes (BERT's uncased normaliser handles them) and sentences longer than text.max_len tokens
  (the tokenizer truncates them; the stream counts them)."""
  return not (sentence or '').strip()


def text_key(ids):
  """Key of a tokenised sentence: identical ids -> identical key (CoA treats them as positives)."""
  ids = np.asarray(ids, dtype=np.int32)
  return stable_key(ids.tobytes().hex())


@dataclasses.dataclass(frozen=True, eq=False)
class Sequence:
  """One video of a benchmark.

  Attributes:
    name: sequence name as the benchmark spells it (result files use it).
    dataset: reader name ('lasot', 'tnl2k', ...).
    frames: absolute frame paths, in order; frames[i] <-> boxes[i].
    boxes: [N, 4] float64 ground truth (x, y, w, h) in pixels; NaN where the file has no box.
    visible: [N] bool, the target is visible (not occluded, not out of view, not absent).
    sentence: the language description ('' when the dataset has none).
    attributes: name -> value (e.g. {'fast_motion': 1, ...}); empty when unknown.
    sequence_key: stable_key(f'{dataset}/{name}'), unique across datasets.
  """
  name: str
  dataset: str
  frames: tuple
  boxes: np.ndarray
  visible: np.ndarray
  sentence: str
  attributes: dict = dataclasses.field(default_factory=dict)
  sequence_key: int = -1

  def __post_init__(self):
    boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
    visible = np.asarray(self.visible, dtype=bool).reshape(-1)
    object.__setattr__(self, 'boxes', boxes)
    object.__setattr__(self, 'visible', visible)
    object.__setattr__(self, 'frames', tuple(self.frames))
    if self.sequence_key < 0:
      object.__setattr__(self, 'sequence_key', stable_key(f'{self.dataset}/{self.name}'))

  def __len__(self):
    return len(self.frames)

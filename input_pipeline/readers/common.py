"""What every reader shares: errors and problems, annotation parsing, frame listing.

A reader scans a tree without decoding images and returns a `Scan`: the sequences it could build and
the problems it found, each with a path. `load_dataset` raises `DatasetError` on error-level
problems; `python -m input_pipeline.check` prints them all.
"""

import dataclasses
import os
import re

import numpy as np

from input_pipeline import sequence as sequence_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')


class DatasetError(ValueError):
  """A dataset tree that cannot be used as laid out; the message names the path and the reason."""


class MissingPathError(DatasetError, FileNotFoundError):
  """A file or folder the layout requires is not there."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One finding. level: 'error' (the tree is unusable as laid out) or 'warning' (bad data the
  stream replaces: invalid box on a visible frame, empty sentence, undecodable frame)."""
  path: str
  reason: str
  level: str = 'error'

  def __str__(self):
    return f'{self.level}: {self.path}: {self.reason}'


@dataclasses.dataclass
class Scan:
  """A reader's result: sequences built, problems found (in tree order), and the names of every
  sequence the tree lists (`listed`, before a `names=` selection), so a requested name that is not
  there can be reported."""
  sequences: list = dataclasses.field(default_factory=list)
  problems: list = dataclasses.field(default_factory=list)
  listed: list = dataclasses.field(default_factory=list)

  def extend(self, other):
    """Append another Scan's sequences, problems and listed names (a dataset read in parts)."""
    self.sequences += other.sequences
    self.problems += other.problems
    self.listed += other.listed

  def errors(self):
    return [p for p in self.problems if p.level == 'error']

  def raise_errors(self, dataset, limit=20):
    """DatasetError listing every error-level problem (one line when there is one)."""
    errors = self.errors()
    cls = MissingPathError if all('missing' in p.reason for p in errors) else DatasetError
    if len(errors) == 1:
      raise cls(f'{dataset}: {errors[0]}')
    if errors:
      shown = '\n  '.join(str(p) for p in errors[:limit])
      more = f'\n  ... and {len(errors) - limit} more' if len(errors) > limit else ''
      raise cls(f'{dataset}: {len(errors)} problem(s); run `python -m input_pipeline.check '
                f'--dataset={dataset} --data_dir=...` for all of them:\n  {shown}{more}')


class SequenceProblem(Exception):
  """Raised inside a reader for one sequence; the scan records it and moves on."""

  def __init__(self, path, reason):
    super().__init__(f'{path}: {reason}')
    self.path, self.reason = path, reason


def require(path, what='file'):
  """path, or SequenceProblem('missing <what>')."""
  exists = os.path.isdir(path) if what == 'folder' else os.path.isfile(path)
  if not exists:
    raise SequenceProblem(path, f'missing {what}')
  return path


def read_lines(path):
  """The lines of a text annotation file, decoded as UTF-8 (a UTF-8 byte-order mark is dropped).

  Raises SequenceProblem naming the file for a missing file, UTF-16 text (a UTF-16 byte-order mark)
  or bytes that are not UTF-8 (with the offset of the first), never a bare UnicodeDecodeError.
  """
  require(path)
  with open(path, 'rb') as f:
    data = f.read()
  if data.startswith((b'\xff\xfe', b'\xfe\xff')):
    raise SequenceProblem(path, 'UTF-16 text (starts with a UTF-16 byte-order mark); save it as '
                                'UTF-8 or ASCII')
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise SequenceProblem(path, f'line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset '
                                f'{e.start})') from None
  return text.splitlines()


def _fields(line):
  return [v for v in re.split(r'[,\s]+', line.strip()) if v]


def read_boxes(path):
  """[N, 4] float64 (x, y, w, h) from a text file; separators comma, tab or whitespace.

  'nan' parses as NaN; a blank line inside the file is a row of NaN (no box for that frame).
  """
  lines = read_lines(path)
  while lines and not lines[-1].strip():
    lines.pop()
  rows = []
  for number, line in enumerate(lines, 1):
    fields = _fields(line)
    if not fields:
      rows.append([np.nan] * 4)
      continue
    try:
      values = [float(v) for v in fields]
    except ValueError:
      raise SequenceProblem(path, f'line {number}: not numbers: {line.strip()!r}') from None
    if len(values) != 4:
      raise SequenceProblem(path, f'line {number}: {len(values)} values, expected 4 (x,y,w,h)')
    rows.append(values)
  if not rows:
    raise SequenceProblem(path, 'no boxes')
  return np.asarray(rows, np.float64)


def read_numbers(path):
  """Every number of a file, in order (comma-, whitespace- or line-separated) -> list of float.

  Raises SequenceProblem naming the file and the line of the first field that is not a number.
  """
  values = []
  for number, line in enumerate(read_lines(path), 1):
    for field in _fields(line):
      try:
        values.append(float(field))
      except ValueError:
        raise SequenceProblem(path, f'line {number}: not a number: {field!r} in '
                                    f'{line.strip()!r}') from None
  return values


def read_flags(path):
  """[N] int flags from a file of 0/1 (or small ints), comma- or line-separated."""
  return np.asarray([int(v) for v in read_numbers(path)], np.int64)


def read_text(path):
  """First non-empty line, stripped ('' when the file is empty); decoded as read_lines does."""
  for line in read_lines(path):
    if line.strip():
      return line.strip()
  return ''


def _frame_number(name):
  digits = re.findall(r'\d+', os.path.splitext(name)[0])
  return int(digits[-1]) if digits else -1


def frame_order(path):
  """Sort key of a frame file: the last number in its name, then the name (1, 2, 10, not 1, 10, 2)."""
  name = os.path.basename(path)
  return (_frame_number(name), name)


def list_frames(folder, any_suffix=False):
  """Frame files in `folder`, sorted by the last number in their names.

  any_suffix: also keep numbered files whose suffix is not an image one (e.g. TNL2K's damaged
  frame), so they stay in place as frames and fail at decode, where they are counted.
  """
  require(folder, 'folder')
  names = []
  for name in os.listdir(folder):
    if name.startswith('.') or not os.path.isfile(os.path.join(folder, name)):
      continue
    image = name.lower().endswith(IMAGE_EXTENSIONS)
    if image or (any_suffix and _frame_number(name) >= 0 and not name.lower().endswith('.txt')):
      names.append(name)
  names.sort(key=frame_order)
  return [os.path.join(folder, n) for n in names]


def numbered_frames(folder, numbers, digits, ext, exact=True):
  """Paths folder/<number zero-padded to digits>.<ext>, each checked to exist.

  exact: the folder holds no other frames (box count = frame count), as in LaSOT and GOT-10k.
  """
  require(folder, 'folder')
  present = set(os.listdir(folder))
  names = [f'{i:0{digits}d}.{ext}' for i in numbers]
  missing = [n for n in names if n not in present]
  if exact:
    count = sum(1 for n in present if n.lower().endswith(IMAGE_EXTENSIONS))
    if count != len(names) and not (missing and len(missing) == len(names) - count and
                                    missing != names[count:]):
      raise SequenceProblem(folder, f'{count} frames but {len(names)} boxes')
  if missing:
    raise SequenceProblem(os.path.join(folder, missing[0]),
                          f'missing frame ({len(missing)} of {len(names)} missing)')
  return [os.path.join(folder, n) for n in names]


def check_counts(frames, boxes, folder, annotation):
  if len(frames) != len(boxes):
    raise SequenceProblem(folder, f'{len(frames)} frames but {len(boxes)} boxes in {annotation}')


def check_length(flags, n, path):
  if len(flags) != n:
    raise SequenceProblem(path, f'{len(flags)} values but {n} frames')


def box_warnings(sequence, folder, sentence_path=None):
  """Warnings for visible frames whose box is NaN or has w or h <= 0 (naming `folder`) and for an
  empty sentence (naming `sentence_path`, default `folder`)."""
  bad = sequence.visible & ~(np.isfinite(sequence.boxes).all(1) & (sequence.boxes[:, 2:] > 0).all(1))
  problems = []
  if bad.any():
    first = int(np.argmax(bad))
    problems.append(Problem(folder, f'{int(bad.sum())} visible frame(s) with an invalid box '
                                    f'(first: frame {first + 1}: {sequence.boxes[first].tolist()})',
                            'warning'))
  if sequence_lib.is_empty_sentence(sequence.sentence):
    problems.append(Problem(sentence_path or folder, 'empty sentence', 'warning'))
  return problems


def select(items, names):
  """items (name, folder) restricted to `names` (None: all), in tree order."""
  if names is None:
    return list(items)
  wanted = set(names)
  return [(n, f) for n, f in items if n in wanted]


def scan_folders(items, build, names=None, sentence_file=None):
  """Scan over items (name, folder): build(name, folder) -> Sequence, or raises SequenceProblem.

  names: build only these sequences (None: all); every item's name is still listed (Scan.listed).
  sentence_file(name, folder) -> the path an empty-sentence warning names (default: the folder).
  """
  scan = Scan(listed=[n for n, _ in items])
  for name, folder in select(items, names):
    try:
      seq = build(name, folder)
    except SequenceProblem as e:
      scan.problems.append(Problem(e.path, e.reason))
      continue
    scan.sequences.append(seq)
    scan.problems.extend(box_warnings(seq, folder, sentence_file and sentence_file(name, folder)))
  return scan


def make_sequence(dataset, name, frames, boxes, visible, sentence, attributes=None):
  return sequence_lib.Sequence(name=name, dataset=dataset, frames=frames, boxes=boxes,
                               visible=visible, sentence=sentence, attributes=attributes or {})


def read_name_list(path):
  """Names, one a line (blank lines ignored)."""
  return [line.strip() for line in read_lines(path) if line.strip()]


def subfolders(root):
  """Sorted names of the non-hidden folders in root."""
  require(root, 'folder')
  return sorted(n for n in os.listdir(root) if not n.startswith('.') and
                os.path.isdir(os.path.join(root, n)))

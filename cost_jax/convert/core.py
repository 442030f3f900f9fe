"""Converter machinery: weights-only torch loading, rename rules, shape checks, flat safetensors files.

A converter is a list of rules `(regex, replacement, transform)` plus a list of regexes of keys it
ignores on purpose. `convert_state_dict` turns a PyTorch state dict into a *flat* dict whose keys are
'/'-joined paths into the Flax variables ('params/backbone/conv1/kernel', 'batch_stats/...'); every
source key is either converted, ignored (and reported), or an error naming it.
"""

import os
import re

import numpy as np
from flax import traverse_util
import jax.numpy as jnp

TRANSFORMS = {
    'none': lambda x: x,
    'conv': lambda x: np.transpose(x, (2, 3, 1, 0)),  # torch OIHW -> flax HWIO
    'linear': lambda x: np.transpose(x),  # torch [out, in] -> flax [in, out]
}


class ConversionError(ValueError):
  """A checkpoint does not fit the model: names every offending tensor."""


class StandIn:
  """Inert stand-in for a pickled non-tensor object (e.g. TransT's NetConstructor).

  Only stores the attributes the pickle sets; has no behaviour and imports nothing.
  """

  def __repr__(self):
    return f'<stand-in {type(self).__module__}.{type(self).__qualname__} {sorted(vars(self))}>'


def stand_in_class(module, qualname):
  """A StandIn subclass that pickle resolves as `module.qualname`."""
  cls = type(qualname.rsplit('.', 1)[-1], (StandIn,), {})
  cls.__module__ = module
  cls.__qualname__ = qualname
  return cls


def load_torch_file(path, stand_ins=()):
  """torch.load(path, weights_only=True), with inert stand-ins for (module, qualname) pairs.

  Stand-ins are allowlisted only for this call (torch.serialization.safe_globals); nothing else can
  be unpickled. Returns whatever the file holds (a state dict, or a dict holding one).
  """
  import torch  # only converters need torch

  safe = [(stand_in_class(m, q), f'{m}.{q}') for m, q in stand_ins]
  try:
    with torch.serialization.safe_globals(safe):
      return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError (or RuntimeError wrapping it)
    raise unreadable(path, 'PyTorch checkpoint (weights-only)', e) from e


def _reason(error):
  """The line of a loader's message that says what is wrong (torch's weights-only errors bury it
  after a paragraph of advice), at most 200 characters."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for i, line in enumerate(lines):
    if 'WeightsUnpickler error' in line:
      cause = line.split('WeightsUnpickler error:', 1)[-1].strip() or (lines[i + 1] if i + 1 < len(lines)
                                                                        else '')
      return cause[:200]
  return (lines[0] if lines else type(error).__name__)[:200]


def unreadable(path, kind, error):
  """ConversionError naming `path`, what it should be (`kind`), its size and the loader's reason."""
  try:
    size = os.path.getsize(path)
  except OSError as e:
    return ConversionError(f'{path}: {e.strerror or e}')
  if size == 0:
    return ConversionError(f'{path}: empty file (0 bytes), expected a {kind}')
  return ConversionError(f'{path}: not a readable {kind}: {_reason(error)} ({size} bytes)')


def to_numpy(value):
  """A torch tensor or array-like -> numpy array (float32 stays float32)."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _matches(key, patterns):
  return any(re.fullmatch(p, key) for p in patterns)


def convert_state_dict(state, rules, ignore=(), source=''):
  """Renames and transforms a PyTorch state dict.

  Args:
    state: {torch key: tensor or array}.
    rules: sequence of (regex, replacement, transform); the first rule whose regex fully matches a
      key gives its flat name (`re` replacement syntax, e.g. r'params/\\1/kernel'); transform is
      'none' | 'conv' (OIHW->HWIO) | 'linear' (transpose) or a callable on the numpy array.
    ignore: regexes of keys dropped on purpose (reported).
    source: a name for messages and the report (usually the file path).
  Returns:
    (flat {'params/...': np.ndarray}, report {'source', 'converted': [[src, dst]], 'ignored': [keys]}).
  Raises:
    ConversionError naming every key that no rule or ignore pattern covers, and every flat name
    produced twice.
  """
  flat, converted, ignored, unknown, dupes = {}, [], [], [], []
  for key in state:
    if _matches(key, ignore):
      ignored.append(key)
      continue
    for pattern, replacement, transform in rules:
      if re.fullmatch(pattern, key):
        name = re.sub(pattern, replacement, key)
        fn = TRANSFORMS[transform] if isinstance(transform, str) else transform
        if name in flat:
          dupes.append(f'{key} -> {name}')
        flat[name] = np.ascontiguousarray(fn(to_numpy(state[key])))
        converted.append([key, name])
        break
    else:
      unknown.append(key)
  problems = [f'unexpected tensor {k} (no rule converts it, none ignores it)' for k in unknown]
  problems += [f'two tensors map to one name: {d}' for d in dupes]
  if problems:
    raise ConversionError(f'{source}: ' + '; '.join(problems))
  return flat, {'source': source, 'converted': converted, 'ignored': ignored}


def flatten(variables):
  """Nested variables -> {'a/b/c': leaf}."""
  return traverse_util.flatten_dict(variables, sep='/')


def unflatten(flat):
  """{'a/b/c': leaf} -> nested dicts."""
  return traverse_util.unflatten_dict(flat, sep='/')


def _shape_problems(flat, reference, require_all, names=None):
  ref = flatten(reference)
  names = names or {}
  said = lambda k: f'{k} (checkpoint key {names[k]})' if k in names else k
  problems = []
  if require_all:
    problems += [f'missing tensor {said(k)} {tuple(np.shape(v))}' for k, v in ref.items()
                 if k not in flat]
  for k, v in flat.items():
    if k not in ref:
      problems.append(f'tensor {said(k)} {tuple(np.shape(v))} has no place in the model')
    elif tuple(np.shape(v)) != tuple(np.shape(ref[k])):
      problems.append(f'shape mismatch {said(k)}: checkpoint {tuple(np.shape(v))}, '
                      f'model {tuple(np.shape(ref[k]))}')
  return problems


def check_shapes(flat, variables, source='', names=None):
  """Raises ConversionError naming every missing key, unknown key and shape mismatch.

  `variables` (arrays or jax.ShapeDtypeStruct leaves) is the tree `flat` must fill completely.
  `names` ({flat key: checkpoint key}, optional) adds the checkpoint's name to each message.
  """
  problems = _shape_problems(flat, variables, require_all=True, names=names)
  if problems:
    raise ConversionError(f'{source}: ' + '; '.join(problems))


def merge_into(variables, flat):
  """New variables with the leaves of `flat` replaced; keys absent from flat keep their values.

  Each replaced leaf keeps the model's dtype. Raises ConversionError on keys that are not in the
  model and on shape mismatches, naming each.
  """
  problems = _shape_problems(flat, variables, require_all=False)
  if problems:
    raise ConversionError('merge: ' + '; '.join(problems))
  leaves = flatten(variables)
  for k, v in flat.items():
    leaves[k] = jnp.asarray(v, dtype=leaves[k].dtype)
  return unflatten(leaves)


def save_flat(path, flat, metadata=None):
  """Writes {'/'-joined key: array} to a safetensors file."""
  from safetensors.numpy import save_file
  save_file({k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}, path,
            metadata=metadata)


def load_flat(path):
  """Reads a safetensors file written by save_flat (or any safetensors file) -> {key: np.ndarray};
  ConversionError naming the file when it is missing, empty, truncated or not safetensors."""
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except Exception as e:  # safetensors raises SafetensorError (no path), OSError, ...
    raise unreadable(path, 'safetensors file', e) from e

"""What a training workdir holds besides checkpoints: who trains in it, and the config it trains with.

  <workdir>/train.lock   the running trainer's PID, held with fcntl.flock (`lock`)
  <workdir>/config.json  the config of the last training run (`record_config`)

A second trainer on the same workdir is refused ("workdir in use by PID ..."); the kernel drops the
lock when its process ends, however it ends (kill -9 included), so a dead trainer never leaves the
workdir locked. Resuming compares the config with config.json (`check_resume`): model fields must
agree, training fields may change (one line names them). cost_jax.track and cost_jax.export check
their --config against it, or use it when no --config is given (`model_differences`,
`recorded_config`). Bucket URLs (gs://...) are neither locked nor compared.
"""

import contextlib
import fcntl
import json
import os

from absl import logging
import ml_collections

LOCK_FILE = 'train.lock'
CONFIG_FILE = 'config.json'
# Fields that say where files are on this machine, not what the model is.
UNCOMPARED = ('model.text.pretrained_dir', 'model.text.vocab_path')


class InUseError(RuntimeError):
  """Another live process trains in this workdir; the message names its PID."""


class ConfigMismatch(ValueError):
  """A config's model fields differ from those the workdir trained with; names each difference."""


def _local(workdir):
  return '://' not in str(workdir)


@contextlib.contextmanager
def lock(workdir):
  """Holds <workdir>/train.lock (exclusive, non-blocking flock; this PID written in it) while the
  block runs; InUseError naming the holder's PID when another process holds it."""
  if not _local(workdir):
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
    os.close(fd)
    raise InUseError(f'workdir in use by PID {holder}: {workdir} ({path} is held; wait for that '
                     'trainer or stop it, or train in another --workdir)') from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield
  finally:
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


# ---------------------------------------------------------------- the recorded config

def config_path(workdir):
  return os.path.join(str(workdir), CONFIG_FILE)


def as_dict(config):
  """A ConfigDict as plain JSON values (tuples become lists), as config.json stores it."""
  return json.loads(config.to_json_best_effort())


def record_config(workdir, config):
  """Writes <workdir>/config.json (replacing it whole: a crash never leaves half a file)."""
  if not _local(workdir):
    return
  os.makedirs(workdir, exist_ok=True)
  tmp = config_path(workdir) + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(as_dict(config), f, indent=1, sort_keys=True)
  os.replace(tmp, config_path(workdir))


def read_recorded(workdir):
  """config.json as a dict, or None when the workdir has none; ValueError naming the file when it
  does not parse."""
  path = config_path(workdir)
  if not _local(workdir) or not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: unreadable recorded config ({e})') from None
  if not isinstance(recorded, dict):
    raise ValueError(f'{path}: not a config (a JSON object expected)')
  return recorded


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def recorded_config(workdir):
  """The workdir's config.json as a ConfigDict (lists read back as tuples), or None."""
  recorded = read_recorded(workdir)
  return None if recorded is None else ml_collections.ConfigDict(_tuples(recorded))


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flat(value, name + '.'))
    else:
      out[name] = value
  return out


def differences(recorded, current, section=None):
  """['model.search_size: trained 128, now 256', ...]: fields (under `section` when given) whose
  values differ between two configs as dicts; a field missing on one side reads 'absent'."""
  a, b = _flat(recorded), _flat(current)
  names = sorted(n for n in set(a) | set(b)
                 if n not in UNCOMPARED and (section is None or n.startswith(section + '.')))
  show = lambda flat, n: json.dumps(flat[n]) if n in flat else 'absent'
  return [f'{n}: trained {show(a, n)}, now {show(b, n)}' for n in names
          if a.get(n, KeyError) != b.get(n, KeyError)]


def model_differences(workdir, config):
  """differences() of config's model fields from the workdir's config.json ([] when it has none)."""
  recorded = read_recorded(workdir)
  return [] if recorded is None else differences(recorded, as_dict(config), 'model')


def _has_checkpoint(workdir):
  from cost_jax import checkpoints
  folder = checkpoints.checkpoint_dir(workdir)
  return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def check_resume(workdir, config, echo=logging.warning):
  """Before training in a workdir that holds checkpoints: ConfigMismatch naming each model field
  that differs from config.json; each other changed field (lr, steps, data, ...) is allowed and
  said in one line through `echo`. The caller then records the config (record_config): a workdir
  without checkpoints just takes the new one."""
  if not _local(workdir):
    return
  recorded = read_recorded(workdir)
  if recorded is not None and _has_checkpoint(workdir):
    current = as_dict(config)
    model = differences(recorded, current, 'model')
    if model:
      raise ConfigMismatch(f'{workdir} was trained with another model ({config_path(workdir)}): '
                           + '; '.join(model) + '; resume with those model fields, or train in a '
                           'new --workdir')
    changed = [d for d in differences(recorded, current) if not d.startswith('model.')]
    if changed:
      echo('resuming with changed training fields (allowed): ' + '; '.join(changed))
  elif recorded is None and _has_checkpoint(workdir):
    echo(f'{workdir} has checkpoints but no {CONFIG_FILE}: recording this run\'s config')

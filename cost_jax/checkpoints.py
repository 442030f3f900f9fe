"""Checkpoints (docs/design.md §3): orbax CheckpointManager in <workdir>/checkpoints, async,
keep-N, auto-resume, preemption, and a finiteness check before every save.

Each checkpoint is `ocp.args.Composite(state=<train state>, metadata=<JSON with next_step>)`.
`restore_variables(workdir, config)` gives {'params', 'batch_stats'} of the latest checkpoint to the
tracker and the exporter: only those two items are read, and with a config they are checked against
that config's model. Resuming (`Checkpointer.restore_readable`) takes the newest checkpoint that
restores: a damaged newer one (a truncated file, garbled metadata, an empty folder) is named in one
line and moved to <workdir>/checkpoints_unreadable/, never deleted.
"""

import contextlib
import logging as pylogging
import os
import shutil
import signal
import sys

from absl import logging
import jax
import orbax.checkpoint as ocp

from cost_jax.models import cost


class NonFiniteError(FloatingPointError):
  """The loss or gradients became NaN/Inf; the message names the first such step."""


class MismatchError(ValueError):
  """A readable checkpoint whose tensors do not fit the model being restored."""


class SaveError(OSError):
  """A checkpoint could not be written (a full disk, a vanished bucket); the message names the
  step, the directory, the cause and the newest complete checkpoint, which is intact."""


def checkpoint_dir(workdir):
  """<workdir>/checkpoints; workdir may be a local path or a bucket URL (gs://...)."""
  workdir = str(workdir)
  if '://' in workdir:
    return workdir.rstrip('/') + '/checkpoints'
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


class Checkpointer:
  """The trainer's CheckpointManager in <workdir>/checkpoints: keeps the newest `keep` checkpoints,
  saves asynchronously unless async_save=False. When to save is the caller's (cost_jax.train saves
  every config.train.checkpoint_every steps, at the end and on preemption)."""

  def __init__(self, workdir, keep=3, async_save=True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                         item_handlers=_item_handlers())
    self._pending = None  # the step of the last save (async: maybe still being written)
    self._failed = False
    _quiet_orphaned_write_errors(str(self.manager.directory))
    _drop_closed_loop_reports()  # they may come from orbax's threads before its error is raised

  def latest_step(self):
    return self.manager.latest_step()

  def restore_readable(self, abstract_state, echo=logging.warning):
    """(step, state, metadata) of the newest checkpoint that restores, or None when none does.

    A newer checkpoint that fails to restore is moved aside (`move_aside`) with one line through
    `echo` naming its step and the error. MismatchError when a readable checkpoint's tensors do
    not fit abstract_state (a model change, not damage: nothing is moved).
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, metadata = self.restore(abstract_state, step)
      except Exception as e:  # orbax and tensorstore raise many types for a damaged step
        _drop_closed_loop_reports()
        if _stored_shapes(self.manager, step) not in (None, _shapes(abstract_state)):
          raise self._mismatch(step) from e
        aside = self.move_aside(step)
        echo(f'checkpoint step {step} is unreadable ({_one_line(e)}): moved to {aside}')
        continue
      if _shapes(state) != _shapes(abstract_state):
        raise self._mismatch(step)
      return step, state, metadata
    return None

  def _mismatch(self, step):
    return MismatchError(f'checkpoint step {step} in {self.manager.directory} does not fit this '
                         'model (its tensors have other shapes)')

  def move_aside(self, step):
    """Moves checkpoint `step` to <workdir>/checkpoints_unreadable/<step>[.n]; returns the path."""
    source = os.path.join(str(self.manager.directory), str(step))
    folder = os.path.join(os.path.dirname(str(self.manager.directory)), 'checkpoints_unreadable')
    os.makedirs(folder, exist_ok=True)
    target, n = os.path.join(folder, str(step)), 0
    while os.path.exists(target):
      n += 1
      target = os.path.join(folder, f'{step}.{n}')
    shutil.move(source, target)
    self.manager.reload()
    return target

  def restore(self, abstract_state, step=None):
    """(state, metadata) of `step` (default latest); abstract_state: ShapeDtypeStructs with
    shardings."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), metadata=ocp.args.JsonRestore()))
    return restored['state'], restored['metadata']

  def save(self, step, state, metadata, nonfinite_step):
    """Saves `state` as checkpoint `step` unless a non-finite step was seen (then raises).

    nonfinite_step: host int, the first step whose loss/gradients were not finite, or -1.
    SaveError when this save, or the asynchronous one before it, cannot be written.
    """
    check_finite(nonfinite_step, self.latest_step())
    pending, self._pending = self._pending, step
    with self._writing(pending, step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(dict(metadata))),
          force=True)

  @contextlib.contextmanager
  def _writing(self, *steps):
    """A write error inside becomes one SaveError naming the first of `steps` (None: skipped) that
    is not complete on disk; the same failure seen again (at wait or close, after it was raised) is
    dropped."""
    try:
      yield
    except NonFiniteError:
      raise
    except Exception as e:  # orbax and tensorstore raise many types for a failed write
      _drop_closed_loop_reports()
      if self._failed:
        return
      self._failed = True
      try:
        self.manager.reload()
        complete = list(self.manager.all_steps())
      except Exception:  # pylint: disable=broad-except
        complete = []
      steps = [s for s in steps if s is not None]
      step = next((s for s in steps if s not in complete), steps[-1] if steps else None)
      kept = (f'step {max(complete)} is the newest complete one' if complete
              else 'none is complete')
      raise SaveError(f'writing checkpoint step {step} to {self.manager.directory} failed '
                      f'({_one_line(e)}); {kept}') from None

  def reached_preemption(self, step):
    """JAX's preemption sync point (all processes agree); for multi-process runs."""
    return self.manager.reached_preemption(step)

  def wait(self):
    with self._writing(self._pending):
      self.manager.wait_until_finished()

  def close(self):
    with self._writing(self._pending):
      self.manager.wait_until_finished()
    with self._writing(self._pending):
      self.manager.close()


def _drop_closed_loop_reports():
  """After a failed restore or save, tensorstore operations still in flight complete into the event
  loop that orbax has closed, each reported as an unraisable 'RuntimeError: Event loop is closed'
  (a traceback apiece, hundreds for a real model), and orbax's abandoned read and write coroutines
  report their own tensor's error when collected (or 'Python is likely shutting down' at exit).
  The failure itself reaches the user once (SaveError, or the one unreadable-step line). From now on
  those reports, and only those, are dropped (installed by every Checkpointer and reader)."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop', False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    closed_loop = isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
    shutdown = isinstance(error, ImportError) and 'Python is likely shutting down' in str(error)
    code = getattr(unraisable.object, 'cr_code', None)
    orbax_coroutine = code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename
    if not (closed_loop or shutdown or orbax_coroutine):
      previous(unraisable)

  hook.drops_closed_loop = True
  sys.unraisablehook = hook


class _OrphanedWriteErrors(pylogging.Filter):
  """For errors of tensor writes into `directory` (the same failure reaches the user once, as
  SaveError): drops asyncio's 'exception was never retrieved' reports (a failed save on a full
  disk leaves one per tensor, each with a traceback: hundreds for a real model) and keeps orbax's
  own error lines without their tracebacks."""

  def __init__(self, directory):
    super().__init__()
    self.directory = directory

  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else None
    if error is None or self.directory not in str(error):
      return True
    if 'exception was never retrieved' in record.getMessage():
      return False
    record.exc_info, record.exc_text = None, None
    return True


def _quiet_orphaned_write_errors(directory):
  for name in ('asyncio', 'absl'):
    log = pylogging.getLogger(name)
    if not any(isinstance(f, _OrphanedWriteErrors) and f.directory == directory
               for f in log.filters):
      log.addFilter(_OrphanedWriteErrors(directory))


def _item_handlers():
  return {'state': ocp.StandardCheckpointHandler(), 'metadata': ocp.JsonCheckpointHandler()}


def _one_line(error, limit=300):
  """`Type: first line of the message` of the error's innermost cause (tensorstore's, which names
  the tensor and the byte range, under orbax's wrapper), at most `limit` characters (a longer one
  keeps its start and its end, where the OS's reason is)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = ' '.join(str(error).strip().split('\n')[0].split())
  text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  if len(text) <= limit:
    return text
  head = limit // 2  # the start names the error and the tensor, the end the OS's reason
  return text[:head] + ' ... ' + text[-(limit - head - 5):]


def _shapes(tree):
  """Sorted (shape, dtype) of a tree's array leaves: what a checkpoint must hold to fit it."""
  return sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree) if hasattr(x, 'shape'))


def _stored_shapes(manager, step):
  """_shapes of checkpoint `step`'s stored state, or None when its metadata does not read."""
  try:
    stored = manager.item_metadata(step)['state']
    return _shapes(getattr(stored, 'tree', stored)) or None
  except Exception:  # damaged or missing metadata
    return None


def check_finite(nonfinite_step, last_checkpoint=None):
  """Raises NonFiniteError when nonfinite_step >= 0 (the state.step of the update that went
  non-finite), naming that update as the log numbers steps (completed updates: nonfinite_step + 1)
  and the last checkpoint written (step `last_checkpoint`, None = none)."""
  if int(nonfinite_step) >= 0:
    kept = (f'the last checkpoint, step {int(last_checkpoint)}, is intact'
            if last_checkpoint is not None else 'no checkpoint was written')
    raise NonFiniteError(f'Loss or gradients are not finite at step {int(nonfinite_step) + 1}; '
                         f'stopping without saving ({kept}).')


class SigtermFlag:
  """Set by SIGTERM; the single-process loop checks it at each step boundary."""

  def __init__(self):
    self.raised = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning('Signal %d: saving at the next step boundary, then exiting.', signum)
    self.raised = True

  def restore_handler(self):
    signal.signal(signal.SIGTERM, self._previous)


def should_stop_for_preemption(checkpointer, flag, step):
  """One process: the SIGTERM flag (flag may be None). Several: JAX's preemption sync point, which
  all processes reach at the same step after any of them got SIGTERM."""
  if jax.process_count() > 1:
    return bool(checkpointer.reached_preemption(step))
  return flag is not None and flag.raised


VARIABLES = ('params', 'batch_stats')  # the items of the train state that the model needs


def restore_variables(workdir, config=None, echo=logging.warning):
  """{'params', 'batch_stats'} of the newest readable checkpoint in `workdir`, on this process's
  1st device.

  Only those two items are read from disk (a partial restore: the optimiser state and the counters
  are never loaded). Works whatever mesh and process count wrote the checkpoint (the target is built
  from the stored shapes). A newer checkpoint that does not restore (a truncated file, garbled
  metadata, an empty folder) is named in one line through `echo` and the next older one is tried;
  nothing is moved (this reader may share the workdir with a trainer). config: the config whose
  model the checkpoint should hold; when given, the stored variables must have exactly the shapes of
  COST(config.model)'s, else MismatchError naming the checkpoint and the differing variables. None
  skips the check (a checkpoint of another model). Raises FileNotFoundError when `workdir` holds no
  readable checkpoint.
  """
  manager = ocp.CheckpointManager(
      checkpoint_dir(workdir), item_names=('state', 'metadata'),
      options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'metadata': ocp.JsonCheckpointHandler()})
  _drop_closed_loop_reports()
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {checkpoint_dir(workdir)}')
    for step in steps:
      try:
        return _restore_variables(manager, step, config, f'{checkpoint_dir(workdir)} step {step}')
      except MismatchError:
        raise  # readable, but another model's: not damage
      except Exception as e:  # orbax and tensorstore raise many types for a damaged step
        error = e
      _drop_closed_loop_reports()
      echo(f'checkpoint step {step} in {checkpoint_dir(workdir)} is unreadable '
           f'({_one_line(error)}): trying an older one')
    raise FileNotFoundError(f'No readable checkpoint in {checkpoint_dir(workdir)} (steps '
                            f'{", ".join(map(str, steps))} are all unreadable)')
  finally:
    manager.close()


def _restore_variables(manager, step, config, source):
  stored = manager.item_metadata(step)['state']
  stored = getattr(stored, 'tree', stored)
  if config is not None:
    check_model_shapes(stored, config.model, source)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            stored[k])
            for k in VARIABLES if stored.get(k)}
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))['state']
  return {k: state.get(k, {}) for k in VARIABLES}


def check_model_shapes(stored, model_cfg, source):
  """Raises MismatchError naming `source` when stored {'params', 'batch_stats'} (trees of leaves with a
  .shape) differ from COST(model_cfg)'s: missing, unexpected or differently shaped variables."""
  flat = lambda tree: {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape)
                       for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  expected = cost.variable_shapes(model_cfg)
  want = flat({k: expected.get(k, {}) for k in VARIABLES})
  have = flat({k: stored.get(k) or {} for k in VARIABLES})
  groups = [('differently shaped', [f'{k} stored {have[k]}, config {want[k]}'
                                     for k in sorted(want.keys() & have.keys()) if have[k] != want[k]]),
            ('missing', sorted(want.keys() - have.keys())),
            ("not in the config's model", sorted(have.keys() - want.keys()))]
  parts = [f'{len(names)} {kind} ({", ".join(names[:3])}{", ..." if len(names) > 3 else ""})'
           for kind, names in groups if names]
  if parts:
    raise MismatchError(f'{source}: the checkpoint does not hold the model of this config: '
                     + '; '.join(parts))

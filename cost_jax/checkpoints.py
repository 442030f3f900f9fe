"""Checkpoints (docs/design.md §3): orbax CheckpointManager in <workdir>/checkpoints, async,
keep-N, auto-resume, preemption, and a finiteness check before every save.

Each checkpoint is `ocp.args.Composite(state=<train state>, metadata=<JSON with next_step>)`.
`restore_variables(workdir, config)` gives {'params', 'batch_stats'} of the latest checkpoint to the
tracker and the exporter without building an optimiser.
"""

import os
import signal

from absl import logging
import jax
import orbax.checkpoint as ocp


class NonFiniteError(FloatingPointError):
  """The loss or gradients became NaN/Inf; the message names the first such step."""


def checkpoint_dir(workdir):
  """<workdir>/checkpoints; workdir may be a local path or a bucket URL (gs://...)."""
  workdir = str(workdir)
  if '://' in workdir:
    return workdir.rstrip('/') + '/checkpoints'
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


class Checkpointer:
  """The trainer's CheckpointManager: save every `every` steps and at the end, keep `keep`."""

  def __init__(self, workdir, keep=3, async_save=True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                         item_names=('state', 'metadata'))

  def latest_step(self):
    return self.manager.latest_step()

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
    """
    check_finite(nonfinite_step)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(dict(metadata))), force=True)

  def reached_preemption(self, step):
    """JAX's preemption sync point (all processes agree); for multi-process runs."""
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def check_finite(nonfinite_step):
  """Raises NonFiniteError naming the step when nonfinite_step >= 0."""
  if int(nonfinite_step) >= 0:
    raise NonFiniteError(f'Loss or gradients are not finite at step {int(nonfinite_step)}; '
                         'stopping without saving (the last checkpoint is intact).')


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


def restore_variables(workdir, config):
  """{'params', 'batch_stats'} of the latest checkpoint in `workdir`, on this process's 1st device.

  Works whatever mesh and process count wrote the checkpoint (the target is built from the stored
  shapes). config is accepted so callers state which model the checkpoint belongs to; only the model
  variables are returned, never the optimiser state.
  """
  del config
  manager = ocp.CheckpointManager(
      checkpoint_dir(workdir), item_names=('state', 'metadata'),
      options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'metadata': ocp.JsonCheckpointHandler()})
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {checkpoint_dir(workdir)}')
  stored = manager.item_metadata(step)['state']
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        getattr(stored, 'tree', stored))
  state = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))['state']
  manager.close()
  return {'params': state['params'], 'batch_stats': state.get('batch_stats', {})}

"""Multi-process start-up: one helper around `jax.distributed.initialize`, run before any JAX call.

Modes (docs/design.md §3):
  * explicit: coordinator address, process count and id given (flags or COST_COORDINATOR_ADDRESS,
    COST_NUM_PROCESSES, COST_PROCESS_ID), e.g. several processes on one machine or a plain cluster;
  * SLURM: inside `srun` with more than one task, JAX reads the SLURM environment itself;
  * TPU pod: on a multi-host TPU VM slice, JAX discovers everything (no arguments);
  * single process: nothing to do.
On CPU, cross-process collectives use gloo.
"""

import os

from absl import logging


def _env_int(name):
  value = os.environ.get(name, '')
  return int(value) if value else None


def detect_mode(coordinator_address=None):
  """'explicit', 'slurm', 'tpu_pod' or 'single' from the arguments and the environment."""
  if coordinator_address or os.environ.get('COST_COORDINATOR_ADDRESS'):
    return 'explicit'
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_JOB_ID' in os.environ:
    return 'slurm'
  if len([h for h in os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return 'tpu_pod'
  return 'single'


def initialize(coordinator_address=None, num_processes=None, process_id=None,
               local_device_ids=None):
  """Starts jax.distributed when this run spans several processes; returns the mode used.

  Must run before any other JAX call (device queries included).
  """
  import jax  # imported here so that the caller controls when JAX starts

  mode = detect_mode(coordinator_address)
  if mode == 'single':
    return mode
  if os.environ.get('JAX_PLATFORMS', '') == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if mode == 'explicit':
    jax.distributed.initialize(
        coordinator_address=coordinator_address or os.environ['COST_COORDINATOR_ADDRESS'],
        num_processes=_env_int('COST_NUM_PROCESSES') if num_processes is None else num_processes,
        process_id=_env_int('COST_PROCESS_ID') if process_id is None else process_id,
        local_device_ids=local_device_ids)
  else:  # SLURM and TPU pods: JAX's cluster detection fills in everything.
    jax.distributed.initialize()
  logging.info('jax.distributed (%s): process %d of %d, %d local / %d global devices', mode,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return mode

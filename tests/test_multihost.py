"""Two processes on localhost (jax.distributed over gloo, 2 CPU devices each) train like one process
with 4 devices: same losses (rtol 1e-6) and the same final parameters."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.test_checkpoints import TRAIN, read_metrics, train_run, variables
from tests.test_checkpoints import synthetic_root  # noqa: F401  (pytest fixture)
from tests.test_coa_sharded import COMPILATION_CACHE, FAST_COMPILE, ROOT


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def two_process_run(workdir, data, train_cfg, real_model=False, timeout=900):
  """Runs TRAIN as processes 0 and 1 of a 2-process job, 2 fake CPU devices each."""
  address = f'localhost:{_free_port()}'
  procs = []
  for pid in range(2):
    args = dict(workdir=str(workdir), data=data, train=train_cfg, coordinator=address,
                num_processes=2, process_id=pid, real_model=real_model)
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT,
               XLA_FLAGS=f'--xla_force_host_platform_device_count=2 {FAST_COMPILE}',
               COST_TEST_ARGS=json.dumps(args), **COMPILATION_CACHE)
    procs.append(subprocess.Popen([sys.executable, '-c', textwrap.dedent(TRAIN)], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outs = []
  for proc in procs:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-4000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  return outs


def check_two_processes_match_one(tmp_path, data, real_model):
  train_cfg = dict(num_steps=3, log_every=1, checkpoint_every=100)
  outs = two_process_run(tmp_path / 'two', data, train_cfg, real_model=real_model)
  assert outs == [{'step': 3}, {'step': 3}]
  assert train_run(tmp_path / 'one', data, train_cfg, num_devices=4,
                   real_model=real_model) == {'step': 3}
  two, one = read_metrics(tmp_path / 'two'), read_metrics(tmp_path / 'one')
  assert [m['step'] for m in two] == [1, 2, 3]
  np.testing.assert_allclose([m['loss'] for m in two], [m['loss'] for m in one], rtol=1e-6)
  for a, b in zip(variables(tmp_path / 'two'), variables(tmp_path / 'one')):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.heavy  # three training processes (about 2 CPU-minutes)
def test_two_processes_match_one_process_four_devices_stub(tmp_path, synthetic_root):
  check_two_processes_match_one(tmp_path, synthetic_root, real_model=False)


@pytest.mark.heavy
def test_two_processes_match_one_process_four_devices_tiny_cost(tmp_path, synthetic_root):
  check_two_processes_match_one(tmp_path, synthetic_root, real_model=True)

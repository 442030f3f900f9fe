"""Launch scripts: bash -n, shellcheck, and the dry runs print the training command."""

import os
import shlex
import subprocess

import pytest

from cost_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ['launch/gpu_node.sh', 'launch/tpu_pod.sh', 'launch/slurm.sbatch', 'bench/gpu_suite.sh']
SHELLCHECK = os.path.join(ROOT, '.venv', 'bin', 'shellcheck')


@pytest.mark.parametrize('script', SCRIPTS)
def test_bash_syntax_and_shellcheck(script):
  subprocess.run(['bash', '-n', script], cwd=ROOT, check=True)
  if not os.path.exists(SHELLCHECK):
    pytest.skip('shellcheck is not installed in .venv')
  proc = subprocess.run([SHELLCHECK, script], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


def test_gpu_node_dry_run_prints_the_command():
  proc = subprocess.run(['launch/gpu_node.sh', '--dry-run', 'configs/cost_r50.py', 'runs/my r50',
                         '--config.train.batch_size=28'], cwd=ROOT, capture_output=True,
                        text=True, check=True, env=dict(os.environ, PYTHON='python3'))
  words = shlex.split(proc.stdout.strip())
  assert words[:3] == ['cd', ROOT, '&&']
  assert words[4:] == ['python3', '-m', 'cost_jax.train', '--config=configs/cost_r50.py',
                       '--workdir=runs/my r50', '--config.train.batch_size=28']


def test_tpu_pod_dry_run_runs_on_all_workers():
  env = dict(os.environ, TPU_NAME='pod', ZONE='zone-a')
  proc = subprocess.run(['launch/tpu_pod.sh', '--dry-run', 'run', 'configs/cost_r50.py',
                         'gs://b/r50'], cwd=ROOT, capture_output=True, text=True, check=True,
                        env=env)
  words = shlex.split(proc.stdout.strip())
  assert words[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
  assert '--worker=all' in words
  remote = words[words.index('--command') + 1]
  assert 'python -m cost_jax.train --config=configs/cost_r50.py --workdir=gs://b/r50' in remote


def test_distributed_mode_detection(monkeypatch):
  for name in ('COST_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'SLURM_JOB_ID', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  assert distributed.detect_mode() == 'single'
  assert distributed.initialize() == 'single'  # no-op without a cluster
  assert distributed.detect_mode('host:1234') == 'explicit'
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'a,b,c,d')
  assert distributed.detect_mode() == 'tpu_pod'
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert distributed.detect_mode() == 'tpu_pod'  # a one-task SLURM job is not multi-process
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.detect_mode() == 'slurm'

"""Every config's `:runlocal` command runs: `python -m cost_jax.train --config=configs/<name>.py:runlocal`
trains two steps on a small synthetic set, logs finite losses and leaves a checkpoint holding that
config's model (so the commands in the configs' docstrings cannot rot)."""

import glob
import json
import math
import os
import subprocess
import sys

import pytest

from tests.test_coa_sharded import COMPILATION_CACHE, FAST_COMPILE, ROOT

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if os.path.basename(p) not in ('__init__.py', 'common.py'))
# The paper-size model compiles and steps for about 4 minutes (8 GB) on a 2-core CPU.
HEAVY = {'cost_r50'}


def test_every_config_file_is_listed():
  assert {'cost_r50', 'cost_tiny'} <= set(CONFIGS)
  for name in CONFIGS:
    with open(os.path.join(ROOT, 'configs', name + '.py')) as f:
      text = f.read()
    assert 'def get_config(arg=None)' in text and ':runlocal' in text, name


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
  from input_pipeline import synthetic
  root = str(tmp_path_factory.mktemp('synthetic'))
  synthetic.generate(root, 'lasot', videos=3, seed=0, verbose=False, min_frames=8, max_frames=12)
  return root


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY else n
                                  for n in CONFIGS])
def test_runlocal_trains_two_steps(name, synthetic_root, tmp_path):
  import importlib
  workdir = str(tmp_path / 'run')
  command = [sys.executable, '-m', 'cost_jax.train', f'--config=configs/{name}.py:runlocal',
             f'--workdir={workdir}', f'--config.data.roots.synthetic={synthetic_root}']
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT,
             XLA_FLAGS=FAST_COMPILE, **COMPILATION_CACHE)
  proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-4000:]

  config = importlib.import_module(f'configs.{name}').get_config('runlocal')
  assert config.train.num_steps == 2 and config.train.batch_size == 2
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records] == [1, 2]
  assert all(math.isfinite(r['loss']) and r['loss'] > 0 for r in records), records

  from cost_jax import checkpoints
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.latest_step() == 2
  ckpt.close()
  variables = checkpoints.restore_variables(workdir, config)  # shapes checked against the config
  assert set(variables['params']) >= {'backbone', 'visual', 'text_encoder', 'vl', 'head'}

"""checkpoints.restore_variables: reads only the model's variables, and checks them against the
config's model when given one (cost_jax.track turns a mismatch into one usage line)."""

import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cost_jax import checkpoints
from cost_jax import cli
from cost_jax import track
from cost_jax.evaluation import results_io
from cost_jax.models import cost
from tests.test_models import micro_model_cfg


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with one checkpoint of a train state of COST(micro config), random leaves."""
  cfg = micro_model_cfg()
  shapes = cost.variable_shapes(cfg)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
  state = {'step': jnp.asarray(3, jnp.int32), 'params': variables['params'],
           'batch_stats': variables['batch_stats'],
           'opt_state': optax.adamw(1e-3).init(variables['params']),
           'nonfinite_step': jnp.asarray(-1, jnp.int32)}
  workdir = str(tmp_path_factory.mktemp('run'))
  ckpt = checkpoints.Checkpointer(workdir, async_save=False)
  ckpt.save(3, state, {'next_step': 3}, -1)
  ckpt.close()
  config = micro_config_dict(cfg)
  return workdir, config, variables


def micro_config_dict(model_cfg):
  import ml_collections
  config = ml_collections.ConfigDict()
  config.model = model_cfg
  return config


def test_restores_exactly_the_model_variables(saved, monkeypatch):
  workdir, config, variables = saved
  requested = []
  restore = checkpoints.ocp.CheckpointManager.restore

  def spy(self, step, args=None, **kwargs):
    requested.append(sorted(args['state'].item))
    return restore(self, step, args=args, **kwargs)

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'restore', spy)
  for cfg in (config, None):  # checked against the config's model, and unchecked
    restored = checkpoints.restore_variables(workdir, cfg)
    assert sorted(restored) == ['batch_stats', 'params']
    jax.tree.map(np.testing.assert_array_equal, restored, dict(variables))
  # only the model's variables are asked of orbax: the optimiser state is never read
  assert requested == [['batch_stats', 'params']] * 2


def test_a_checkpoint_of_another_model_is_named(saved):
  workdir, config, _ = saved
  other = micro_config_dict(micro_model_cfg())
  other.model.hidden_dim = 24
  other.model.vl.num_layers = 2
  with pytest.raises(ValueError) as e:
    checkpoints.restore_variables(workdir, other)
  message = str(e.value)
  assert checkpoints.checkpoint_dir(workdir) in message and 'step 3' in message
  assert re.search(r'\d+ differently shaped \(params/\S+ stored \(\d+(, \d+)*,?\), config \(', message)
  assert 'missing (params/vl/layer_1/' in message, message  # the second VL layer
  with pytest.raises(cli.UsageError) as e:  # the commands' one line (exit 2)
    track.restore_variables(workdir, other)
  assert '\n' not in str(e.value) and 'does not hold the model of this config' in str(e.value)


def test_no_checkpoint_is_a_usage_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    checkpoints.restore_variables(str(tmp_path))
  with pytest.raises(cli.UsageError):
    track.restore_variables(str(tmp_path), None)


def test_result_paths_have_one_layout():
  folder = results_io.result_folder('res', 'cost', 'lasot')
  assert folder == os.path.join('res', 'cost', 'lasot')
  assert results_io.result_file(folder, 'airplane-1') == os.path.join(folder, 'airplane-1.txt')
  assert results_io.result_path('res', 'cost', 'lasot', 'airplane-1') == os.path.join(
      'res', 'cost', 'lasot', 'airplane-1.txt')


@pytest.mark.parametrize('how', ['truncated file', 'garbled metadata', 'empty folder'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(saved, tmp_path, how):
  """What track, export and visualize read: step 5 damaged -> step 3's variables, one line naming
  step 5, and step 5 left where it is (a reader moves nothing); all damaged -> FileNotFoundError.
  Garbled metadata (the trainer's JSON item) leaves the variables readable: step 5's are used."""
  from tests.test_train_faults import damage
  source, config, variables = saved
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  newer = jax.tree.map(lambda x: x + 1, dict(variables))
  state = {'step': jnp.asarray(5, jnp.int32), **newer,
           'opt_state': optax.adamw(1e-3).init(newer['params']),
           'nonfinite_step': jnp.asarray(-1, jnp.int32)}
  ckpt = checkpoints.Checkpointer(workdir, async_save=False)
  ckpt.save(5, state, {'next_step': 5}, -1)
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, checkpoints.restore_variables(workdir, config),
               newer)
  step_dir = os.path.join(checkpoints.checkpoint_dir(workdir), '5')
  damage(step_dir, how)
  lines = []
  restored = checkpoints.restore_variables(workdir, config, echo=lines.append)
  if how == 'garbled metadata':
    jax.tree.map(np.testing.assert_array_equal, restored, newer)
    assert not lines
    return
  jax.tree.map(np.testing.assert_array_equal, restored, dict(variables))
  assert len(lines) == 1 and lines[0].startswith('checkpoint step 5 in ') and \
      lines[0].endswith('trying an older one') and '\n' not in lines[0], lines
  assert os.path.isdir(step_dir)
  damage(os.path.join(checkpoints.checkpoint_dir(workdir), '3'), how)
  with pytest.raises(FileNotFoundError,
                     match=r'No readable checkpoint .*\(steps 5, 3 are all unreadable\)'):
    checkpoints.restore_variables(workdir, config, echo=lines.append)

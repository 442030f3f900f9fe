"""Checkpoints through the training loop: resume after SIGTERM is bit-identical to a straight run,
a NaN (injected through one batch's boxes) stops the run naming the step with the last checkpoint intact, restore_variables.

Each run is a fresh process (tests.test_coa_sharded.run_with_devices) of train_and_checkpoint with the
stub model of tests.test_train on a small synthetic LaSOT-layout set.
"""

import json
import os

import numpy as np
import pytest

from tests.test_coa_sharded import run_with_devices

TRAIN = """
import json, os, signal
from cost_jax import checkpoints, train
from input_pipeline import stream
from tests.test_train import StubCOST, tiny_config

args = json.loads(os.environ['COST_TEST_ARGS'])
config = tiny_config(batch_size=args.get('batch_size', 4), pretrained_vocab=True)
config.data.roots.synthetic = args['data']
config.train.update(args['train'])
config.mesh.shape = tuple(args.get('mesh', (-1, 1)))
if args.get('sigterm_at') is not None or args.get('nan_at') is not None:
  import numpy as np
  original = stream.PairStream.iterate
  def iterate(self, start_step=0, **kwargs):
    for step, batch in enumerate(original(self, start_step, **kwargs), start_step):
      if step == args.get('sigterm_at'):  # a real SIGTERM while the batch of that step is read
        os.kill(os.getpid(), signal.SIGTERM)
      if step == args.get('nan_at'):  # the NaN guard's test: this step's boxes are NaN
        batch = dict(batch, search_box=np.full_like(batch['search_box'], np.nan))
      yield batch
  stream.PairStream.iterate = iterate
if args.get('coordinator'):
  from cost_jax import distributed
  distributed.initialize(args['coordinator'], args['num_processes'], args['process_id'])
model = None if args.get('real_model') else StubCOST(config.model)
try:
  state = train.train_and_checkpoint(config, args['workdir'], model=model)
  print(json.dumps({'step': int(state.step)}))
except checkpoints.NonFiniteError as e:
  print(json.dumps({'error': str(e)}))
"""


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
  from input_pipeline import synthetic
  root = str(tmp_path_factory.mktemp('synthetic'))
  synthetic.generate(root, 'lasot', videos=4, seed=0, verbose=False)
  return root


def train_run(workdir, data, train_cfg, num_devices=1, **extra):
  args = dict(workdir=str(workdir), data=data, train=train_cfg, **extra)
  return run_with_devices(TRAIN, num_devices, env={'COST_TEST_ARGS': json.dumps(args)})


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def variables(workdir):
  from cost_jax import checkpoints
  import jax
  return jax.tree.leaves(checkpoints.restore_variables(str(workdir), None))


@pytest.mark.heavy  # three training processes; the fast variant is ..._continues_bit_identically
def test_resume_after_sigterm_is_bit_identical(tmp_path, synthetic_root):
  train_cfg = dict(num_steps=6, log_every=1, checkpoint_every=100)
  assert train_run(tmp_path / 'straight', synthetic_root, train_cfg) == {'step': 6}
  stopped = train_run(tmp_path / 'resumed', synthetic_root, train_cfg, sigterm_at=2)
  assert stopped == {'step': 3}  # SIGTERM during step 3's input: step 3 finishes, saves, exits 0
  assert train_run(tmp_path / 'resumed', synthetic_root, train_cfg) == {'step': 6}
  straight, resumed = read_metrics(tmp_path / 'straight'), read_metrics(tmp_path / 'resumed')
  assert [m['step'] for m in resumed] == [1, 2, 3, 4, 5, 6]
  for key in ('loss', 'cls', 'l1', 'giou', 'coa', 'grad_norm'):
    assert [m[key] for m in straight] == [m[key] for m in resumed], key
  for a, b in zip(variables(tmp_path / 'straight'), variables(tmp_path / 'resumed')):
    np.testing.assert_array_equal(a, b)


def test_forced_nan_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path, synthetic_root):
  train_cfg = dict(num_steps=6, log_every=3, checkpoint_every=2)
  out = train_run(tmp_path, synthetic_root, train_cfg, nan_at=3)
  # The update from state.step 3 is the 4th: the log's "step 4"; checkpoint 2 exists.
  assert 'not finite at step 4;' in out['error'], out
  assert out['error'].endswith('(the last checkpoint, step 2, is intact).'), out
  # The logs up to there: JSON lines with losses, lr and norms, and TensorBoard event files.
  (logged,) = read_metrics(tmp_path)
  assert logged['step'] == 3 and logged['all_finite'] == 1.0
  for key in ('loss', 'cls', 'l1', 'giou', 'coa', 'lr', 'grad_norm', 'param_norm', 'update_norm'):
    assert np.isfinite(logged[key]), key
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))
  from cost_jax import checkpoints
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 2
  assert all(np.isfinite(x).all() for x in variables(tmp_path))


def test_nan_before_any_checkpoint_says_so_and_numbers_steps_as_the_log(tmp_path, synthetic_root):
  train_cfg = dict(num_steps=6, log_every=1, checkpoint_every=100)
  out = train_run(tmp_path, synthetic_root, train_cfg, nan_at=2)
  logged = read_metrics(tmp_path)
  assert [m['step'] for m in logged] == [1, 2] and all(m['all_finite'] == 1.0 for m in logged)
  assert out['error'] == ('Loss or gradients are not finite at step 3; stopping without saving '
                          '(no checkpoint was written).'), out
  assert not os.path.isdir(tmp_path / 'checkpoints') or not os.listdir(tmp_path / 'checkpoints')


def test_checkpointer_refuses_to_save_after_nonfinite_step(tmp_path):
  from cost_jax import checkpoints
  ckpt = checkpoints.Checkpointer(str(tmp_path), keep=2, async_save=False)
  state = {'params': {'w': np.ones(3, np.float32)}}
  for step in (1, 2, 3):
    ckpt.save(step, state, {'next_step': step}, nonfinite_step=-1)
  with pytest.raises(checkpoints.NonFiniteError, match=r'step 8; .*the last checkpoint, step 3, is intact'):
    ckpt.save(4, state, {'next_step': 4}, nonfinite_step=7)
  ckpt.wait()
  assert ckpt.latest_step() == 3 and sorted(ckpt.manager.all_steps()) == [2, 3]  # keep-N
  restored, metadata = ckpt.restore({'params': {'w': np.zeros(3, np.float32)}})
  assert metadata == {'next_step': 3}
  np.testing.assert_array_equal(restored['params']['w'], state['params']['w'])
  ckpt.close()


RESTORE_CONTINUES = """
import json, tempfile
import jax, numpy as np
from cost_jax import checkpoints, sharding, train
from tests.test_train import StubCOST, random_batch, tiny_config

config = tiny_config(batch_size=4)
config.mesh.shape = (1, 1)
mesh = sharding.make_mesh(config.mesh)
model = StubCOST(config.model)
state, shardings, tx = train.create_train_state(config, model, jax.random.PRNGKey(0), mesh)
step = train.make_train_step(config, model, tx, mesh, shardings)
batches = [random_batch(config, seed) for seed in (1, 2)]
copy = lambda s: jax.tree.map(lambda x: x.copy(), s)  # the step donates its input state

one, m1 = step(copy(state), batches[0])
straight, m_straight = step(copy(one), batches[1])
with tempfile.TemporaryDirectory() as workdir:
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(1, one, {'next_step': 1}, nonfinite_step=-1)
  ckpt.wait()
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          one, shardings)
  restored, metadata = ckpt.restore(abstract)
  ckpt.close()
resumed, m_resumed = step(restored, batches[1])
same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(straight)),
                                                jax.tree.leaves(jax.device_get(resumed))))
print(json.dumps({'same_state': same, 'next_step': metadata['next_step'],
                  'loss': [float(m_straight['loss']), float(m_resumed['loss'])],
                  'step': int(resumed.step)}))
"""


def test_restored_state_continues_bit_identically():
  out = run_with_devices(RESTORE_CONTINUES, 1)
  assert out['same_state'] and out['next_step'] == 1 and out['step'] == 2
  assert out['loss'][0] == out['loss'][1]


@pytest.mark.heavy
def test_max_minutes_saves_and_stops_then_a_rerun_continues(tmp_path, synthetic_root):
  capped = dict(num_steps=4, log_every=1, checkpoint_every=100, max_minutes=1e-9)
  assert train_run(tmp_path, synthetic_root, capped) == {'step': 1}  # one step, then the cap
  from cost_jax import checkpoints
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 1
  assert train_run(tmp_path, synthetic_root, dict(capped, max_minutes=0.0)) == {'step': 4}
  assert [m['step'] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]

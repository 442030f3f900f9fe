"""Training under faults: data that gives no example, SIGTERM while the input stalls, a damaged newest
checkpoint, two trainers on one workdir, a changed config on resume, bad config values.

Training runs are fresh processes: `run_train` (train_and_checkpoint with the stub model of
tests.test_train) or `python -m cost_jax.train` with a config file narrowing configs/cost_tiny.py as
tests.test_train.tiny_config does. Every subprocess has a timeout, so a hang fails the test.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.test_coa_sharded import COMPILATION_CACHE, FAST_COMPILE, ROOT

RUN = """
import json, os, threading
from cost_jax import checkpoints, train, workdir
from input_pipeline import stream
from tests.test_train import StubCOST, tiny_config

args = json.loads(os.environ['COST_TEST_ARGS'])
config = tiny_config(batch_size=2, pretrained_vocab=True)
config.data.roots.synthetic = args['data']
config.train.update(args['train'])
config.model.update(args.get('model', {}))
if args.get('stall_from') is not None:  # from this example on the input never returns
  plan_np = stream.PairStream._plan_np
  def stalled(self, g, first_attempt):
    if g >= args['stall_from']:
      print('stalled', flush=True)
      threading.Event().wait()
    return plan_np(self, g, first_attempt)
  stream.PairStream._plan_np = stalled
if args.get('stall_after_steps') is not None:  # tf.data gives that many batches, then none ever
  chunks = stream.PairStream._chunks
  def stalled_chunks(dataset, failures):
    for n, chunk in enumerate(chunks(dataset, failures)):
      if n == args['stall_after_steps']:
        print('stalled', flush=True)
        threading.Event().wait()
      yield chunk
  stream.PairStream._chunks = staticmethod(stalled_chunks)
try:
  state = train.train_and_checkpoint(config, args['workdir'], model=StubCOST(config.model))
  print(json.dumps({'step': int(state.step)}))
except (workdir.InUseError, workdir.ConfigMismatch, stream.DataError, checkpoints.SaveError) as e:
  print(json.dumps({'error': f'{type(e).__name__}: {e}'}))
"""

CONFIG = """
from tests.test_train import tiny_config

def get_config(arg=None):
  config = tiny_config(batch_size=2, pretrained_vocab=True)
  config.train.update(dict(num_steps=2, log_every=1, checkpoint_every=2))
  return config
"""

TRAIN = dict(num_steps=2, log_every=1, checkpoint_every=2)


def environment(args=None):
  return dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT,
              XLA_FLAGS=FAST_COMPILE, COST_TEST_ARGS=json.dumps(args or {}), **COMPILATION_CACHE)


class Background:
  """A training process (stub model) running in the background. Its stdout and stderr go to files,
  not pipes: a pipe nobody reads fills up (TF's and absl's logs) and blocks the child mid-write,
  which looked like a hang of the run under test."""

  def __init__(self, args, folder):
    os.makedirs(folder, exist_ok=True)
    self._paths = [os.path.join(folder, f'train.{name}') for name in ('stdout', 'stderr')]
    self._files = [open(path, 'w+') for path in self._paths]
    self.proc = subprocess.Popen([sys.executable, '-c', RUN], cwd=ROOT, env=environment(args),
                                 text=True, stdout=self._files[0], stderr=self._files[1])
    self.pid = self.proc.pid

  def poll(self):
    return self.proc.poll()

  def output(self):
    """(stdout, stderr) written so far."""
    texts = []
    for path in self._paths:
      with open(path) as f:
        texts.append(f.read())
    return tuple(texts)

  def communicate(self, timeout):
    """Waits for the exit (subprocess.TimeoutExpired after `timeout` s); (stdout, stderr)."""
    self.proc.wait(timeout=timeout)
    for f in self._files:
      f.close()
    return self.output()

  def send_signal(self, signum):
    self.proc.send_signal(signum)

  def kill(self):
    self.proc.kill()

  @property
  def returncode(self):
    return self.proc.returncode


def start_train(workdir, data, train_cfg, **extra):
  """A Background training run in `workdir` (its logs beside the workdir)."""
  args = dict(workdir=str(workdir), data=data, train=train_cfg, **extra)
  return Background(args, str(workdir) + '.logs')


def run_train(workdir, data, train_cfg, timeout=900, **extra):
  """(JSON of the last stdout line, stderr) of a training run; asserts exit code 0."""
  proc = start_train(workdir, data, train_cfg, **extra)
  try:
    out, err = proc.communicate(timeout=timeout)
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-4000:]
  return json.loads(out.strip().splitlines()[-1]), err


def train_command(*args, timeout=900):
  """`python -m cost_jax.train args...` -> CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'cost_jax.train', *args], cwd=ROOT, env=environment(),
                        capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, code=2):
  """The command exited with `code`, its last stderr line is 'error: ...' and no traceback came."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == code and lines and lines[-1].startswith('error: '), proc.stderr[-4000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-4000:]
  return lines[-1]


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def set_sentences(root, sentence):
  """Every sequence of a synthetic LaSOT-layout tree gets `sentence`."""
  for path in glob.glob(os.path.join(root, '*', '*', 'nlp.txt')):
    with open(path, 'w', encoding='utf-8') as f:
      f.write(sentence + '\n')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  from input_pipeline import synthetic
  root = str(tmp_path_factory.mktemp('synthetic'))
  synthetic.generate(root, 'lasot', videos=4, seed=0, verbose=False)
  return root


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / 'tiny_train.py'
  path.write_text(CONFIG)
  return str(path)


# ------------------------------------------------------------------ 1, 2: the input

def test_train_ends_with_one_line_when_every_sample_is_bad(tmp_path, data, config_file):
  """The hang of issue 15: every sentence empty -> the planner's DataError ends `cost_jax.train` with
  one line and exit code 2 (it used to be dropped by tf.data and the run spun forever)."""
  root = str(tmp_path / 'empty')
  shutil.copytree(data, root)
  set_sentences(root, '')
  proc = train_command(f'--config={config_file}', f'--workdir={tmp_path}/w',
                       f'--config.data.roots.synthetic={root}')
  line = assert_one_line_error(proc)
  assert line.startswith("error: example 0: 64 attempts in a row hit bad data ({'empty_sentence': 64})")


def test_non_ascii_sentences_train(tmp_path, data):
  """The issue's reproduction (every sentence non-ASCII) trains: nothing is replaced."""
  root = str(tmp_path / 'unicode')
  shutil.copytree(data, root)
  set_sentences(root, 'rouge carré — “red square”')
  out, _ = run_train(tmp_path / 'w', root, TRAIN)
  assert out == {'step': 2}
  assert [m['step'] for m in read_metrics(tmp_path / 'w')] == [1, 2]
  assert not any(k.startswith('replaced/') for m in read_metrics(tmp_path / 'w') for k in m)


def wait_for(predicate, timeout, proc=None):
  end = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < end, 'timed out; stderr: ' + (proc.output()[1][-4000:] if proc else '')
    assert proc is None or proc.poll() is None, proc.output()[1][-4000:]
    time.sleep(0.2)


def test_sigterm_while_the_input_stalls_saves_and_exits(tmp_path, data):
  """SIGTERM while the loop waits for a batch that never comes: the step reached is saved and the
  process exits 0 (the main thread waits in Python, where the signal handler runs)."""
  work = tmp_path / 'w'
  proc = start_train(work, data, dict(num_steps=6, log_every=1, checkpoint_every=100),
                     stall_after_steps=2)  # steps 0 and 1 train, step 2's batch never comes
  try:
    wait_for(lambda: os.path.isfile(work / 'metrics.jsonl') and len(read_metrics(work)) == 2, 900,
             proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-4000:]
  assert json.loads(out.strip().splitlines()[-1]) == {'step': 2}
  assert 'Preempted while waiting for input: saving step 2' in err
  from cost_jax import checkpoints
  assert checkpoints.Checkpointer(str(work)).latest_step() == 2


# ------------------------------------------------------------------ 4: a damaged newest checkpoint

@pytest.fixture(scope='module')
def trained(tmp_path_factory, data):
  """A workdir with checkpoints 2, 4, 6 of a 6-step run, and its metrics."""
  work = tmp_path_factory.mktemp('trained') / 'w'
  out, _ = run_train(work, data, dict(num_steps=6, log_every=1, checkpoint_every=2))
  assert out == {'step': 6}
  return str(work), read_metrics(work)


def damage(step_dir, how):
  if how == 'truncated file':
    files = [os.path.join(d, f) for d, _, names in os.walk(step_dir) for f in names]
    path = max(files, key=os.path.getsize)
    with open(path, 'rb') as f:
      kept = f.read()
    with open(path, 'wb') as f:
      f.write(kept[:len(kept) // 2])
  elif how == 'garbled metadata':
    with open(os.path.join(step_dir, 'metadata', 'metadata'), 'w') as f:
      f.write('{"next_step": ')
  else:  # an empty folder
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


@pytest.mark.parametrize('how', ['truncated file', 'garbled metadata', 'empty folder'])
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, data, trained, how):
  """Step 6 damaged: resume restores step 4 (losses of steps 5, 6 as the first run's), says in one
  line that step 6 was unreadable and why, and keeps it in checkpoints_unreadable/."""
  source, first = trained
  work = str(tmp_path / 'w')
  shutil.copytree(source, work)
  damage(os.path.join(work, 'checkpoints', '6'), how)
  out, err = run_train(work, data, dict(num_steps=8, log_every=1, checkpoint_every=2))
  assert out == {'step': 8}
  said = [line for line in err.splitlines() if 'is unreadable' in line]
  aside = os.path.join(work, 'checkpoints_unreadable', '6')
  assert len(said) == 1 and re.search(
      rf'checkpoint step 6 is unreadable \(\w+: .+\): moved to {re.escape(aside)}$', said[0]), said
  assert os.path.isdir(aside)
  assert 'Traceback' not in err, err[err.find('Traceback'):][:4000]
  rows = read_metrics(work)
  assert [m['step'] for m in rows] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
  assert [m['loss'] for m in rows[6:8]] == [m['loss'] for m in first[4:6]]  # bit-identical resume
  from cost_jax import checkpoints
  assert sorted(checkpoints.Checkpointer(work).manager.all_steps()) == [4, 6, 8]


# ------------------------------------------------------------------ 9: a full disk

@pytest.fixture
def small_disk(tmp_path):
  """A 3 MB tmpfs (room for the stub model's first checkpoint, not its second); skipped where this
  process may not mount one."""
  folder = tmp_path / 'disk'
  folder.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(folder)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here: {mounted.stderr.strip()}')
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', str(folder)], check=False)


def test_a_full_disk_ends_training_with_one_error_and_keeps_the_last_checkpoint(small_disk,
                                                                                 data):
  """No space for checkpoint 4: SaveError naming the step, the directory, the OS's reason and the
  newest complete checkpoint (cost_jax.train prints it as its one line, exit 1), no traceback
  (there was one per tensor), and step 2 restores."""
  work = small_disk / 'w'
  out, err = run_train(work, data, dict(num_steps=8, log_every=1, checkpoint_every=2))
  assert re.fullmatch(rf"SaveError: writing checkpoint step 4 to {re.escape(str(work))}/checkpoints "
                      r"failed \(.+No space left on device.*\); step 2 is the newest complete one",
                      out['error']), out
  assert 'Traceback' not in err, err[err.find('Traceback'):][:4000]
  assert 'exception was never retrieved' not in err
  from cost_jax import checkpoints
  assert checkpoints.restore_variables(str(work))['params']


# ------------------------------------------------------------------ 5: two trainers, one workdir

def test_second_trainer_is_refused_and_a_killed_one_leaves_no_stuck_lock(tmp_path, data,
                                                                         config_file):
  work = tmp_path / 'w'
  first = start_train(work, data, TRAIN, stall_from=0)  # holds the workdir, never finishes
  try:
    lock = work / 'train.lock'
    wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), 900, first)
    proc = train_command(f'--config={config_file}', f'--workdir={work}',
                         f'--config.data.roots.synthetic={data}')
    line = assert_one_line_error(proc)
    assert line.startswith(f'error: workdir in use by PID {first.pid}: {work}'), line
  finally:
    first.kill()  # SIGKILL: no handler, no cleanup
    first.communicate(timeout=60)
  out, _ = run_train(work, data, TRAIN)  # the kernel dropped the dead process's lock
  assert out == {'step': 2}
  assert [m['step'] for m in read_metrics(work)] == [1, 2]


# ------------------------------------------------------------------ 6: the recorded config

def test_workdir_records_its_config_and_resume_compares_with_it(tmp_path, data):
  work = tmp_path / 'w'
  assert run_train(work, data, TRAIN)[0] == {'step': 2}
  with open(work / 'config.json') as f:
    recorded = json.load(f)
  assert recorded['model']['hidden_dim'] == 32 and recorded['train']['num_steps'] == 2
  refused, _ = run_train(work, data, dict(TRAIN, num_steps=4), model={'hidden_dim': 48})
  assert refused['error'] == (
      f'ConfigMismatch: {work} was trained with another model ({work}/config.json): '
      'model.hidden_dim: trained 32, now 48; resume with those model fields, or train in a new '
      '--workdir'), refused
  from cost_jax import checkpoints
  assert checkpoints.Checkpointer(str(work)).latest_step() == 2
  out, err = run_train(work, data, dict(TRAIN, num_steps=4, lr=2e-3))
  assert out == {'step': 4}
  assert ('resuming with changed training fields (allowed): train.lr: trained 0.001, now 0.002; '
          'train.num_steps: trained 2, now 4') in err
  with open(work / 'config.json') as f:
    assert json.load(f)['train']['lr'] == 2e-3


def cli_error(module, *args):
  run = subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True,
                       cwd=ROOT, env=environment(), timeout=900)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), run.stderr[-3000:]
  return lines[0]


def test_track_and_export_check_or_use_the_recorded_config(tmp_path):
  """The workdir's config.json against --config: each differing model field named in one line,
  exit 2; without --config the recorded config is used (track_video.resolve_config)."""
  from configs import cost_tiny
  from cost_jax import cli, track_video, workdir
  from tests.test_train import tiny_config
  work = str(tmp_path / 'w')
  trained = tiny_config(pretrained_vocab=True)
  trained.model.search_size = 160
  workdir.record_config(work, trained)
  expected = workdir.differences(workdir.as_dict(trained), workdir.as_dict(cost_tiny.get_config()),
                                 'model')
  assert 'model.search_size: trained 160, now 128' in expected and 'model.hidden_dim: trained 32, now 64' in expected
  for module, extra in (('cost_jax.track', ['--dataset=synthetic', f'--data_dir={tmp_path}',
                                            f'--results_dir={tmp_path}/r']),
                        ('cost_jax.export', [f'--out={tmp_path}/o'])):
    line = cli_error(module, '--config=configs/cost_tiny.py', f'--workdir={work}', *extra)
    assert line == (f'error: --config is not the model {work} was trained with ({work}/config.json): '
                    + '; '.join(expected)), line
  used = track_video.resolve_config(None, work)
  assert workdir.as_dict(used) == workdir.as_dict(trained)
  assert used.model.backbone.widths == (8, 8, 16)  # tuples come back as tuples
  assert track_video.resolve_config(trained, work) is trained
  with pytest.raises(cli.UsageError, match='--config is required: .* records no config'):
    track_video.resolve_config(None, str(tmp_path / 'other'))


# ------------------------------------------------------------------ 9: bad config values

@pytest.mark.parametrize('field,value,message', [
    ('train.lr_milestones', ('a', 'b', 'c'), "config.train.lr_milestones=('a', 'b', 'c'): expected step numbers"),
    ('model.dtype', 'float16x', "config.model.dtype='float16x': expected one of float32, bfloat16"),
    ('train.batch_size', -2, 'config.train.batch_size=-2: expected a positive integer'),
    ('train.template_drop', 1.5, 'config.train.template_drop=1.5: expected a probability in [0, 1]'),
])
def test_validate_names_the_field(field, value, message):
  from configs import common, cost_tiny
  config = cost_tiny.get_config()
  common.validate(config)
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(common.ConfigError) as e:
    common.validate(config)
  assert str(e.value).startswith(message), e.value


@pytest.mark.parametrize('override,message', [
    ('--config.train.batch_size=-2', 'error: config.train.batch_size=-2: expected a positive integer'),
    ('--config.train.lr_milestones=abc', "error: config.train.lr_milestones=('abc',): "
                                         'expected step numbers'),
])
def test_train_command_refuses_bad_values_before_creating_anything(tmp_path, override, message):
  proc = train_command('--config=configs/cost_tiny.py', f'--workdir={tmp_path}/w', override)
  assert assert_one_line_error(proc).startswith(message)
  assert len(proc.stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / 'w')

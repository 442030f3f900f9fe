"""Converter machinery: rename rules, ignore lists, shape checks, safetensors round trip, stand-ins."""

import collections
import os

import numpy as np
import pytest
import torch

from cost_jax.convert import core


def _state():
  g = torch.Generator().manual_seed(0)
  return collections.OrderedDict([
      ('conv1.weight', torch.randn(8, 3, 3, 3, generator=g)),
      ('fc.weight', torch.randn(5, 4, generator=g)),
      ('fc.bias', torch.randn(5, generator=g)),
      ('head.weight', torch.randn(2, 4, generator=g)),
  ])


RULES = [
    (r'conv1\.weight', r'params/conv1/kernel', 'conv'),
    (r'fc\.weight', r'params/fc/kernel', 'linear'),
    (r'fc\.(bias)', r'params/fc/\1', 'none'),
]


def test_convert_state_dict_renames_transforms_and_reports():
  state = _state()
  flat, report = core.convert_state_dict(state, RULES, ignore=[r'head\..*'], source='x.pth')
  np.testing.assert_array_equal(flat['params/conv1/kernel'],
                                state['conv1.weight'].numpy().transpose(2, 3, 1, 0))
  assert flat['params/conv1/kernel'].shape == (3, 3, 3, 8)  # HWIO
  np.testing.assert_array_equal(flat['params/fc/kernel'], state['fc.weight'].numpy().T)
  np.testing.assert_array_equal(flat['params/fc/bias'], state['fc.bias'].numpy())
  assert report['ignored'] == ['head.weight']
  assert report['source'] == 'x.pth'
  assert ['fc.bias', 'params/fc/bias'] in report['converted']


def test_unknown_key_is_an_error_naming_it():
  with pytest.raises(core.ConversionError, match=r'head\.weight'):
    core.convert_state_dict(_state(), RULES, ignore=[], source='x.pth')


def test_save_flat_load_flat_round_trip(tmp_path):
  flat = {'params/a/kernel': np.arange(6, dtype=np.float32).reshape(2, 3),
          'batch_stats/bn/mean': np.ones(4, np.float32), 'params/ids': np.arange(3, dtype=np.int32)}
  path = str(tmp_path / 'w.safetensors')
  core.save_flat(path, flat)
  back = core.load_flat(path)
  assert set(back) == set(flat)
  for k in flat:
    assert back[k].dtype == flat[k].dtype
    np.testing.assert_array_equal(back[k], flat[k])


def _variables():
  return {'params': {'a': {'kernel': np.zeros((2, 3), np.float32), 'bias': np.zeros(3, np.float32)}},
          'batch_stats': {'bn': {'mean': np.zeros(4, np.float32)}}}


def test_merge_into_replaces_given_keys_and_keeps_others():
  kernel = np.arange(6, dtype=np.float64).reshape(2, 3)
  merged = core.merge_into(_variables(), {'params/a/kernel': kernel})
  np.testing.assert_array_equal(merged['params']['a']['kernel'], kernel)
  assert merged['params']['a']['kernel'].dtype == np.float32  # the model's dtype
  np.testing.assert_array_equal(merged['params']['a']['bias'], np.zeros(3))
  np.testing.assert_array_equal(merged['batch_stats']['bn']['mean'], np.zeros(4))


def test_merge_into_shape_check_names_tensors():
  bad = {'params/a/kernel': np.zeros((3, 2)), 'params/nowhere': np.zeros(1)}
  with pytest.raises(core.ConversionError, match=r'params/a/kernel.*\(3, 2\).*\(2, 3\)') as e:
    core.merge_into(_variables(), bad)
  assert 'params/nowhere' in str(e.value)


def test_check_shapes_names_missing_and_mismatched():
  flat = {'params/a/kernel': np.zeros((2, 4)), 'batch_stats/bn/mean': np.zeros(4)}
  with pytest.raises(core.ConversionError) as e:
    core.check_shapes(flat, _variables())
  assert 'missing tensor params/a/bias' in str(e.value)
  assert 'shape mismatch params/a/kernel' in str(e.value)
  core.check_shapes(core.flatten(_variables()), _variables())  # complete and right: no error


class _Pickled:  # stands for a training-code object pickled next to the weights
  def __init__(self):
    self.fun_name = 'transt_resnet50'
    self.kwds = {'settings': 3}


def test_load_torch_file_weights_only_with_stand_ins(tmp_path):
  path = str(tmp_path / 'ckpt.pth')
  obj = _Pickled()
  torch.save({'net': _state(), 'constructor': obj}, path)
  with pytest.raises(core.ConversionError, match='weights-only'):
    core.load_torch_file(path)  # the class is not allowlisted: refused, never unpickled
  loaded = core.load_torch_file(path, stand_ins=[(_Pickled.__module__, '_Pickled')])
  constructor = loaded['constructor']
  assert isinstance(constructor, core.StandIn) and not isinstance(constructor, _Pickled)
  assert constructor.fun_name == 'transt_resnet50' and constructor.kwds == {'settings': 3}
  torch.testing.assert_close(loaded['net']['fc.weight'], _state()['fc.weight'])


def test_load_torch_file_plain_state_dict(tmp_path):
  path = str(tmp_path / 'sd.pth')
  torch.save(_state(), path)
  loaded = core.load_torch_file(path)
  assert list(loaded) == list(_state())


def test_unreadable_weight_files_are_named_with_the_problem(tmp_path):
  """Empty, truncated and garbage files: ConversionError naming the file, what it should be and
  why (not torch's '[Errno 22]' or safetensors' path-less header error)."""
  from safetensors.numpy import save_file
  from cost_jax.convert import bert
  good_pth, good_st = str(tmp_path / 'good.pth'), str(tmp_path / 'good.safetensors')
  torch.save({'w': torch.ones(1000)}, good_pth)
  save_file({'w': np.ones(1000, np.float32)}, good_st)
  files = {}
  for name, source in (('trunc.pth', good_pth), ('trunc.safetensors', good_st)):
    data = open(source, 'rb').read()
    files[name] = str(tmp_path / name)
    with open(files[name], 'wb') as f:
      f.write(data[:len(data) // 2])
  for name in ('empty.pth', 'empty.safetensors'):
    files[name] = str(tmp_path / name)
    open(files[name], 'wb').close()
  files['garbage.pth'] = str(tmp_path / 'garbage.pth')
  with open(files['garbage.pth'], 'wb') as f:
    f.write(np.random.default_rng(0).bytes(300))
  cases = [(core.load_torch_file, 'empty.pth', 'empty file (0 bytes), expected a PyTorch checkpoint'),
           (core.load_torch_file, 'trunc.pth', 'not a readable PyTorch checkpoint (weights-only): '
                                               'PytorchStreamReader failed reading zip archive'),
           (core.load_torch_file, 'garbage.pth', 'not a readable PyTorch checkpoint (weights-only): '),
           (core.load_flat, 'empty.safetensors', 'empty file (0 bytes), expected a safetensors file'),
           (core.load_flat, 'trunc.safetensors', 'not a readable safetensors file: ')]
  for load, name, message in cases:
    with pytest.raises(core.ConversionError) as e:
      load(files[name])
    assert str(e.value).startswith(f'{files[name]}: {message}'), e.value
    assert '\n' not in str(e.value) and 'weights_only` set to `False`' not in str(e.value)
  assert str(e.value).endswith(f'({os.path.getsize(files[name])} bytes)')
  folder = tmp_path / 'bert'
  folder.mkdir()
  (folder / 'config.json').write_text('')
  with pytest.raises(core.ConversionError, match=r'config.json: empty file \(0 bytes\), expected a JSON'):
    bert.bert_config_from_folder(str(folder))


def test_convert_command_reports_an_unreadable_file_in_one_line(tmp_path):
  import subprocess
  import sys
  empty = tmp_path / 'resnet.pth'
  empty.write_bytes(b'')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, '-m', 'cost_jax.convert', f'--resnet={empty}',
                        f'--out={tmp_path}/out'], capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and lines[-1] == (f'error: {empty}: empty file (0 bytes), expected a '
                                               'PyTorch checkpoint (weights-only)'), run.stderr[-3000:]
  assert 'Traceback' not in run.stderr and not os.path.exists(tmp_path / 'out')

"""Converters and PyTorch parity: the ResNet trunk (both layer3 presets) against torchvision, our
attention against torch.nn.MultiheadAttention, a TransT ltr checkpoint written with the real key
layout and pickled objects, and the conversion CLI."""

import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from configs import cost_r50
from cost_jax import summary
from cost_jax.convert import __main__ as convert_cli
from cost_jax.convert import core
from cost_jax.convert import resnet
from cost_jax.convert import transt
from cost_jax.models import cost
from cost_jax.models.attention import MultiHeadAttention
from cost_jax.models.resnet import ResNetTrunk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def torchvision_trunk(preset):
  """torchvision ResNet-50, layer3 at stride 1 with the preset's conv2 dilations, random BN state."""
  torch.manual_seed(0)
  if preset == 'torchvision':
    net = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, False])
  else:  # transt: only layer3.0.conv2 dilates (2); the block's stride moves to 1
    net = torchvision.models.resnet50()
    block = net.layer3[0]
    block.conv2.stride, block.conv2.dilation, block.conv2.padding = (1, 1), (2, 2), (2, 2)
    block.downsample[0].stride = (1, 1)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.normal_(0, 0.1)
      m.running_mean.data.normal_(0, 0.1)
      m.running_var.data.uniform_(0.5, 1.5)
  return net.eval()


def torch_layer3(net, images):
  x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
  return net.layer3(net.layer2(net.layer1(x)))


@pytest.fixture(scope='module')
def r50_cfg():
  return cost_r50.get_config().model


@pytest.fixture(scope='module')
def resnet_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('resnet') / 'resnet50.pth')
  torch.save(torchvision_trunk('torchvision').state_dict(), path)
  return path


@pytest.mark.parametrize('preset', ['transt', 'torchvision'])
def test_resnet_trunk_parity_with_torchvision(preset, r50_cfg, tmp_path):
  net = torchvision_trunk(preset)
  path = str(tmp_path / 'r50.pth')
  torch.save(net.state_dict(), path)
  r50_cfg = cost_r50.get_config().model
  r50_cfg.backbone.layer3_dilations = preset
  flat, _ = resnet.convert_resnet(path, r50_cfg)
  variables = core.unflatten(flat)
  variables = {col: tree['backbone'] for col, tree in variables.items()}
  images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
  ours = ResNetTrunk(r50_cfg.backbone).apply(variables, jnp.asarray(images))
  with torch.no_grad():
    ref = torch_layer3(net, torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert ours.shape == ref.shape == (1, 8, 8, 1024)
  assert rel(ours, ref) <= 1e-5


def test_resnet_converter_reports_ignored_and_names_bad_tensors(resnet_file, r50_cfg, tmp_path):
  flat, report = resnet.convert_resnet(resnet_file, r50_cfg)
  assert 'fc.weight' in report['ignored'] and 'layer4.2.conv3.weight' in report['ignored']
  assert 'layer1.0.bn1.num_batches_tracked' in report['ignored']
  assert not any(k.startswith(('layer4', 'fc')) for k, _ in report['converted'])
  state = torch.load(resnet_file, weights_only=True)
  np.testing.assert_array_equal(flat['params/backbone/layer2_0/downsample_conv/kernel'],
                                state['layer2.0.downsample.0.weight'].permute(2, 3, 1, 0).numpy())
  np.testing.assert_array_equal(flat['batch_stats/backbone/layer3_5/bn3/var'],
                                state['layer3.5.bn3.running_var'].numpy())
  # Parameter count parity: torch's trunk parameters (BN weight/bias included) = summary's backbone.
  torch_count = sum(v.numel() for k, v in torchvision_trunk('transt').named_parameters()
                    if not k.startswith(('layer4', 'fc')))
  assert summary.count_by_module(cost.variable_shapes(r50_cfg))['backbone'] == torch_count

  def fails(mutate, *names):
    bad = dict(state)
    mutate(bad)
    path = str(tmp_path / 'bad.pth')
    torch.save(bad, path)
    with pytest.raises(core.ConversionError) as error:
      resnet.convert_resnet(path, r50_cfg)
    for name in names:
      assert name in str(error.value)

  fails(lambda s: s.pop('layer2.1.conv2.weight'), 'params/backbone/layer2_1/conv2/kernel')
  fails(lambda s: s.update({'layer1.0.bn1.running_var': torch.ones(3)}),
        'batch_stats/backbone/layer1_0/bn1/var', 'layer1.0.bn1.running_var')
  fails(lambda s: s.update({'layer3.9.conv1.weight': torch.ones(1, 1, 1, 1)}),
        'params/backbone/layer3_9/conv1/kernel')  # renamed, but the model has no such block
  fails(lambda s: s.update({'layer5.0.conv1.weight': torch.ones(1)}), 'layer5.0.conv1.weight')


def test_attention_parity_with_torch_multihead_attention():
  torch.manual_seed(0)
  d, heads, lq, lk, b = 32, 4, 5, 7, 2
  container = torch.nn.Module()
  container.attn = torch.nn.MultiheadAttention(d, heads)
  with torch.no_grad():
    container.attn.in_proj_bias.normal_()
    container.attn.out_proj.bias.normal_()
  container.eval()
  flat, _ = core.convert_state_dict(container.state_dict(), transt.attention_rules('attn', 'attn'))
  params = core.unflatten(flat)['params']['attn']
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(b, n, d)).astype(np.float32) for n in (lq, lk, lk))
  q_pos, k_pos = rng.normal(size=(lq, d)).astype(np.float32), rng.normal(size=(lk, d)).astype(np.float32)
  mask = np.ones((b, lk), bool)
  mask[1, -2:] = False
  out, weights = MultiHeadAttention(heads).apply({'params': params}, q, k, v, q_pos, k_pos, mask,
                                                 return_weights=True)
  t = lambda x: torch.from_numpy(x).transpose(0, 1)  # [B, L, d] -> torch's [L, B, d]
  with torch.no_grad():
    ref, ref_weights = container.attn(t(q + q_pos), t(k + k_pos), t(v),
                                      key_padding_mask=torch.from_numpy(~mask),
                                      average_attn_weights=False)
  assert rel(out, ref.transpose(0, 1).numpy()) <= 1e-5
  assert rel(weights, ref_weights.numpy()) <= 1e-5


# ------------------------------------------------------------------------------------- TransT

def transt_cfg():
  """The paper trunk with a narrow TransT fusion (d=32, 2 layers) so the test file stays small."""
  cfg = cost_r50.get_config().model
  cfg.hidden_dim = 32
  cfg.visual.update(num_layers=2, num_heads=4, mlp_dim=64)
  return cfg


def transt_state_dict(trunk_state, d=32, layers=2, mlp=64, seed=0):
  """A TransT `net` state dict with the real key layout (trunk, input_proj, fusion, heads)."""
  torch.manual_seed(seed)
  nn = torch.nn
  state = {f'backbone.0.body.{k}': v for k, v in trunk_state.items()
           if not k.startswith(('layer4', 'fc'))}
  fusion = nn.Module()
  fusion.encoder = nn.Module()
  fusion.encoder.layers = nn.ModuleList()
  for _ in range(layers):
    layer = nn.Module()
    for name in ('self_attn1', 'self_attn2', 'multihead_attn1', 'multihead_attn2'):
      setattr(layer, name, nn.MultiheadAttention(d, 4))
    for name, shape in (('linear11', (d, mlp)), ('linear12', (mlp, d)), ('linear21', (d, mlp)),
                        ('linear22', (mlp, d))):
      setattr(layer, name, nn.Linear(*shape))
    for name in ('norm11', 'norm12', 'norm13', 'norm21', 'norm22', 'norm23'):
      setattr(layer, name, nn.LayerNorm(d))
    fusion.encoder.layers.append(layer)
  fusion.decoder = nn.Module()
  decoder_layer = nn.Module()
  decoder_layer.multihead_attn = nn.MultiheadAttention(d, 4)
  decoder_layer.linear1, decoder_layer.linear2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
  decoder_layer.norm1, decoder_layer.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
  fusion.decoder.layers = nn.ModuleList([decoder_layer])
  fusion.decoder.norm = nn.LayerNorm(d)
  net = nn.Module()
  net.featurefusion_network = fusion
  net.class_embed = nn.Module()
  net.class_embed.layers = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 2)])
  net.bbox_embed = nn.Module()
  net.bbox_embed.layers = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 4)])
  net.input_proj = nn.Conv2d(1024, d, kernel_size=1)
  state.update(net.state_dict())
  return state


def write_ltr_checkpoint(path, state, monkeypatch):
  """Saves {'net', 'constructor', 'settings', ...} pickling ltr-like classes, as ltr's trainer does."""
  classes = {}
  for module_name, qualname in (('ltr.admin.model_constructor', 'NetConstructor'),
                                ('ltr.admin.settings', 'Settings')):
    module = types.ModuleType(module_name)
    cls = type(qualname, (), {'__module__': module_name})
    setattr(module, qualname, cls)
    classes[qualname] = cls
    for parent in ('ltr', 'ltr.admin'):
      monkeypatch.setitem(sys.modules, parent, sys.modules.get(parent, types.ModuleType(parent)))
    monkeypatch.setitem(sys.modules, module_name, module)
  settings = classes['Settings']()
  settings.__dict__.update(hidden_dim=32, nheads=4, featurefusion_layers=2, dim_feedforward=64,
                           position_embedding='sine', search_area_factor=4.0)
  constructor = classes['NetConstructor']()
  constructor.__dict__.update(fun_name='transt_resnet50', fun_module='ltr.models.tracking.transt',
                              args=(settings,), kwds={})
  torch.save({'epoch': 500, 'actor_type': 'TranstActor', 'net_type': 'TransT', 'net': state,
              'net_info': None, 'constructor': constructor, 'settings': settings}, path)
  for name in ('ltr.admin.model_constructor', 'ltr.admin.settings', 'ltr.admin', 'ltr'):
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.fixture(scope='module')
def trunk_state(resnet_file):
  return torch.load(resnet_file, weights_only=True)


def test_transt_ltr_checkpoint_loads_weights_only(trunk_state, tmp_path, monkeypatch):
  state = transt_state_dict(trunk_state)
  path = str(tmp_path / 'transt.pth.tar')
  write_ltr_checkpoint(path, state, monkeypatch)
  with pytest.raises(Exception):  # plain weights-only loading refuses the pickled ltr objects
    torch.load(path, weights_only=True)
  cfg = transt_cfg()
  flat, report = transt.convert_transt(path, cfg)
  assert 'class_embed.layers.2.weight' in report['ignored']
  assert 'bbox_embed.layers.0.bias' in report['ignored']
  assert 'constructor' in report['checkpoint_fields'] and 'settings' in report['checkpoint_fields']
  key = 'featurefusion_network.encoder.layers.1.multihead_attn2.in_proj_weight'
  np.testing.assert_array_equal(flat['params/visual/fusion_1/multihead_attn2/in_proj_kernel'],
                                state[key].numpy().T)
  np.testing.assert_array_equal(flat['params/visual/decoder_norm/bias'],
                                state['featurefusion_network.decoder.norm.bias'].numpy())
  np.testing.assert_array_equal(flat['params/visual/input_proj/kernel'][0, 0],
                                state['input_proj.weight'][:, :, 0, 0].numpy().T)

  for drop, name in (('featurefusion_network.decoder.norm.weight', 'params/visual/decoder_norm/scale'),
                     ('backbone.0.body.layer3.2.bn2.running_mean',
                      'batch_stats/backbone/layer3_2/bn2/mean')):
    bad = dict(state)
    bad.pop(drop)
    write_ltr_checkpoint(path, bad, monkeypatch)
    with pytest.raises(core.ConversionError, match=name):
      transt.convert_transt(path, cfg)
  bad = dict(state)
  bad['featurefusion_network.encoder.layers.0.linear11.weight'] = torch.ones(64, 16)
  write_ltr_checkpoint(path, bad, monkeypatch)
  with pytest.raises(core.ConversionError, match='encoder.layers.0.linear11.weight'):
    transt.convert_transt(path, cfg)


def test_convert_all_round_trip_through_safetensors(resnet_file, r50_cfg, tmp_path):
  flat, reports = convert_cli.convert_all(r50_cfg, resnet_path=resnet_file)
  core.save_flat(str(tmp_path / 'w.safetensors'), flat)
  loaded = core.load_flat(str(tmp_path / 'w.safetensors'))
  assert loaded.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(loaded[k], flat[k])
  assert reports[0]['source'] == resnet_file
  with pytest.raises(core.ConversionError, match='one of them'):
    convert_cli.convert_all(r50_cfg, resnet_path=resnet_file, transt_path=resnet_file)


@pytest.mark.heavy
def test_convert_cli_writes_weights_and_report(resnet_file, tmp_path):
  out = tmp_path / 'init'
  result = subprocess.run([sys.executable, '-m', 'cost_jax.convert', f'--resnet={resnet_file}',
                           f'--out={out}'], cwd=REPO, capture_output=True, text=True, check=True)
  assert 'ignored fc.weight' in result.stdout
  report = json.loads((out / 'report.json').read_text())
  assert 'layer4.0.conv1.weight' in report['sources'][0]['ignored']
  assert len(core.load_flat(str(out / 'weights.safetensors'))) == report['tensors']

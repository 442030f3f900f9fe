"""Flax BERT against transformers' PyTorch BertModel; the Hugging Face BERT converter."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from cost_jax import pretrained
from cost_jax.convert import bert as convert_bert
from cost_jax.convert import core
from cost_jax.models import bert

TOL = 1e-5  # ||delta|| / ||ref||, float32


def _text_cfg(hf_config, layers_averaged=1):
  return ml_collections.ConfigDict(dict(
      vocab_size=hf_config.vocab_size, hidden=hf_config.hidden_size,
      num_layers=hf_config.num_hidden_layers, num_heads=hf_config.num_attention_heads,
      intermediate=hf_config.intermediate_size, max_position=hf_config.max_position_embeddings,
      type_vocab=hf_config.type_vocab_size, layer_norm_eps=hf_config.layer_norm_eps, dropout=0.1,
      max_len=40, layers_averaged=layers_averaged, pretrained_dir='', vocab_path=''))


def _small_hf_config():
  return transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3,
                                 num_attention_heads=4, intermediate_size=37,
                                 max_position_embeddings=24, type_vocab_size=2,
                                 attn_implementation='eager')


def _inputs(vocab, batch=3, length=9, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, size=(batch, length)).astype(np.int32)
  lengths = np.array([length, 5, 2][:batch])
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  return ids * mask, mask


def _torch_hidden(model, ids, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states]


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _assert_hidden_equal(ours, ref):
  """Every hidden state equal, padding positions included (both mask keys only)."""
  assert len(ours) == len(ref)
  for i, (a, b) in enumerate(zip(ours, ref)):
    assert _rel(a, b) <= TOL, (i, _rel(a, b))


def _save_folder(model, folder, safetensors=True):
  model.config.save_pretrained(folder)
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  if safetensors:
    from safetensors.torch import save_file
    save_file(state, os.path.join(folder, 'model.safetensors'))
  else:
    torch.save(state, os.path.join(folder, 'pytorch_model.bin'))


@pytest.fixture(scope='module')
def small(tmp_path_factory):
  """A random small BertModel (eager attention), saved as a Hugging Face folder."""
  torch.manual_seed(0)
  model = transformers.BertModel(_small_hf_config(), add_pooling_layer=True).eval()
  folder = str(tmp_path_factory.mktemp('small_bert'))
  _save_folder(model, folder)
  return model, folder


def test_random_small_bert_parity(small):
  model, folder = small
  ids, mask = _inputs(99)
  cfg = _text_cfg(model.config)
  params = convert_bert.load_bert_params(folder, cfg)
  averaged, hidden = bert.BertEncoder(cfg).apply({'params': params}, ids, mask)
  assert len(hidden) == cfg.num_layers + 1 and averaged.shape == (3, 9, 32)
  ref = _torch_hidden(model, ids, mask)
  _assert_hidden_equal(hidden, ref)
  np.testing.assert_array_equal(averaged, hidden[-1])


def test_layer_averaging(small):
  model, folder = small
  ids, mask = _inputs(99)
  cfg = _text_cfg(model.config, layers_averaged=2)
  params = convert_bert.load_bert_params(folder, cfg)
  averaged, hidden = jax.jit(bert.BertEncoder(cfg).apply)({'params': params}, ids, mask)
  ref = _torch_hidden(model, ids, mask)
  assert _rel(averaged, (ref[-1] + ref[-2]) / 2) <= TOL
  with pytest.raises(ValueError, match='layers_averaged'):
    bert.average_last_layers(hidden, len(hidden) + 1)


def test_dropout_only_when_not_deterministic(small):
  model, folder = small
  ids, mask = _inputs(99)
  cfg = _text_cfg(model.config)
  variables = {'params': convert_bert.load_bert_params(folder, cfg)}

  @jax.jit
  def run(key):
    with_dropout, _ = bert.BertEncoder(cfg).apply(variables, ids, mask, deterministic=False,
                                                  rngs={'dropout': key})
    without, _ = bert.BertEncoder(cfg).apply(variables, ids, mask, deterministic=True,
                                             rngs={'dropout': key})
    return with_dropout, without

  c, b = run(jax.random.key(1))
  c2, _ = run(jax.random.key(2))
  a = _torch_hidden(model, ids, mask)[-1]
  assert _rel(b, a) <= TOL  # deterministic: dropout off even with a dropout rng
  assert _rel(c, a) > 1e-2 and _rel(c, c2) > 1e-2  # dropout on, and it depends on the key


def test_init_shapes_match_converter_table():
  cfg = _text_cfg(_small_hf_config())
  flat = core.flatten(convert_bert.expected_params(cfg))
  assert sorted(flat) == sorted(fx for _, fx, _ in convert_bert.name_table(cfg.num_layers))
  assert flat['layer_0/attention/query/kernel'].shape == (32, 32)
  assert flat['layer_2/intermediate/kernel'].shape == (32, 37)


def _legacy_name(key):
  """Modern BertForPreTraining key -> the original bert-base-uncased checkpoint's name."""
  if '.LayerNorm.' in key:
    key = key.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta')
  return key


@pytest.fixture(scope='module')
def legacy(tmp_path_factory):
  """A BertForPreTraining checkpoint written with the original bert-base-uncased names."""
  torch.manual_seed(1)
  model = transformers.BertForPreTraining(_small_hf_config()).eval()
  state = {_legacy_name(k): v.clone() for k, v in model.state_dict().items()}
  assert 'bert.embeddings.LayerNorm.gamma' in state and 'cls.predictions.bias' in state
  folder = str(tmp_path_factory.mktemp('legacy_bert'))
  model.config.save_pretrained(folder)
  return model, state, folder


def _write_bin(folder, state):
  torch.save(state, os.path.join(folder, 'pytorch_model.bin'))
  return folder


def test_legacy_layout_loads_matches_and_reports_ignored(legacy):
  model, state, folder = legacy
  _write_bin(folder, state)
  cfg = _text_cfg(model.config)
  flat, report = convert_bert.convert_bert(folder, cfg)
  assert all(k.startswith('params/text_encoder/') for k in flat)
  assert ['bert.encoder.layer.1.output.LayerNorm.gamma',
          'params/text_encoder/layer_1/output_norm/scale'] in report['converted']
  ignored = set(report['ignored'])
  assert {'cls.predictions.bias', 'cls.seq_relationship.weight',
          'bert.pooler.dense.weight'} <= ignored
  assert all(k.startswith(('cls.', 'bert.pooler.', 'bert.embeddings.position_ids')) for k in ignored)
  assert len(report['converted']) + len(ignored) == len(state)

  ids, mask = _inputs(99, seed=3)
  params = convert_bert.load_bert_params(folder, cfg)
  _, hidden = bert.BertEncoder(cfg).apply({'params': params}, ids, mask)
  _assert_hidden_equal(hidden, _torch_hidden(model.bert, ids, mask))


def test_legacy_missing_tensor_fails_naming_it(legacy, tmp_path):
  model, state, _ = legacy
  folder = str(tmp_path)
  model.config.save_pretrained(folder)
  broken = dict(state)
  del broken['bert.encoder.layer.2.attention.self.key.weight']
  _write_bin(folder, broken)
  with pytest.raises(core.ConversionError,
                     match=r'missing tensor layer_2/attention/key/kernel \(checkpoint key '
                           r'encoder\.layer\.2\.attention\.self\.key\.weight\)'):
    convert_bert.convert_bert(folder)


def test_legacy_misshaped_tensor_fails_naming_it(legacy, tmp_path):
  model, state, _ = legacy
  folder = str(tmp_path)
  model.config.save_pretrained(folder)
  broken = dict(state)
  broken['bert.encoder.layer.0.intermediate.dense.weight'] = torch.zeros(36, 32)
  _write_bin(folder, broken)
  with pytest.raises(core.ConversionError,
                     match=r'bert\.encoder\.layer\.0\.intermediate\.dense\.weight.*\(32, 36\)'):
    convert_bert.convert_bert(folder)


def test_unexpected_tensor_fails_naming_it(small, tmp_path):
  model, _ = small
  folder = str(tmp_path)
  state = {k: v.clone() for k, v in model.state_dict().items()}
  state['encoder.layer.0.attention.self.extra.weight'] = torch.zeros(2)
  model.config.save_pretrained(folder)
  _write_bin(folder, state)
  with pytest.raises(core.ConversionError, match=r'encoder\.layer\.0\.attention\.self\.extra\.weight'):
    convert_bert.convert_bert(folder)


def test_config_mismatch_fails_clearly(small):
  model, folder = small
  cfg = _text_cfg(model.config)
  cfg.num_layers = 2
  cfg.hidden = 48
  with pytest.raises(core.ConversionError, match=r'num_layers: config.json 3, model config 2') as e:
    convert_bert.convert_bert(folder, cfg)
  assert 'hidden: config.json 32, model config 48' in str(e.value)
  arch = convert_bert.bert_config_from_folder(folder)
  assert (arch.hidden, arch.num_layers, arch.intermediate) == (32, 3, 37)


def test_minilm_parity():
  """The real pretrained MiniLM-L6 (the tiny config's text encoder), with padding."""
  from input_pipeline import tokenize
  folder = pretrained.minilm_dir()
  model = transformers.BertModel.from_pretrained(folder, attn_implementation='eager').eval()
  tok = tokenize.Tokenizer(os.path.join(folder, 'vocab.txt'), max_len=12)
  ids, mask = tok.encode_batch(['kite flying in the sky', 'a small red car turning left', 'bird'])
  cfg = _text_cfg(model.config, layers_averaged=3)
  with open(os.path.join(folder, 'config.json')) as f:
    assert json.load(f)['hidden_size'] == cfg.hidden == 384
  params = convert_bert.load_bert_params(folder, cfg)
  averaged, hidden = jax.jit(bert.BertEncoder(cfg).apply)({'params': params}, ids, mask)
  ref = _torch_hidden(model, ids, mask)
  _assert_hidden_equal(hidden, ref)
  assert _rel(averaged, np.mean(ref[-3:], axis=0)) <= TOL


def test_bfloat16_compute_stays_close(small):
  model, folder = small
  ids, mask = _inputs(99)
  cfg = _text_cfg(model.config)
  params = convert_bert.load_bert_params(folder, cfg)
  out, _ = jax.jit(bert.BertEncoder(cfg, dtype='bfloat16').apply)({'params': params}, ids, mask)
  assert out.dtype == jax.numpy.bfloat16
  assert _rel(np.asarray(out, np.float32), _torch_hidden(model, ids, mask)[-1]) <= 3e-2


@pytest.mark.heavy
def test_bert_base_legacy_layout_parity(tmp_path):
  """bert-base-uncased sizes and names (random weights): 108,891,648 parameters without pooler."""
  torch.manual_seed(2)
  hf_config = transformers.BertConfig(attn_implementation='eager')  # the bert-base defaults
  model = transformers.BertForPreTraining(hf_config).eval()
  folder = str(tmp_path)
  model.config.save_pretrained(folder)
  _write_bin(folder, {_legacy_name(k): v for k, v in model.state_dict().items()})
  cfg = _text_cfg(hf_config, layers_averaged=1)
  assert (cfg.hidden, cfg.num_layers, cfg.vocab_size) == (768, 12, 30522)
  params = convert_bert.load_bert_params(folder, cfg)
  assert sum(v.size for v in jax.tree.leaves(params)) == 108_891_648
  ids, mask = _inputs(30522, batch=3, length=40, seed=5)
  _, hidden = jax.jit(bert.BertEncoder(cfg).apply)({'params': params}, ids, mask)
  _assert_hidden_equal(hidden, _torch_hidden(model.bert, ids, mask))

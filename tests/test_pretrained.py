"""Weight loading lives outside the network: cost_jax.pretrained is the one loader, and
cost_jax/models/ imports nothing that reads files (docs/design.md §7)."""

import os
import subprocess
import sys

import jax
import numpy as np

from configs import cost_tiny
from cost_jax import pretrained
from cost_jax.convert import bert as convert_bert
from cost_jax.convert import core
from cost_jax.models import cost
from tests.test_models import micro_model_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules that read weight files; none may be imported by importing the network.
FILE_READERS = ('cost_jax.convert', 'cost_jax.pretrained', 'safetensors', 'torch', 'orbax',
                'tensorflow', 'transformers')

IMPORT_ALL_MODELS = """
import importlib, pkgutil, sys
import cost_jax.models as models
names = [f'cost_jax.models.{m.name}' for m in pkgutil.iter_modules(models.__path__)]
for name in names:
  importlib.import_module(name)
print(len(names))
print(' '.join(sorted(sys.modules)))
"""


def test_models_import_nothing_that_reads_files():
  """A fresh interpreter imports every cost_jax.models.* module; sys.modules then holds none of
  the file-reading modules (no cycle models -> convert -> models either)."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', IMPORT_ALL_MODELS], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=True).stdout.split('\n')
  count, loaded = int(out[0]), out[1].split()
  assert count >= 10, out[0]  # attention, bert, coa, cost, fusion, heads, ... all imported
  assert 'cost_jax.models.cost' in loaded
  bad = [m for m in loaded if any(m == r or m.startswith(r + '.') for r in FILE_READERS)]
  assert not bad, f'cost_jax.models imports file-reading modules: {bad}'


def test_initial_weights_and_init_variables(tmp_path):
  """initial_weights: the pretrained text encoder (model.text.pretrained_dir), then a convert output
  (init_weights), which wins; init_variables merges exactly that over a random init of the model."""
  cfg = micro_model_cfg()
  cfg.text = cost_tiny.get_config().model.text  # MiniLM-L6, from the installed package
  cfg.text.max_len = 8
  assert cfg.text.pretrained_dir == pretrained.minilm_dir()
  minilm, _ = convert_bert.convert_bert(cfg.text.pretrained_dir, cfg.text)
  assert pretrained.initial_weights(cfg).keys() == minilm.keys()
  word = 'params/text_encoder/embeddings/word_embeddings/embedding'
  assert word in minilm

  override = {word: np.full(minilm[word].shape, 0.25, np.float32),
              'params/text_proj/kernel': np.full((cfg.text.hidden, cfg.hidden_dim), -1.0, np.float32)}
  core.save_flat(str(tmp_path / pretrained.INIT_WEIGHTS_FILE), override)
  flat = pretrained.initial_weights(cfg, str(tmp_path))
  assert flat.keys() == minilm.keys() | override.keys()
  np.testing.assert_array_equal(flat[word], override[word])  # init_weights wins

  cfg.text.pretrained_dir = ''
  assert pretrained.initial_weights(cfg) == {}
  cfg.text.pretrained_dir = pretrained.minilm_dir()

  # The merge itself (other leaves keep their init) is tests/test_convert_core.py's.
  model = cost.COST(cfg)
  shapes = core.flatten(cost.variable_shapes(cfg))
  merged = core.flatten(pretrained.init_variables(model, jax.random.key(0), str(tmp_path)))
  assert merged.keys() == shapes.keys()
  for key, value in merged.items():
    assert value.shape == shapes[key].shape and value.dtype == shapes[key].dtype, key
    if key in flat:
      np.testing.assert_array_equal(np.asarray(value), flat[key], err_msg=key)

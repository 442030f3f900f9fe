"""Converts PyTorch weights into one flat safetensors file that training merges as initial weights.

  python -m cost_jax.convert --resnet=resnet50.pth --bert=bert-base-uncased/ --out=init/
  python -m cost_jax.convert --transt=transt.pth --bert=bert-base-uncased/ --out=init/

Writes <out>/weights.safetensors ('/'-joined variable paths) and <out>/report.json (per source: the
converted and the ignored keys), and prints the ignored keys. --config (default configs/cost_r50.py)
gives the architecture every tensor is shape-checked against; start training from the result with
--config.train.init_weights=<out>. --resnet and --transt both give the trunk: pass one of them.
A file that does not load (missing, empty, truncated, not weights-only loadable) or does not fit the
architecture gets one line naming it and exit status 2.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from configs import cost_r50
from cost_jax import cli
from cost_jax.convert import bert
from cost_jax.convert import core
from cost_jax.convert import resnet
from cost_jax.convert import transt


def define_flags():
  """Defined only when run as a program, so that importing convert_all defines no flags."""
  config_flags.DEFINE_config_file('config', None, 'Config file (default configs/cost_r50.py).')
  flags.DEFINE_string('resnet', None, 'torchvision ResNet-50 .pth state dict.')
  flags.DEFINE_string('bert', None, 'Hugging Face BERT folder (config.json + weights).')
  flags.DEFINE_string('transt', None, 'TransT ltr checkpoint (.pth / .pth.tar).')
  flags.DEFINE_string('out', None, 'Output folder.', required=True)


def convert_all(model_cfg, resnet_path=None, bert_dir=None, transt_path=None):
  """-> (flat {variable path: np.ndarray}, [report per source]). Raises core.ConversionError."""
  if resnet_path and transt_path:
    raise core.ConversionError('--resnet and --transt both give the trunk: pass one of them')
  if not (resnet_path or bert_dir or transt_path):
    raise core.ConversionError('nothing to convert: pass --resnet, --transt and/or --bert')
  flat, reports = {}, []
  if resnet_path:
    part, report = resnet.convert_resnet(resnet_path, model_cfg)
    flat.update(part)
    reports.append(report)
  if transt_path:
    part, report = transt.convert_transt(transt_path, model_cfg)
    flat.update(part)
    reports.append(report)
  if bert_dir:
    part, report = bert.convert_bert(bert_dir, model_cfg.text)
    flat.update(part)
    reports.append(report)
  return flat, reports


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config if f.config is not None else cost_r50.get_config()
  try:
    flat, reports = convert_all(config.model, f.resnet, f.bert, f.transt)
  except core.ConversionError as e:  # a file that does not load or fit: one line naming it
    raise cli.UsageError(str(e)) from None
  os.makedirs(f.out, exist_ok=True)
  core.save_flat(os.path.join(f.out, 'weights.safetensors'), flat)
  with open(os.path.join(f.out, 'report.json'), 'w') as fh:
    json.dump({'tensors': len(flat), 'sources': reports}, fh, indent=1)
  for report in reports:
    print(f"{report['source']}: {len(report['converted'])} converted, "
          f"{len(report['ignored'])} ignored on purpose")
    for key in report['ignored']:
      print(f'  ignored {key}')
  print(f'wrote {len(flat)} tensors to {os.path.join(f.out, "weights.safetensors")}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

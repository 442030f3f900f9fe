"""TransT `ltr` checkpoints -> the COST trunk and visual transformer (TransT's feature fusion).

An ltr checkpoint is a dict {'net': state_dict, 'constructor': NetConstructor, 'net_info',
'settings', 'epoch', 'optimizer', 'stats', ...} whose objects are pickled ltr classes: they load
through inert stand-ins (core.load_torch_file, weights-only), never by importing ltr.
Converted: backbone.0.body.* (torchvision layout, see convert/resnet.py), input_proj,
featurefusion_network.encoder.layers.N.* -> visual/fusion_N, decoder.layers.0.* -> visual/decoder,
decoder.norm -> visual/decoder_norm. Ignored on purpose, and reported: TransT's 3-layer heads
class_embed.* / bbox_embed.* (COST has its own heads) and num_batches_tracked.
"""

from cost_jax.convert import core
from cost_jax.convert import resnet

IGNORE = (r'class_embed\..*', r'bbox_embed\..*', r'.*num_batches_tracked')

# Classes pickled next to the weights by ltr's trainer (pytracking's ltr/admin).
STAND_INS = (
    ('ltr.admin.model_constructor', 'NetConstructor'),
    ('ltr.admin.settings', 'Settings'),
    ('ltr.admin.local', 'EnvironmentSettings'),
    ('ltr.admin.stats', 'AverageMeter'),
    ('ltr.admin.stats', 'StatValue'),
)

_FUSION = r'featurefusion_network\.encoder\.layers\.(\d+)\.'
_DECODER = r'featurefusion_network\.decoder\.layers\.0\.'


def dense_rules(src, dst, transform='linear'):
  return [(src + r'\.weight', f'params/{dst}/kernel', transform),
          (src + r'\.bias', f'params/{dst}/bias', 'none')]


def norm_rules(src, dst):
  return [(src + r'\.weight', f'params/{dst}/scale', 'none'),
          (src + r'\.bias', f'params/{dst}/bias', 'none')]


def attention_rules(src, dst):
  """torch.nn.MultiheadAttention -> attention.MultiHeadAttention (in_proj transposed, [d, 3d])."""
  return ([(src + r'\.in_proj_weight', f'params/{dst}/in_proj_kernel', 'linear'),
           (src + r'\.in_proj_bias', f'params/{dst}/in_proj_bias', 'none')]
          + dense_rules(src + r'\.out_proj', f'{dst}/out_proj'))


def transt_rules(train_bn=False):
  """Rules for TransT's `net` state dict."""
  f, v = _FUSION, r'visual/fusion_\1/'
  rules = resnet.resnet_rules(r'backbone\.0\.body\.', train_bn)
  rules += dense_rules(r'input_proj', 'visual/input_proj', 'conv')
  rules += attention_rules(f + r'(self_attn[12]|multihead_attn[12])', v + r'\2')
  rules += dense_rules(f + r'(linear[12][12])', v + r'\2')
  rules += norm_rules(f + r'(norm[12][123])', v + r'\2')
  rules += attention_rules(_DECODER + r'multihead_attn', 'visual/decoder/multihead_attn')
  rules += dense_rules(_DECODER + r'(linear[12])', r'visual/decoder/\1')
  rules += norm_rules(_DECODER + r'(norm[12])', r'visual/decoder/\1')
  rules += norm_rules(r'featurefusion_network\.decoder\.norm', 'visual/decoder_norm')
  return rules


def convert_transt(path, model_cfg):
  """A TransT ltr checkpoint (or a bare TransT state dict) -> (flat variables, report).

  Fills params/backbone, batch_stats/backbone and params/visual completely for `model_cfg`
  (config.model; TransT-N4 matches the paper config). The report lists the checkpoint's other
  entries under 'checkpoint_fields'. Raises core.ConversionError naming each offending tensor.
  """
  checkpoint = core.load_torch_file(path, stand_ins=STAND_INS)
  if not isinstance(checkpoint, dict):
    raise core.ConversionError(f'{path}: expected a dict, got {type(checkpoint).__name__}')
  state = checkpoint['net'] if 'net' in checkpoint else checkpoint
  flat, report = resnet.convert_state(state, model_cfg, transt_rules(model_cfg.backbone.train_bn),
                                      IGNORE, ('backbone', 'visual'), path)
  report['checkpoint_fields'] = sorted(k for k in checkpoint if k != 'net') if 'net' in checkpoint else []
  return flat, report

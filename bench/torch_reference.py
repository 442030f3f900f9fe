"""COST in PyTorch: the reference the Flax model is checked against and benchmarked beside.

Assembled from torchvision's ResNet bottlenecks and FrozenBatchNorm2d, transformers' BertModel and
torch.nn.MultiheadAttention, following docs/design.md §1 and mirroring cost_jax/models/ exactly. Parameter
names follow the PyTorch originals (torchvision ResNet under `backbone.`, TransT's
`input_proj` / `featurefusion_network.*`, Hugging Face BERT under `text_encoder.`), so the
converters' rename rules (cost_jax/convert/) map them to the Flax names; `load_from_flax` uses
those rules to copy a Flax variables tree into this module.

Images enter as uint8 NHWC like the Flax model; internally NCHW. Shapes are for the paper config.
"""

import functools
import math
import re

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import transformers
from torch import nn
from torchvision.models import resnet as tv_resnet

from cost_jax.convert import resnet as convert_resnet
from cost_jax.models.resnet import layer3_dilations

# ------------------------------------------------------------------------------------- backbone

class FrozenBatchNorm2d(torchvision.ops.FrozenBatchNorm2d):
  """torchvision's FrozenBatchNorm2d; with `train_affine` its weight/bias are trained parameters."""

  def __init__(self, num_features, train_affine=False):
    super().__init__(num_features, eps=1e-5)
    if train_affine:
      weight, bias = self.weight, self.bias
      del self.weight, self.bias
      self.weight = nn.Parameter(weight)
      self.bias = nn.Parameter(bias)


class Trunk(nn.Module):
  """ResNet stem + layer1..layer3 with layer3 at stride 1 (output stride 8), torchvision names.

  [B, 3, H, W] normalised float -> [B, 4 * widths[2], H / 8, W / 8].
  """

  def __init__(self, backbone_cfg):
    super().__init__()
    norm = functools.partial(FrozenBatchNorm2d, train_affine=backbone_cfg.train_bn)
    stem = backbone_cfg.stem_width
    self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
    self.bn1 = norm(stem)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    inplanes = stem
    strides = (1, 2, 1)
    for index, (width, blocks, stride) in enumerate(
        zip(backbone_cfg.widths, backbone_cfg.blocks, strides)):
      layer, inplanes = self._make_layer(inplanes, width, blocks, stride, norm)
      setattr(self, f'layer{index + 1}', layer)
    for block, dilation in zip(self.layer3, layer3_dilations(backbone_cfg)):
      block.conv2.dilation = (dilation, dilation)
      block.conv2.padding = (dilation, dilation)

  @staticmethod
  def _make_layer(inplanes, width, blocks, stride, norm):
    expansion = tv_resnet.Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != width * expansion:
      downsample = nn.Sequential(
          nn.Conv2d(inplanes, width * expansion, 1, stride=stride, bias=False),
          norm(width * expansion))
    layers = [tv_resnet.Bottleneck(inplanes, width, stride, downsample, norm_layer=norm)]
    layers += [tv_resnet.Bottleneck(width * expansion, width, norm_layer=norm)
               for _ in range(blocks - 1)]
    return nn.Sequential(*layers), width * expansion

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer3(self.layer2(self.layer1(x)))


def sine_position_encoding(height, width, dim, temperature=10000.0):
  """DETR/TransT 2-D sine encoding (normalize=True, scale 2π) of an unmasked map: [H * W, dim]."""
  eps, scale = 1e-6, 2 * math.pi
  half = dim // 2
  y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width)
  x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width)
  y = y / (height + eps) * scale
  x = x / (width + eps) * scale
  dim_t = torch.arange(half, dtype=torch.float32)
  dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor') / half)

  def interleave(pos):
    pos = pos[:, :, None] / dim_t
    return torch.stack((pos[:, :, 0::2].sin(), pos[:, :, 1::2].cos()), dim=3).flatten(2)

  return torch.cat((interleave(y), interleave(x)), dim=2).reshape(height * width, dim)


# ------------------------------------------------------------------------------------- attention

def attend(attention, query, key, value, query_pos=None, key_pos=None, key_padding_mask=None):
  """nn.MultiheadAttention (batch_first) with positional terms added to queries and keys only."""
  if query_pos is not None:
    query = query + query_pos
  if key_pos is not None:
    key = key + key_pos
  out, _ = attention(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)
  return out


def multihead(dim, heads, dropout):
  return nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)


class FeedForward(nn.Module):
  """Linear -> ReLU -> dropout -> Linear, as TransT/DETR write it (names linear1/linear2)."""

  def __init__(self, dim, hidden, dropout):
    super().__init__()
    self.linear1 = nn.Linear(dim, hidden)
    self.dropout = nn.Dropout(dropout)
    self.linear2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.linear2(self.dropout(F.relu(self.linear1(x))))


# ---------------------------------------------------------------------------- visual transformer

class FeatureFusionLayer(nn.Module):
  """TransT's ECA + CFA layer, post-norm: self-attention per branch, cross-attention both ways, FFN.

  Branch 1 = template [B, Nt, d], branch 2 = search [B, Ns, d]; TransT's parameter names.
  """

  def __init__(self, dim, heads, mlp_dim, dropout):
    super().__init__()
    for name in ('self_attn1', 'self_attn2', 'multihead_attn1', 'multihead_attn2'):
      setattr(self, name, multihead(dim, heads, dropout))
    self.linear11, self.linear12 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
    self.linear21, self.linear22 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
    for name in ('norm11', 'norm12', 'norm13', 'norm21', 'norm22', 'norm23'):
      setattr(self, name, nn.LayerNorm(dim))
    self.dropout = nn.Dropout(dropout)

  def forward(self, src1, src2, pos1, pos2):
    drop = self.dropout
    src1 = self.norm11(src1 + drop(attend(self.self_attn1, src1, src1, src1, pos1, pos1)))
    src2 = self.norm21(src2 + drop(attend(self.self_attn2, src2, src2, src2, pos2, pos2)))
    cross1 = attend(self.multihead_attn1, src1, src2, src2, pos1, pos2)
    cross2 = attend(self.multihead_attn2, src2, src1, src1, pos2, pos1)
    src1 = self.norm12(src1 + drop(cross1))
    src1 = self.norm13(src1 + drop(self.linear12(drop(F.relu(self.linear11(src1))))))
    src2 = self.norm22(src2 + drop(cross2))
    src2 = self.norm23(src2 + drop(self.linear22(drop(F.relu(self.linear21(src2))))))
    return src1, src2


class DecoderCFALayer(nn.Module):
  """TransT's decoder layer: cross-attention query = search, key/value = template, then FFN."""

  def __init__(self, dim, heads, mlp_dim, dropout):
    super().__init__()
    self.multihead_attn = multihead(dim, heads, dropout)
    self.linear1, self.linear2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
    self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)

  def forward(self, tgt, memory, pos_tgt, pos_memory):
    drop = self.dropout
    tgt = self.norm1(tgt + drop(attend(self.multihead_attn, tgt, memory, memory, pos_tgt, pos_memory)))
    return self.norm2(tgt + drop(self.linear2(drop(F.relu(self.linear1(tgt))))))


class FeatureFusionNetwork(nn.Module):
  """S fusion layers, then one decoder layer and its LayerNorm: search tokens [B, Ns, d]."""

  def __init__(self, visual_cfg, dim):
    super().__init__()
    args = (dim, visual_cfg.num_heads, visual_cfg.mlp_dim, visual_cfg.dropout)
    self.encoder = nn.Module()
    self.encoder.layers = nn.ModuleList(
        [FeatureFusionLayer(*args) for _ in range(visual_cfg.num_layers)])
    self.decoder = nn.Module()
    self.decoder.layers = nn.ModuleList([DecoderCFALayer(*args)])
    self.decoder.norm = nn.LayerNorm(dim)

  def forward(self, template, search, pos_template, pos_search):
    for layer in self.encoder.layers:
      template, search = layer(template, search, pos_template, pos_search)
    for layer in self.decoder.layers:
      search = layer(search, template, pos_search, pos_template)
    return self.decoder.norm(search)


# ---------------------------------------------------------------------------------- token conv

def same_padding(size, kernel, stride, dilation=1):
  """(low, high) padding of XLA/TF 'SAME' for one spatial axis."""
  effective = (kernel - 1) * dilation + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + effective - size, 0)
  return total // 2, total - total // 2


class TokenConv(nn.Module):
  """Search map [B, d, S, S] -> grid x grid visual tokens [B, grid^2, d] (row-major), per token.mode."""

  def __init__(self, token_cfg, dim):
    super().__init__()
    self.mode, self.grid = token_cfg.mode, token_cfg.grid
    self.kernel = token_cfg.kernel
    self.dilation = token_cfg.dilation if self.mode == 'valid_dilated' else 1
    self.stride = 2 if self.mode == 'stride2_320' else 1
    self.conv = nn.Conv2d(dim, dim, self.kernel, stride=self.stride, dilation=self.dilation)

  def forward(self, x):
    if self.mode != 'valid_dilated':
      pad_h = same_padding(x.shape[2], self.kernel, self.stride)
      pad_w = same_padding(x.shape[3], self.kernel, self.stride)
      x = F.pad(x, (*pad_w, *pad_h))
    x = self.conv(x)
    if self.mode == 'resample':
      x = F.interpolate(x, size=(self.grid, self.grid), mode='bilinear', align_corners=False)
    return x.flatten(2).transpose(1, 2)


# -------------------------------------------------------------------------------- text encoder

def bert_config(text_cfg):
  """transformers BertConfig with the sizes of `config.model.text` (GELU erf, eval-time dropout)."""
  return transformers.BertConfig(
      vocab_size=text_cfg.vocab_size, hidden_size=text_cfg.hidden,
      num_hidden_layers=text_cfg.num_layers, num_attention_heads=text_cfg.num_heads,
      intermediate_size=text_cfg.intermediate, max_position_embeddings=text_cfg.max_position,
      type_vocab_size=text_cfg.type_vocab, layer_norm_eps=text_cfg.layer_norm_eps,
      hidden_dropout_prob=text_cfg.dropout, attention_probs_dropout_prob=text_cfg.dropout,
      hidden_act='gelu')


class TextEncoder(nn.Module):
  """transformers BertModel; output = mean of the last `layers_averaged` hidden layers [B, L, H]."""

  def __init__(self, text_cfg):
    super().__init__()
    self.bert = transformers.BertModel(bert_config(text_cfg), add_pooling_layer=False)
    self.layers_averaged = text_cfg.layers_averaged

  def forward(self, ids, mask):
    out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                    output_hidden_states=True)
    return torch.stack(out.hidden_states[-self.layers_averaged:]).mean(0)


# ------------------------------------------------------------------------------- VL transformer

class VLLayer(nn.Module):
  """Post-norm encoder layer; the learned position embedding is added to queries and keys."""

  def __init__(self, dim, heads, mlp_dim, dropout):
    super().__init__()
    self.self_attn = multihead(dim, heads, dropout)
    self.linear1, self.linear2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
    self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, pos, padding):
    drop = self.dropout
    x = self.norm1(x + drop(attend(self.self_attn, x, x, x, pos, pos, padding)))
    return self.norm2(x + drop(self.linear2(drop(F.relu(self.linear1(x))))))


class VLTransformer(nn.Module):
  """[OBJ; text (L); visual (grid^2)] -> the same 1 + L + grid^2 tokens [B, 441, d], text padding masked."""

  def __init__(self, vl_cfg, dim, max_len, num_visual):
    super().__init__()
    self.max_len = max_len
    self.obj_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + max_len + num_visual, dim))
    nn.init.normal_(self.obj_token, std=0.02)
    nn.init.normal_(self.pos_embed, std=0.02)
    self.layers = nn.ModuleList(
        [VLLayer(dim, vl_cfg.num_heads, vl_cfg.mlp_dim, vl_cfg.dropout)
         for _ in range(vl_cfg.num_layers)])

  def forward(self, text, text_mask, visual):
    batch = visual.shape[0]
    x = torch.cat([self.obj_token.expand(batch, -1, -1), text, visual], dim=1)
    keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=visual.device),
                      text_mask.bool(),
                      torch.ones(batch, visual.shape[1], dtype=torch.bool, device=visual.device)], 1)
    pos = torch.cat([self.pos_embed[:, :1 + text.shape[1]], self.pos_embed[:, 1 + self.max_len:]], 1)
    for layer in self.layers:
      x = layer(x, pos, ~keep)
    return x


# ------------------------------------------------------------------------------ heads and CoA

class DenseHeads(nn.Module):
  """Per visual token: classifier MLP d -> cls_hidden -> 1 and box Linear d -> 4 -> sigmoid."""

  def __init__(self, head_cfg, dim):
    super().__init__()
    self.cls_fc1 = nn.Linear(dim, head_cfg.cls_hidden)
    self.cls_fc2 = nn.Linear(head_cfg.cls_hidden, 1)
    self.regressor = nn.Linear(dim, 4)

  def forward(self, tokens):
    logits = self.cls_fc2(F.relu(self.cls_fc1(tokens)))[..., 0]
    return {'logits': logits, 'boxes': torch.sigmoid(self.regressor(tokens))}


class ObjHead(nn.Module):
  """'obj' head: one box [B, 1, 4] from the [OBJ] output."""

  def __init__(self, dim):
    super().__init__()
    self.regressor = nn.Linear(dim, 4)

  def forward(self, obj):
    return {'boxes': torch.sigmoid(self.regressor(obj))[:, None]}


class CoA(nn.Module):
  """Contrastive-alignment projections: L2-normalised [B, c] visual and text embeddings."""

  def __init__(self, coa_cfg, dim, text_dim):
    super().__init__()
    self.visual_proj = nn.Linear(dim, coa_cfg.dim)
    self.text_proj = nn.Linear(text_dim, coa_cfg.dim)
    self.logit_scale = nn.Parameter(torch.tensor(float(coa_cfg.logit_scale_init)))
    self.logit_scale_max = coa_cfg.logit_scale_max
    self.object_mode = coa_cfg.get('mode', 'global') == 'object'
    if self.object_mode:
      self.map_scale = nn.Parameter(torch.tensor(float(coa_cfg.map_scale_init)))

  def embed_text(self, text_features, text_mask):
    weights = text_mask.to(text_features.dtype)[..., None]
    text = (text_features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(self.text_proj(text), dim=-1)

  def embed_tokens(self, search_map, grid):
    """mode 'object': template-free search map [B, d, n, n] -> unit token embeddings [B, grid^2, c]."""
    if search_map.shape[-1] != grid:
      search_map = F.interpolate(search_map, size=(grid, grid), mode='bilinear', align_corners=False)
    return F.normalize(self.visual_proj(search_map.flatten(2).transpose(1, 2)), dim=-1)

  def sentence_map(self, token_embed, text_embed, text_mask):
    """[B, V] logits added to the dense head: map_scale * cos, zero without a sentence."""
    has_sentence = (text_mask.sum(-1) > 2).to(token_embed.dtype)
    return self.map_scale * torch.einsum('bvc,bc->bv', token_embed, text_embed) * has_sentence[:, None]

  def forward(self, visual_tokens, text_features, text_mask):
    visual = visual_tokens.mean(1)
    return (F.normalize(self.visual_proj(visual), dim=-1), self.embed_text(text_features, text_mask),
            self.logit_scale.clamp(0.0, self.logit_scale_max))


# ------------------------------------------------------------------------------------ COST

class COST(nn.Module):
  """The whole network; same call signature and outputs as cost_jax.models.cost.COST."""

  def __init__(self, model_cfg):
    super().__init__()
    self.cfg = model_cfg
    dim = model_cfg.hidden_dim
    self.register_buffer('mean', torch.tensor(model_cfg.image_mean).view(1, 3, 1, 1), persistent=False)
    self.register_buffer('std', torch.tensor(model_cfg.image_std).view(1, 3, 1, 1), persistent=False)
    self.backbone = Trunk(model_cfg.backbone)
    self.input_proj = nn.Conv2d(4 * model_cfg.backbone.widths[2], dim, 1)
    self.featurefusion_network = FeatureFusionNetwork(model_cfg.visual, dim)
    self.token_conv = TokenConv(model_cfg.token, dim)
    self.text_encoder = TextEncoder(model_cfg.text)
    self.text_proj = nn.Linear(model_cfg.text.hidden, dim)
    self.coa = CoA(model_cfg.coa, dim, model_cfg.text.hidden)
    self.vl = VLTransformer(model_cfg.vl, dim, model_cfg.text.max_len, model_cfg.token.grid ** 2)
    self.head = DenseHeads(model_cfg.head, dim) if model_cfg.head.type == 'dense' else ObjHead(dim)

  def _features(self, image):
    """uint8 [B, H, W, 3] -> projected map tokens [B, H/8 * W/8, d] and their sine encoding."""
    x = (image.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
    x = self.input_proj(self.backbone(x))
    batch, dim, height, width = x.shape
    pos = sine_position_encoding(height, width, dim).to(x.device)
    return x.flatten(2).transpose(1, 2), pos[None], (height, width)

  def encode_template(self, template):
    """Template crop uint8 [B, Ht, Wt, 3] -> cache {'tokens': [B, Nt, d], 'pos': [1, Nt, d]}."""
    tokens, pos, _ = self._features(template)
    return {'tokens': tokens, 'pos': pos}

  def encode_text(self, text_ids, text_mask):
    """-> cache {'features': [B, L, H] BERT output, 'tokens': [B, L, d], 'mask': [B, L]}, plus
    'embed' [B, c] (CoA's sentence embedding) when coa.mode is 'object'."""
    features = self.text_encoder(text_ids, text_mask)
    cache = {'features': features, 'tokens': self.text_proj(features), 'mask': text_mask}
    if self.coa.object_mode:
      cache['embed'] = self.coa.embed_text(features, text_mask)
    return cache

  def visual_tokens(self, template_cache, search):
    """Search crop uint8 [B, Hs, Ws, 3] -> (visual tokens [B, grid^2, d], CoA's template-free token
    embeddings [B, grid^2, c] in coa.mode 'object', else None)."""
    tokens, pos, (height, width) = self._features(search)
    fused = self.featurefusion_network(template_cache['tokens'], tokens, template_cache['pos'], pos)
    fused_map = fused.transpose(1, 2).reshape(fused.shape[0], -1, height, width)
    token_embed = None
    if self.coa.object_mode:
      search_map = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
      token_embed = self.coa.embed_tokens(search_map, self.cfg.token.grid)
    return self.token_conv(fused_map), token_embed

  def fuse(self, visual, text_cache, sentence_map=None):
    """VL transformer + heads (+ the sentence's map on the dense logits): (outputs, fused tokens
    [B, 1 + L + grid^2, d])."""
    fused = self.vl(text_cache['tokens'], text_cache['mask'], visual)
    length = text_cache['tokens'].shape[1]
    if self.cfg.head.type == 'dense':
      outputs = self.head(fused[:, 1 + length:])
      if sentence_map is not None:
        outputs['logits'] = outputs['logits'] + sentence_map
      return outputs, fused
    return self.head(fused[:, 0]), fused

  def track_step(self, template_cache, text_cache, search):
    """The per-frame step: no template backbone, no text encoder."""
    visual, token_embed = self.visual_tokens(template_cache, search)
    sentence_map = None
    if token_embed is not None:
      sentence_map = self.coa.sentence_map(token_embed, text_cache['embed'], text_cache['mask'])
    outputs, _ = self.fuse(visual, text_cache, sentence_map)
    return outputs

  def forward(self, template, search, text_ids, text_mask):
    """Full pass -> (outputs, inter) with the keys of the Flax model (no attention maps)."""
    text_cache = self.encode_text(text_ids, text_mask)
    visual, token_embed = self.visual_tokens(self.encode_template(template), search)
    coa_visual, coa_text, logit_scale = self.coa(visual, text_cache['features'], text_mask)
    sentence_map = None
    if token_embed is not None:
      sentence_map = self.coa.sentence_map(token_embed, coa_text, text_mask)
    outputs, fused = self.fuse(visual, text_cache, sentence_map)
    inter = {'visual_tokens': visual, 'text_tokens': text_cache['tokens'], 'text_mask': text_mask,
             'coa_visual': coa_visual, 'coa_text': coa_text, 'logit_scale': logit_scale,
             'obj': fused[:, 0]}
    if token_embed is not None:
      inter['coa_tokens'] = token_embed
    return outputs, inter


# ------------------------------------------------------------------------- Flax -> PyTorch weights

# Inverse of cost_jax.convert.core.TRANSFORMS: Flax layout -> torch layout.
INVERSE_TRANSFORMS = {
    'none': lambda x: x,
    'conv': lambda x: np.transpose(x, (3, 2, 0, 1)),  # HWIO -> OIHW
    'linear': lambda x: np.transpose(x),  # [in, out] -> [out, in]
}


def transformer_rules(torch_re, flax_path):
  """MultiheadAttention / Linear / LayerNorm children of one torch layer -> the Flax layer's params.

  `torch_re` matches the layer (its groups are referenced by `flax_path`); children keep their names.
  """
  child = r'\.(?P<child>\w+)'
  out = flax_path + r'/\g<child>'
  return [(torch_re + child + r'\.in_proj_weight', f'params/{out}/in_proj_kernel', 'linear'),
          (torch_re + child + r'\.in_proj_bias', f'params/{out}/in_proj_bias', 'none'),
          (torch_re + child + r'\.out_proj\.weight', f'params/{out}/out_proj/kernel', 'linear'),
          (torch_re + child + r'\.out_proj\.bias', f'params/{out}/out_proj/bias', 'none'),
          (torch_re + r'\.(?P<child>linear\d+)\.weight', f'params/{out}/kernel', 'linear'),
          (torch_re + r'\.(?P<child>norm\d*)\.weight', f'params/{out}/scale', 'none'),
          (torch_re + child + r'\.bias', f'params/{out}/bias', 'none')]


def _linear_rules(torch_name, flax_path):
  return [(re.escape(torch_name) + r'\.weight', f'params/{flax_path}/kernel', 'linear'),
          (re.escape(torch_name) + r'\.bias', f'params/{flax_path}/bias', 'none')]


def flax_name_rules(model_cfg):
  """[(torch state-dict regex, Flax flat name, transform)] covering every tensor of COST(model_cfg).

  BERT names come from the BERT converter's table (cost_jax.convert.bert.name_table).
  """
  from cost_jax.convert import bert as convert_bert
  box = 'head/regressor/box'
  rules = convert_resnet.resnet_rules(r'backbone\.', model_cfg.backbone.train_bn)
  rules += [(r'input_proj\.weight', 'params/visual/input_proj/kernel', 'conv'),
            (r'input_proj\.bias', 'params/visual/input_proj/bias', 'none'),
            (r'token_conv\.conv\.weight', 'params/token_conv/conv/kernel', 'conv'),
            (r'token_conv\.conv\.bias', 'params/token_conv/conv/bias', 'none'),
            (r'coa\.logit_scale', 'params/coa/logit_scale', 'none'),
            (r'coa\.map_scale', 'params/coa/map_scale', 'none'),
            (r'vl\.obj_token', 'params/vl/obj_token', 'none'),
            (r'vl\.pos_embed', 'params/vl/position_embedding', 'none')]
  rules += transformer_rules(r'featurefusion_network\.encoder\.layers\.(?P<i>\d+)',
                             r'visual/fusion_\g<i>')
  rules += transformer_rules(r'featurefusion_network\.decoder\.layers\.0', 'visual/decoder')
  rules += [(r'featurefusion_network\.decoder\.norm\.weight', 'params/visual/decoder_norm/scale', 'none'),
            (r'featurefusion_network\.decoder\.norm\.bias', 'params/visual/decoder_norm/bias', 'none')]
  rules += transformer_rules(r'vl\.layers\.(?P<i>\d+)', r'vl/layer_\g<i>')
  for torch_name, flax_path in (('text_proj', 'text_proj'), ('coa.visual_proj', 'coa/visual_proj'),
                                ('coa.text_proj', 'coa/text_proj'), ('head.cls_fc1', 'head/cls_fc1'),
                                ('head.cls_fc2', 'head/cls_fc2'), ('head.regressor', box)):
    rules += _linear_rules(torch_name, flax_path)
  rules += [(r'text_encoder\.bert\.' + re.escape(hf), f'params/text_encoder/{fx}', transform)
            for hf, fx, transform in convert_bert.name_table(model_cfg.text.num_layers)]
  return rules


def _flax_name(key, rules):
  """(flat Flax name, transform) of the first rule that fully matches `key`, else (None, None)."""
  for pattern, replacement, transform in rules:
    if re.fullmatch(pattern, key):
      return re.sub(pattern, replacement, key), transform
  return None, None


def load_from_flax(torch_model, variables):
  """Copies Flax COST variables ({'params', 'batch_stats'}) into `torch_model` (a COST), in place.

  Every torch tensor must be filled and every Flax variable used; otherwise ValueError naming them.
  Returns the torch model.
  """
  from cost_jax.convert import core
  flat = {k: np.asarray(v) for k, v in core.flatten(variables).items()}
  state = torch_model.state_dict()
  rules = flax_name_rules(torch_model.cfg)
  used, problems = set(), []
  for key, tensor in state.items():
    name, transform = _flax_name(key, rules)
    if name is None or name not in flat:
      problems.append(f'torch tensor {key} has no Flax variable ({name})')
      continue
    value = INVERSE_TRANSFORMS[transform](flat[name])
    if value.size != tensor.numel():
      problems.append(f'{key} {tuple(tensor.shape)} vs {name} {value.shape}')
      continue
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(np.array(value)).reshape(tensor.shape))
    used.add(name)
  problems += [f'Flax variable {name} was not used' for name in sorted(set(flat) - used)]
  if problems:
    raise ValueError('load_from_flax: ' + '; '.join(problems))
  return torch_model

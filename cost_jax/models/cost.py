"""COST, the Contrastive One-Stage Transformer (docs/design.md §1): the whole network and its
public API.

  model = COST(config.model)
  variables = jax.jit(init_fn(model))(rng)      # {'params', 'batch_stats'}, random
  outputs, inter = model.apply(variables, template, search, text_ids, text_mask, train=False,
                               return_attention=False, rngs={'dropout': key})
  template_cache = model.apply(variables, template, method=COST.encode_template)
  text_cache = model.apply(variables, text_ids, text_mask, method=COST.encode_text)
  outputs = model.apply(variables, template_cache, text_cache, search, method=COST.track_step)

Images are uint8 RGB [B, H, W, 3]; the model normalises them with config image_mean/std. text_ids int32
[B, L], text_mask int32 [B, L] (1 = token). outputs: {'logits': [B, grid^2], 'boxes': [B, grid^2, 4]}
(normalised cx, cy, w, h in the search crop), or {'boxes': [B, 1, 4]} for head.type='obj'.
Top-level parameters: backbone, visual, token_conv, text_encoder, text_proj, coa, vl, head.
This module reads no files: pretrained weights are merged over a fresh init by
cost_jax.pretrained.init_variables / initial_weights (docs/design.md §7).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cost_jax.models.bert import BertEncoder
from cost_jax.models import coa as coa_lib
from cost_jax.models.coa import CoA
from cost_jax.models.fusion import VLTransformer
from cost_jax.models.heads import DenseHead, ObjHead, TextScore
from cost_jax.models.resnet import ResNetTrunk
from cost_jax.models.token_conv import TokenConv
from cost_jax.models.visual_transformer import VisualTransformer

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def normalise_images(images, mean, std, dtype=jnp.float32):
  """uint8 [..., 3] RGB -> (x / 255 - mean) / std in `dtype`."""
  x = images.astype(jnp.float32) / 255.0
  return ((x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


class COST(nn.Module):
  """The COST network. `cfg` is config.model (a ConfigDict)."""
  cfg: Any

  def setup(self):
    cfg = self.cfg
    dtype = DTYPES[cfg.dtype]
    self.backbone = ResNetTrunk(cfg.backbone, dtype)
    self.visual = VisualTransformer(cfg.visual, cfg.hidden_dim, dtype)
    self.token_conv = TokenConv(cfg.token, dtype)
    self.text_encoder = BertEncoder(cfg.text, dtype)
    self.text_proj = nn.Dense(cfg.hidden_dim, dtype=dtype)
    self.coa = CoA(cfg.coa)
    self.vl = VLTransformer(cfg.vl, cfg.text.max_len, cfg.token.grid ** 2, dtype)
    if cfg.head.type == 'dense':
      self.head = DenseHead(cfg.head.cls_hidden, dtype)
      if cfg.head.get('text_score', False):
        self.text_score = TextScore(cfg.head.cls_hidden, dtype)
    elif cfg.head.type == 'obj':
      self.head = ObjHead(dtype)
    else:
      raise ValueError(f"head.type {cfg.head.type!r} is not 'dense' or 'obj'")

  def _normalise(self, images):
    return normalise_images(images, self.cfg.image_mean, self.cfg.image_std, DTYPES[self.cfg.dtype])

  def encode_template(self, template):
    """uint8 [B, Ht, Wt, 3] -> {'template_map': [B, Ht/8, Wt/8, d]} (trunk + input_proj)."""
    return {'template_map': self.visual.project(self.backbone(self._normalise(template)))}

  def _text_features(self, text_ids, text_mask, deterministic):
    """-> (encoder output [B, L, H], projected text tokens [B, L, d])."""
    features = self.text_encoder(text_ids, text_mask, deterministic=deterministic)[0]
    return features, self.text_proj(features)

  def _object_coa(self):
    return self.cfg.coa.get('mode', 'global') == 'object'

  def text_encoder_features(self, text_ids, text_mask):
    """The text encoder's output [B, L, H] in eval mode (what `text_features` takes)."""
    return self.text_encoder(text_ids, text_mask, deterministic=True)[0]

  def encode_text(self, text_ids, text_mask):
    """int32 [B, L] ids and mask -> {'text_tokens': [B, L, d], 'text_mask': [B, L]} (eval mode),
    plus 'text_embed' [B, c] (CoA's sentence embedding) when coa.mode is 'object'."""
    features, tokens = self._text_features(text_ids, text_mask, True)
    cache = {'text_tokens': tokens, 'text_mask': text_mask}
    if self._object_coa():
      cache['text_embed'] = self.coa.embed_text(features, text_mask)
    return cache

  def _visual_tokens(self, template_map, search, deterministic):
    """Cached template map + uint8 search [B, Hs, Ws, 3] -> (visual tokens [B, grid^2, d], CoA's
    template-free token embeddings [B, grid^2, c] when coa.mode is 'object', else None)."""
    search_map = self.visual.project(self.backbone(self._normalise(search)))
    fused = self.visual(template_map, search_map, deterministic)
    token_embed = None
    if self._object_coa():
      token_embed = self.coa.embed_tokens(coa_lib.search_tokens(search_map, self.cfg.token.grid))
    return self.token_conv(fused), token_embed

  def _fuse_and_predict(self, visual, text_tokens, text_mask, deterministic, return_attention,
                        sentence_map=None):
    """-> (head outputs, fused tokens [B, 1+L+V, d], the VL transformer's attention dict or None).

    sentence_map: [B, V] logits added to the dense head's (coa.mode 'object'), or None.
    """
    fused, attention = self.vl(text_tokens, text_mask, visual, deterministic, return_attention)
    if self.cfg.head.type == 'dense':
      visual_out = fused[:, 1 + text_tokens.shape[1]:]
      outputs = self.head(visual_out)
      if self.cfg.head.get('text_score', False):
        outputs['logits'] = outputs['logits'] + self.text_score(visual_out, text_tokens, text_mask)
      if sentence_map is not None:
        outputs['logits'] = outputs['logits'] + sentence_map
    else:
      outputs = self.head(fused[:, 0])
    return outputs, fused, attention

  def track_step(self, template_cache, text_cache, search):
    """One tracked frame (eval mode): neither the text encoder nor the template trunk runs."""
    visual, token_embed = self._visual_tokens(template_cache['template_map'], search, True)
    sentence_map = None
    if token_embed is not None:
      sentence_map = self.coa.sentence_map(token_embed, text_cache['text_embed'],
                                           text_cache['text_mask'])
    return self._fuse_and_predict(visual, text_cache['text_tokens'], text_cache['text_mask'],
                                  True, False, sentence_map)[0]

  def __call__(self, template, search, text_ids, text_mask, train=False, return_attention=False,
               text_features=None):
    """The training/eval forward pass -> (outputs, intermediates); see the module docstring.

    text_features: the text encoder's output [B, L, H] for text_ids when already computed (a frozen
    encoder's, cost_jax.text_cache); the encoder then does not run.
    """
    deterministic = not train
    template_map = self.encode_template(template)['template_map']
    if text_features is None:
      features, text_tokens = self._text_features(text_ids, text_mask, deterministic)
    else:
      features = text_features.astype(DTYPES[self.cfg.dtype])
      text_tokens = self.text_proj(features)
    visual, token_embed = self._visual_tokens(template_map, search, deterministic)
    coa_visual, coa_text, logit_scale = self.coa(visual, features, text_mask)
    sentence_map = None
    if token_embed is not None:
      sentence_map = self.coa.sentence_map(token_embed, coa_text, text_mask)
    outputs, fused, attention = self._fuse_and_predict(visual, text_tokens, text_mask,
                                                       deterministic, return_attention, sentence_map)
    inter = {
        'visual_tokens': visual, 'text_tokens': text_tokens, 'text_mask': text_mask,
        'coa_visual': coa_visual, 'coa_text': coa_text, 'logit_scale': logit_scale,
        'obj': fused[:, 0].astype(jnp.float32),
    }
    if token_embed is not None:  # mode 'object': the losses pool the target's tokens (losses.coa_*)
      inter['coa_tokens'] = token_embed
    if return_attention:  # last VL layer, [B, heads, 1+L+V] rows: [OBJ]'s, and the visual queries' mean
      inter['obj_attention'] = attention['obj']
      inter['visual_attention'] = attention['visual']
    return outputs, inter


def dummy_inputs(cfg, batch=1):
  """Zero inputs of the config's shapes: (template, search, text_ids, text_mask)."""
  return (jnp.zeros((batch, cfg.template_size, cfg.template_size, 3), jnp.uint8),
          jnp.zeros((batch, cfg.search_size, cfg.search_size, 3), jnp.uint8),
          jnp.zeros((batch, cfg.text.max_len), jnp.int32),
          jnp.ones((batch, cfg.text.max_len), jnp.int32))


def init_fn(model):
  """rng -> fresh variables (random text encoder); jit or eval_shape it."""
  return lambda rng: model.init({'params': rng, 'dropout': rng}, *dummy_inputs(model.cfg))


def variable_shapes(model_cfg):
  """Abstract variables (jax.ShapeDtypeStruct leaves) of COST(model_cfg); nothing is computed."""
  return jax.eval_shape(init_fn(COST(model_cfg)), jax.random.key(0))


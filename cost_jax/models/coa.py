"""CoA, contrastive alignment: projection heads, the learned temperature, and (mode 'object') the
sentence's own map over the search tokens.

mode 'global' (the paper's): visual embedding = L2-normalise(Linear(mean of the fused visual tokens));
text embedding = L2-normalise(Linear(masked mean of the text encoder's tokens)); training only.

mode 'object' (a *choice*, config model.coa.mode): the visual side is each token of the search map
before it meets the template (trunk + input_proj, resampled to the token grid), projected and
L2-normalised per token: token_embed [B, V, c]. Training pools the target's tokens (those the losses
call positive) into the visual embedding, so CoA aligns the sentence with the object it names, not
with the whole crop, and a token-level loss asks the map cos(token_embed, text_embed) to point at the
target among the other objects of the crop. The map, times a learned scale, is added to the dense
head's logits whenever the sentence is not empty: a word the template cannot show (a colour hidden in
a grey first frame) reaches the tracker's decision directly, and an empty sentence adds nothing.

logit_scale = ln(1/tau), a parameter initialised at coa.logit_scale_init and clipped to
[0, coa.logit_scale_max]. The losses are in cost_jax/losses.py.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

MODES = ('global', 'object')


def masked_mean(tokens, mask):
  """tokens [B, L, C], mask [B, L] (1 = token) -> [B, C] mean over the unmasked tokens."""
  m = mask.astype(jnp.float32)[..., None]
  return (tokens.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def l2_normalise(x, eps=1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def has_sentence(text_mask):
  """[B] float32: 1 where the sentence has a word beyond [CLS] and [SEP], else 0."""
  return (jnp.sum(text_mask.astype(jnp.int32), axis=-1) > 2).astype(jnp.float32)


def search_tokens(search_map, grid):
  """Template-free search map [B, n, n, d] -> [B, grid^2, d] on the token grid (bilinear, half-pixel
  centres like token.mode 'resample'; the identity when n == grid)."""
  b, n, _, d = search_map.shape
  if n != grid:
    search_map = jax.image.resize(search_map, (b, grid, grid, d), 'bilinear', antialias=False)
  return search_map.reshape(b, grid * grid, d)


class CoA(nn.Module):
  """`cfg` is config.model.coa (dim, logit_scale_init, logit_scale_max, mode). Float32 throughout.

  __call__(visual tokens [B, V, d], text features [B, L, H], mask [B, L]) -> (v [B, c], t [B, c],
  scale []) is the global mode's; embed_text and embed_tokens serve mode 'object'.
  """
  cfg: Any

  def setup(self):
    self.visual_proj = nn.Dense(self.cfg.dim)
    self.text_proj = nn.Dense(self.cfg.dim)
    self.logit_scale = self.param('logit_scale', nn.initializers.constant(self.cfg.logit_scale_init),
                                  (), jnp.float32)
    if self.cfg.get('mode', 'global') == 'object':
      self.map_scale = self.param('map_scale', nn.initializers.constant(self.cfg.map_scale_init),
                                  (), jnp.float32)

  def scale(self):
    return jnp.clip(self.logit_scale, 0.0, self.cfg.logit_scale_max)

  def embed_text(self, text, text_mask):
    """Text encoder features [B, L, H] -> sentence embedding [B, c], unit length."""
    return l2_normalise(self.text_proj(masked_mean(text, text_mask)))

  def embed_tokens(self, tokens):
    """Search tokens [B, V, d] -> per-token embeddings [B, V, c], unit length."""
    return l2_normalise(self.visual_proj(tokens.astype(jnp.float32)))

  def sentence_map(self, token_embed, text_embed, text_mask):
    """-> [B, V] logits added to the dense head: map_scale * cos, zero without a sentence."""
    cos = jnp.einsum('bvc,bc->bv', token_embed, text_embed)
    return self.map_scale * cos * has_sentence(text_mask)[:, None]

  def __call__(self, visual, text, text_mask):
    v = self.visual_proj(visual.astype(jnp.float32).mean(1))
    return l2_normalise(v), self.embed_text(text, text_mask), self.scale()

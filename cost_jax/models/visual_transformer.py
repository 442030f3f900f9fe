"""TransT feature fusion: the visual transformer between the trunk and the token conv.

input_proj (1x1 conv to d) + 2-D sine position encoding, S fusion layers (self-attention per branch,
cross-attention both ways, FFN per branch; post-norm), then one cross-attention decoder layer with
query = search and key/value = template, and a final LayerNorm. Sub-module names follow TransT's
`featurefusion_network` (self_attn1, multihead_attn1, linear11, norm11, ...) so its weights convert
one to one. Branch 1 = template, branch 2 = search, as in TransT.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cost_jax.models.attention import MultiHeadAttention, xavier
from cost_jax.models.position_encoding import sine_position_encoding

LN_EPS = 1e-5  # torch.nn.LayerNorm


def flatten_map(x):
  """[B, H, W, C] -> [B, H*W, C] (row-major, as torch's flatten(2))."""
  return x.reshape(x.shape[0], -1, x.shape[-1])


def feed_forward(x, linear_a, linear_b, rate, deterministic):
  """linear_b(dropout(relu(linear_a(x)))), the transformer FFN."""
  return linear_b(nn.Dropout(rate)(nn.relu(linear_a(x)), deterministic=deterministic))


class FeatureFusionLayer(nn.Module):
  """(template [B, Lt, d], search [B, Ls, d]) -> both updated (TransT FeatureFusionLayer, post-norm)."""
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t, s, pos_t, pos_s, deterministic=True):
    d = t.shape[-1]
    attn = lambda name: MultiHeadAttention(self.num_heads, self.dropout, self.dtype, name=name)
    dense = lambda n, name: nn.Dense(n, kernel_init=xavier, dtype=self.dtype, name=name)
    norm = lambda name: nn.LayerNorm(LN_EPS, dtype=self.dtype, name=name)
    drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)

    t = norm('norm11')(t + drop(attn('self_attn1')(t, t, t, pos_t, pos_t, None, deterministic)[0]))
    s = norm('norm21')(s + drop(attn('self_attn2')(s, s, s, pos_s, pos_s, None, deterministic)[0]))
    t_from_s = attn('multihead_attn1')(t, s, s, pos_t, pos_s, None, deterministic)[0]
    s_from_t = attn('multihead_attn2')(s, t, t, pos_s, pos_t, None, deterministic)[0]
    t = norm('norm12')(t + drop(t_from_s))
    t = norm('norm13')(t + drop(feed_forward(t, dense(self.mlp_dim, 'linear11'), dense(d, 'linear12'),
                                             self.dropout, deterministic)))
    s = norm('norm22')(s + drop(s_from_t))
    s = norm('norm23')(s + drop(feed_forward(s, dense(self.mlp_dim, 'linear21'), dense(d, 'linear22'),
                                             self.dropout, deterministic)))
    return t, s


class DecoderCFALayer(nn.Module):
  """search [B, Ls, d] attends to template [B, Lt, d] (TransT DecoderCFALayer, post-norm)."""
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, s, t, pos_s, pos_t, deterministic=True):
    d = s.shape[-1]
    drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)
    attended = MultiHeadAttention(self.num_heads, self.dropout, self.dtype, name='multihead_attn')(
        s, t, t, pos_s, pos_t, None, deterministic)[0]
    s = nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm1')(s + drop(attended))
    ffn = feed_forward(s, nn.Dense(self.mlp_dim, kernel_init=xavier, dtype=self.dtype, name='linear1'),
                       nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name='linear2'),
                       self.dropout, deterministic)
    return nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm2')(s + drop(ffn))


class VisualTransformer(nn.Module):
  """TransT feature fusion. `cfg` is config.model.visual; `hidden_dim` = d.

  project(): trunk map [B, h, w, C] -> [B, h, w, d] (input_proj; the template's is cached).
  __call__(): projected template [B, ht, wt, d] and search [B, hs, ws, d] -> search map [B, hs, ws, d].
  """
  cfg: Any
  hidden_dim: int
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.cfg
    self.input_proj = nn.Conv(self.hidden_dim, (1, 1), kernel_init=xavier, dtype=self.dtype)
    self.layers = [FeatureFusionLayer(cfg.num_heads, cfg.mlp_dim, cfg.dropout, self.dtype,
                                      name=f'fusion_{i}') for i in range(cfg.num_layers)]
    self.decoder = DecoderCFALayer(cfg.num_heads, cfg.mlp_dim, cfg.dropout, self.dtype)
    self.decoder_norm = nn.LayerNorm(LN_EPS, dtype=self.dtype)

  def project(self, feature_map):
    return self.input_proj(feature_map.astype(self.dtype))

  def __call__(self, template_map, search_map, deterministic=True):
    b, hs, ws, d = search_map.shape
    pos_t = sine_position_encoding(template_map.shape[1], template_map.shape[2], d).reshape(-1, d)
    pos_s = sine_position_encoding(hs, ws, d).reshape(-1, d)
    t, s = flatten_map(template_map), flatten_map(search_map)
    for layer in self.layers:
      t, s = layer(t, s, pos_t, pos_s, deterministic)
    s = self.decoder_norm(self.decoder(s, t, pos_s, pos_t, deterministic))
    return s.reshape(b, hs, ws, d)

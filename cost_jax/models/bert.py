"""The text encoder: a linen BERT (post-norm, exact-erf GELU), equal to Hugging Face's BertModel.

Parameter names follow the BERT parts (embeddings, layer_i/attention, attention_norm, intermediate,
output, output_norm) so `cost_jax.convert.bert` maps Hugging Face checkpoints by explicit rules.
Sizes come from `config.model.text` (hidden H, num_layers, num_heads, intermediate, ...).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

INIT_STD = 0.02  # BERT's initializer_range, for weights trained from scratch


def _dense(features, dtype, name):
  return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.normal(INIT_STD), name=name)


def _layer_norm(cfg, dtype, name):
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout: ids [B, L] -> [B, L, H]."""
  cfg: object
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, ids, deterministic=True):
    cfg = self.cfg
    init = nn.initializers.normal(INIT_STD)
    embed = lambda n, size: nn.Embed(size, cfg.hidden, dtype=self.dtype, embedding_init=init, name=n)
    positions = jnp.arange(ids.shape[1])[None, :]
    x = (embed('word_embeddings', cfg.vocab_size)(ids)
         + embed('position_embeddings', cfg.max_position)(positions)
         + embed('token_type_embeddings', cfg.type_vocab)(jnp.zeros_like(ids)))
    x = _layer_norm(cfg, self.dtype, 'LayerNorm')(x)
    return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention over [B, L, H] with key padding mask [B, L] (1 = token)."""
  cfg: object
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    cfg = self.cfg
    heads = cfg.num_heads
    head_dim = cfg.hidden // heads
    split = lambda t: t.reshape(t.shape[:2] + (heads, head_dim))  # [B, L, heads, d]
    q = split(_dense(cfg.hidden, self.dtype, 'query')(x))
    k = split(_dense(cfg.hidden, self.dtype, 'key')(x))
    v = split(_dense(cfg.hidden, self.dtype, 'value')(x))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(jnp.float32).min)
    probs = nn.Dropout(cfg.dropout)(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
    out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(v.dtype), v).reshape(x.shape[:2] + (cfg.hidden,))
    return _dense(cfg.hidden, self.dtype, 'output')(out)


class BertLayer(nn.Module):
  """One post-norm encoder layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)). [B, L, H] -> [B, L, H]."""
  cfg: object
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    cfg = self.cfg
    drop = lambda t: nn.Dropout(cfg.dropout)(t, deterministic=deterministic)
    a = BertSelfAttention(cfg, self.dtype, name='attention')(x, mask, deterministic)
    x = _layer_norm(cfg, self.dtype, 'attention_norm')(x + drop(a))
    h = nn.gelu(_dense(cfg.intermediate, self.dtype, 'intermediate')(x), approximate=False)
    h = _dense(cfg.hidden, self.dtype, 'output')(h)
    return _layer_norm(cfg, self.dtype, 'output_norm')(x + drop(h))


class BertEncoder(nn.Module):
  """BERT over token ids.

  __call__(ids [B, L] int32, mask [B, L] (1 = token, 0 = padding), deterministic=True) ->
    (averaged [B, L, H]: mean of the last `cfg.layers_averaged` hidden layers,
     hidden_states: tuple of num_layers + 1 arrays [B, L, H], the embeddings output first).
  Dropout (rate cfg.dropout) is active only when deterministic=False (needs a 'dropout' rng).
  """
  cfg: object
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, ids, mask, deterministic=True):
    cfg = self.cfg
    x = BertEmbeddings(cfg, self.dtype, name='embeddings')(ids, deterministic)
    hidden_states = [x]
    for i in range(cfg.num_layers):
      x = BertLayer(cfg, self.dtype, name=f'layer_{i}')(x, mask, deterministic)
      hidden_states.append(x)
    averaged = average_last_layers(hidden_states, cfg.layers_averaged)
    return averaged, tuple(hidden_states)


def average_last_layers(hidden_states, k):
  """Mean of the last k of hidden_states (each [B, L, H]) -> [B, L, H]."""
  if not 1 <= k <= len(hidden_states):
    raise ValueError(f'layers_averaged={k} must be in [1, {len(hidden_states)}]')
  return jnp.mean(jnp.stack(hidden_states[-k:]), axis=0)

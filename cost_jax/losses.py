"""COST's training losses (docs/design.md §3): weighted BCE, L1 and 1-GIoU over positive tokens,
and CoA.

Every normaliser is a sum over the whole batch that the function sees. Under `jax.jit` with a batch
sharded over the mesh the arrays are global, so the normalisers are global sums; `coa_loss_sharded`
gives the same CoA with explicit per-device queries against all-gathered keys.

Boxes are normalised (cx, cy, w, h) in the search crop; token centres are in the same units.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import optax

from cost_jax import box_ops
from cost_jax.models import coa


# ------------------------------------------------------------------ positive tokens

def positive_tokens(token_centers, boxes):
  """Which tokens are positive for each ground-truth box.

  Args:
    token_centers: [T, 2] (x, y) token centres, normalised to the search crop.
    boxes: [B, 4] ground truth (cx, cy, w, h), normalised.
  Returns:
    [B, T] float32 0/1: tokens whose centre lies inside the box (edges included); when none
    does, the token whose centre is nearest to the box centre.
  """
  delta = token_centers[None, :, :] - boxes[:, None, :2]  # [B, T, 2]
  inside = jnp.all(jnp.abs(delta) <= boxes[:, None, 2:] / 2, axis=-1)
  nearest = jax.nn.one_hot(jnp.argmin(jnp.sum(delta ** 2, -1), axis=-1), token_centers.shape[0],
                           dtype=bool)
  any_inside = jnp.any(inside, axis=-1, keepdims=True)
  return jnp.where(any_inside, inside, nearest).astype(jnp.float32)


# ------------------------------------------------------------------ detection losses

def classification_loss(logits, labels, neg_weight):
  """Σ w·BCE(logit, y) / Σ w, w = 1 on positives and `neg_weight` on negatives.

  logits, labels: [B, T] (labels 0/1). Returns a scalar.
  """
  weights = jnp.where(labels > 0, 1.0, neg_weight)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  return jnp.sum(weights * bce) / jnp.sum(weights)


def localisation_loss(logits, labels):
  """-log of the softmax mass on the positive tokens, averaged over the batch (a *choice*, not TransT's).

  logits, labels: [B, T] (labels 0/1, at least one positive a row). Unlike the per-token BCE, whose
  negatives weigh `neg_weight` each, this makes every other token compete with the target's: a
  look-alike scored as high as the target costs log 2 however few tokens it covers, so the heads must
  use whatever tells the two apart (the sentence, when the template cannot).
  """
  return jnp.mean(_localisation_per_example(logits, labels))


def _localisation_per_example(logits, labels):
  """[B]: -log of the softmax mass on the positive tokens of each row (localisation_loss's terms)."""
  logits = logits.astype(jnp.float32)
  on_target = jax.nn.logsumexp(jnp.where(labels > 0, logits, -jnp.inf), axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - on_target


def box_losses(pred_boxes, gt_boxes, positives):
  """L1 and 1-GIoU summed over positive tokens, divided by the positive count (at least 1).

  pred_boxes: [B, T, 4] (cx, cy, w, h); gt_boxes: [B, 4]; positives: [B, T] 0/1.
  Returns (l1, giou) scalars.
  """
  pred = pred_boxes.astype(jnp.float32)
  gt = jnp.broadcast_to(gt_boxes[:, None, :], pred.shape)
  num_pos = jnp.maximum(jnp.sum(positives), 1.0)
  l1 = jnp.sum(positives * jnp.sum(jnp.abs(pred - gt), axis=-1)) / num_pos
  giou = box_ops.generalized_iou(box_ops.cxcywh_to_xyxy(pred), box_ops.cxcywh_to_xyxy(gt))
  return l1, jnp.sum(positives * (1.0 - giou)) / num_pos


def detection_losses(outputs, gt_boxes, token_centers, neg_weight):
  """Losses of the heads' outputs against the ground truth.

  outputs: the model's {'logits': [B, T], 'boxes': [B, T, 4]} (dense head) or {'boxes': [B, 1, 4]}
  ('obj' head: the single box is the only positive, no classification loss).
  gt_boxes: [B, 4]; token_centers: [T, 2] normalised. Returns {'cls', 'loc', 'l1', 'giou'} scalars
  ('loc': localisation_loss; zero for the 'obj' head).
  """
  if 'logits' in outputs:
    positives = positive_tokens(token_centers, gt_boxes)
    cls = classification_loss(outputs['logits'], positives, neg_weight)
    loc = localisation_loss(outputs['logits'], positives)
  else:
    positives = jnp.ones(outputs['boxes'].shape[:2], jnp.float32)
    cls = loc = jnp.zeros((), jnp.float32)
  l1, giou = box_losses(outputs['boxes'], gt_boxes, positives)
  return {'cls': cls, 'loc': loc, 'l1': l1, 'giou': giou}


# ------------------------------------------------------------------ CoA (InfoNCE)

def coa_positives(query_text_key, query_sequence_key, key_text_key, key_sequence_key):
  """[b, B] bool: same text_key or same sequence_key (identical sentences are never negatives)."""
  return ((query_text_key[:, None] == key_text_key[None, :])
          | (query_sequence_key[:, None] == key_sequence_key[None, :]))


def _soft_infonce_sum(queries, keys, logit_scale, positives):
  """Σ over query rows of -Σ_j y_ij log softmax_j(s_ij); s = exp(logit_scale)·q·k, y = pos / Σ pos.

  queries: [b, c], keys: [B, c], positives: [b, B] bool. Returns a scalar (a sum, not a mean).
  """
  logits = jnp.exp(logit_scale) * (queries.astype(jnp.float32) @ keys.astype(jnp.float32).T)
  targets = positives / jnp.sum(positives, axis=-1, keepdims=True)
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1))


def coa_loss(visual, text, logit_scale, text_key, sequence_key):
  """CoA over one global batch: mean of the visual->text and text->visual soft InfoNCE.

  visual, text: [B, c] L2-normalised embeddings; logit_scale: scalar (already clipped);
  text_key, sequence_key: [B] int. Returns a scalar.
  """
  positives = coa_positives(text_key, sequence_key, text_key, sequence_key)
  total = (_soft_infonce_sum(visual, text, logit_scale, positives)
           + _soft_infonce_sum(text, visual, logit_scale, positives))
  return total / (2 * visual.shape[0])


def coa_loss_sharded(mesh, batch_axes=('data', 'fsdp')):
  """CoA as `coa_loss`, computed with each device's queries against the all-gathered keys.

  Returns f(visual, text, logit_scale, text_key, sequence_key) -> scalar for global arrays whose
  batch dimension is sharded over `batch_axes` of `mesh`. Each device gathers the batch's
  embeddings and keys, scores its own rows in both directions, and the per-device sums are psum'd.
  """
  batch = P(batch_axes)

  def local(visual, text, logit_scale, text_key, sequence_key):
    gather = lambda x: jax.lax.all_gather(x, batch_axes, axis=0, tiled=True)
    all_visual, all_text = gather(visual), gather(text)
    positives = coa_positives(text_key, sequence_key, gather(text_key), gather(sequence_key))
    total = (_soft_infonce_sum(visual, all_text, logit_scale, positives)
             + _soft_infonce_sum(text, all_visual, logit_scale, positives))
    return jax.lax.psum(total, batch_axes) / (2 * all_visual.shape[0])

  return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P(), batch, batch),
                       out_specs=P())


# ------------------------------------------------------------------ CoA, mode 'object'

def pool_target_tokens(token_embed, positives):
  """The target's embedding for CoA: L2-normalise(sum of its tokens' embeddings).

  token_embed: [B, V, c] (unit rows); positives: [B, V] 0/1 (positive_tokens). Returns [B, c].
  """
  pooled = jnp.einsum('bv,bvc->bc', positives.astype(jnp.float32), token_embed.astype(jnp.float32))
  return coa.l2_normalise(pooled)


def grounding_loss(token_embed, text_embed, logit_scale, positives, has_sentence):
  """localisation_loss of the sentence's map exp(logit_scale) * cos(token, sentence) over the
  tokens, averaged over the examples that have a sentence (has_sentence [B] 0/1); 0 when none has.

  token_embed [B, V, c], text_embed [B, c] unit rows; positives [B, V]."""
  logits = jnp.exp(logit_scale) * jnp.einsum('bvc,bc->bv', token_embed.astype(jnp.float32),
                                             text_embed.astype(jnp.float32))
  per_example = _localisation_per_example(logits, positives)
  return jnp.sum(per_example * has_sentence) / jnp.maximum(jnp.sum(has_sentence), 1.0)


# ------------------------------------------------------------------ total

def total_loss(losses, train_cfg):
  """w_cls·cls + w_loc·loc + w_l1·L1 + w_giou·GIoU + w_coa·(CoA + ground) from a dict of scalar
  losses ('loc' and 'ground' may be absent: 0). The grounding loss is CoA's token-level part
  (coa.mode 'object'), so w_coa = 0 switches all of CoA off."""
  return (train_cfg.w_cls * losses['cls'] + train_cfg.w_loc * losses.get('loc', 0.0)
          + train_cfg.w_l1 * losses['l1'] + train_cfg.w_giou * losses['giou']
          + train_cfg.w_coa * (losses['coa'] + losses.get('ground', 0.0)))

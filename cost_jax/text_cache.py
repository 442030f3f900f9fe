"""A frozen text encoder runs once per sentence: its features cached on the host, keyed by the ids.

With config.train.freeze_text the encoder's parameters never change, and with text.dropout = 0 its
train-mode output equals its eval-mode output, so the features of a sentence are the same at every
step. A training set has few sentences (one per video), so after the first pass over them the step
receives the features (batch key 'text_features', [b, L, H] float32) and skips the encoder: the
same loss, the same optimiser (the encoder's parameters get no update either way).

  cache = text_cache.TextFeatureCache(config, model)      # None-safe: see enabled()
  batch = cache.add_features(batch, state.params)         # host numpy batch -> + 'text_features'

Sentences are keyed by their ids and mask bytes (exact; text_key is a 31-bit hash). Missing
sentences are encoded in one jitted call per batch, padded to the batch size (one compiled shape).
"""

import collections

import jax
import numpy as np

from cost_jax.models import cost


def enabled(config):
  """True when the cache gives the step exactly what the encoder would: frozen text encoder, no text
  dropout, sentences not replaced inside the step (train.empty_sentences), cache switched on."""
  t = config.train
  return bool(t.get('cache_text', True) and t.freeze_text and not t.empty_sentences
              and config.model.text.dropout == 0)


class TextFeatureCache:
  """Host-side cache of a frozen text encoder's features, sentence by sentence (LRU, max_entries)."""

  def __init__(self, config, model=None, max_entries=200_000):
    if not enabled(config):
      raise ValueError('TextFeatureCache needs train.freeze_text, model.text.dropout=0 and no '
                       'train.empty_sentences (the cached features would differ from the step\'s)')
    self.model = cost.COST(config.model) if model is None else model
    self.max_entries = max_entries
    self._features = collections.OrderedDict()
    self.hits = 0
    self.misses = 0
    self._encode = jax.jit(lambda params, ids, mask: self.model.apply(
        {'params': params}, ids, mask, method=type(self.model).text_encoder_features))

  def __len__(self):
    return len(self._features)

  def features(self, text_params, ids, mask):
    """float32 [b, L, H] features of numpy ids/mask [b, L]; text_params: params['text_encoder']."""
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, np.int32)
    keys = [i.tobytes() + m.tobytes() for i, m in zip(ids, mask)]
    missing = list(dict.fromkeys(k for k in keys if k not in self._features))
    if missing:
      rows = [keys.index(k) for k in missing]
      pad = rows + [rows[0]] * (len(keys) - len(rows))  # one compiled shape: the batch's
      out = np.asarray(self._encode({'text_encoder': text_params}, ids[pad], mask[pad]), np.float32)
      for k, row in zip(missing, out):
        self._features[k] = row
      while len(self._features) > self.max_entries:
        self._features.popitem(last=False)
    self.misses += len(missing)
    self.hits += len(keys) - len(missing)
    for k in keys:
      self._features.move_to_end(k)
    return np.stack([self._features[k] for k in keys])

  def add_features(self, batch, params):
    """The host batch with 'text_features' added (params: the train state's params)."""
    params = params['text_encoder']
    return {**batch, 'text_features': self.features(params, batch['text_ids'], batch['text_mask'])}

"""Sentences -> BERT token ids: lower-cased WordPiece, [CLS] ... [SEP], padded with 0 to max_len.

Uses transformers' BertTokenizerFast with the vocab path given *positionally* (in transformers 5.x
the `vocab_file=` keyword is silently ignored and every word becomes [UNK]).
"""

import os

import numpy as np


class Tokenizer:
  """Tokenizer(vocab_path, max_len=40).encode(sentence) -> (ids int32 [max_len], mask int32 [max_len])."""

  def __init__(self, vocab_path, max_len=40):
    from transformers import BertTokenizerFast
    if not os.path.isfile(vocab_path):
      raise FileNotFoundError(f'BERT vocabulary {vocab_path!r} does not exist')
    if max_len < 2:
      raise ValueError(f'max_len={max_len}: needs room for [CLS] and [SEP]')
    self.vocab_path = vocab_path
    self.max_len = max_len
    self._tok = BertTokenizerFast(vocab_path, do_lower_case=True)
    self.unk_id = self._tok.unk_token_id

  def encode(self, sentence):
    """One sentence (str; None = empty) -> ids, mask: int32 [max_len]; 1 = token, 0 = padding.

    An empty sentence gives [CLS] [SEP]; a long one is truncated keeping the final [SEP].
    """
    enc = self._tok(sentence or '', truncation=True, max_length=self.max_len)
    tokens = enc['input_ids']
    ids = np.zeros(self.max_len, np.int32)
    mask = np.zeros(self.max_len, np.int32)
    ids[:len(tokens)] = tokens
    mask[:len(tokens)] = 1
    return ids, mask

  def length(self, sentence):
    """Tokens `sentence` needs, [CLS] and [SEP] included, before truncation to max_len."""
    return len(self._tok(sentence or '', truncation=False)['input_ids'])

  def encode_batch(self, sentences):
    """List of N sentences -> ids, mask: int32 [N, max_len]."""
    pairs = [self.encode(s) for s in sentences]
    ids = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, self.max_len), np.int32)
    mask = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, self.max_len), np.int32)
    return ids, mask

  def tokens(self, ids):
    """ids -> WordPiece strings (for messages and tests)."""
    return self._tok.convert_ids_to_tokens([int(i) for i in ids])


def vocab_path_for(model_cfg):
  """config.model.text.vocab_path, else <pretrained_dir>/vocab.txt; a clear error when neither."""
  text = model_cfg.text
  if text.vocab_path:
    return text.vocab_path
  if text.pretrained_dir:
    return os.path.join(text.pretrained_dir, 'vocab.txt')
  raise ValueError('No BERT vocabulary: set config.model.text.vocab_path or '
                   'config.model.text.pretrained_dir (a folder holding vocab.txt)')


def tokenizer_for(model_cfg):
  """The Tokenizer for config.model (vocab as vocab_path_for says, max_len = text.max_len)."""
  return Tokenizer(vocab_path_for(model_cfg), max_len=model_cfg.text.max_len)

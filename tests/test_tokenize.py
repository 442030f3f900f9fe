"""Tokenizer: real WordPiece ids from the shipped vocab, [CLS] ... [SEP], padding, truncation."""

import ml_collections
import numpy as np
import pytest

from cost_jax import pretrained
from input_pipeline import tokenize


@pytest.fixture(scope='module')
def vocab_path():
  return pretrained.minilm_dir() + '/vocab.txt'


@pytest.fixture(scope='module')
def tok(vocab_path):
  return tokenize.Tokenizer(vocab_path, max_len=12)


def _vocab(path):
  with open(path, encoding='utf-8') as f:
    return {w.rstrip('\n'): i for i, w in enumerate(f)}


def test_kite_sentence_gives_real_vocab_ids(tok, vocab_path):
  vocab = _vocab(vocab_path)
  ids, mask = tok.encode('Kite flying in the sky')
  words = ['[CLS]', 'kite', 'flying', 'in', 'the', 'sky', '[SEP]']
  want = [vocab[w] for w in words]  # the line numbers of vocab.txt, looked up by hand
  assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape == (12,)
  np.testing.assert_array_equal(ids, want + [0] * 5)
  np.testing.assert_array_equal(mask, [1] * 7 + [0] * 5)
  assert tok.unk_id not in ids.tolist()
  assert want[0] == 101 and want[-1] == 102  # bert-base-uncased's [CLS] and [SEP]


def test_equal_to_hugging_face_tokenizer(tok):
  from transformers import AutoTokenizer
  hf = AutoTokenizer.from_pretrained(pretrained.minilm_dir())
  for s in ['kite flying in the sky', 'A RED Ball, moving left!', 'café naïve résumé',
            'a very long sentence ' * 10, '']:
    ref = hf(s, padding='max_length', truncation=True, max_length=12)
    ids, mask = tok.encode(s)
    np.testing.assert_array_equal(ids, ref['input_ids'], err_msg=s)
    np.testing.assert_array_equal(mask, ref['attention_mask'], err_msg=s)


def test_empty_and_none_give_cls_sep(tok):
  for s in ('', None):
    ids, mask = tok.encode(s)
    np.testing.assert_array_equal(ids[:3], [101, 102, 0])
    assert mask.sum() == 2


def test_truncation_keeps_sep(tok):
  ids, mask = tok.encode('the bird flies over the tall green tree near a small red house')
  assert mask.sum() == 12 and ids[0] == 101 and ids[-1] == 102


def test_batch_matches_single(tok):
  ids, mask = tok.encode_batch(['kite flying in the sky', 'a car'])
  assert ids.shape == (2, 12)
  np.testing.assert_array_equal(ids[1], tok.encode('a car')[0])
  np.testing.assert_array_equal(mask[0], tok.encode('kite flying in the sky')[1])


def test_tokenizer_for_picks_vocab(vocab_path, tmp_path):
  m = ml_collections.ConfigDict({'text': {'vocab_path': '', 'pretrained_dir': pretrained.minilm_dir(),
                                          'max_len': 40}})
  t = tokenize.tokenizer_for(m)
  assert t.vocab_path == vocab_path and t.max_len == 40
  m.text.vocab_path = str(tmp_path / 'vocab.txt')
  with open(m.text.vocab_path, 'w') as f:
    f.write('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'kite']) + '\n')
  ids, _ = tokenize.tokenizer_for(m).encode('kite sky')
  np.testing.assert_array_equal(ids[:5], [2, 4, 1, 3, 0])  # the override vocab, 'sky' unknown
  m.text.vocab_path = m.text.pretrained_dir = ''
  with pytest.raises(ValueError, match='vocab_path'):
    tokenize.tokenizer_for(m)

"""TFDS builds (array_record frames + sequence table) read back exactly; raw and TFDS streams agree."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import readers
from input_pipeline import stream as stream_lib
from input_pipeline import synthetic
from input_pipeline import tfds_builders
from tests.test_stream import assert_batches_equal
from tests.test_stream import small_config


@pytest.fixture(scope='module', params=['lasot', 'vlsot'])
def built(request, tmp_path_factory):
  tfds.disable_progress_bar()
  root = str(tmp_path_factory.mktemp(f'raw_{request.param}'))
  tfds_dir = str(tmp_path_factory.mktemp(f'tfds_{request.param}'))
  synthetic.generate(root, request.param, videos=3, seed=0, verbose=False, min_frames=8, max_frames=12,
                     width=96, height=72)
  tfds_builders.build('synthetic', 'all', root, tfds_dir)
  return root, tfds_dir, readers.load_dataset('synthetic', root)


def test_records_are_the_original_bytes_in_sequence_order(built):
  _, tfds_dir, raw = built
  reader = tfds_builders.FrameReader(tfds_dir, {'synthetic': raw})
  for seq in raw:
    for i, path in enumerate(seq.frames):
      with open(path, 'rb') as f:
        assert reader(seq, i) == f.read(), (seq.name, i)
  with pytest.raises(OSError):
    reader(raw[0], len(raw[0]))


def test_sequence_table_round_trip(built):
  root, tfds_dir, raw = built
  table = tfds_builders.load_sequences(tfds_dir, 'synthetic', 'all', root)
  assert [s.name for s in table] == [s.name for s in raw]
  for a, b in zip(table, raw):
    assert a.frames == b.frames and a.sentence == b.sentence and a.sequence_key == b.sequence_key
    assert a.dataset == b.dataset and a.attributes == b.attributes
    np.testing.assert_array_equal(a.boxes, b.boxes)  # NaN-aware, exact floats
    np.testing.assert_array_equal(a.visible, b.visible)


def test_raw_and_tfds_streams_identical(built):
  root, tfds_dir, raw = built
  config = small_config()
  config.data.weights = {'synthetic': 1.0}
  config.data.max_gap = 6
  from_raw = stream_lib.PairStream(config, {'synthetic': raw})
  config.data.source, config.data.tfds_dir = 'tfds', tfds_dir
  table = tfds_builders.load_sequences(tfds_dir, 'synthetic', 'all')  # no raw tree needed
  from_tfds = stream_lib.PairStream(config, {'synthetic': table})
  raw_iter, tfds_iter = from_raw.iterate(0), from_tfds.iterate(0)
  for _ in range(2):
    assert_batches_equal(next(raw_iter), next(tfds_iter))
  assert_batches_equal(from_raw.batch(5), from_tfds.batch(5))
  assert from_raw.replacements() == from_tfds.replacements()

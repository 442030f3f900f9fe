"""TFDS builders for pods (docs/design.md §2): frame-level array_record records + a sequence table.

One builder per format, `cost_<dataset>` (cost_lasot, cost_tnl2k, ..., cost_synthetic), with a config
per reader split ('train', 'test', 'all'). manual_dir = the downloaded benchmark (or the synthetic
set); the reader of input_pipeline.readers parses it, so quirks are handled in one place. Records are
the original encoded frames, unmodified ({'image': bytes, 'sequence': i, 'frame': j}), written in
order (shuffling disabled) so sequence i's frames are records [first_i, first_i + length_i). The
sequence table (name, first record, length, frame paths relative to manual_dir, boxes, visibility,
sentence, attributes) lives in the dataset's metadata.json.

  python -m input_pipeline.tfds_builders --dataset=synthetic --split=train \
      --manual_dir=data/synth --tfds_dir=data/tfds

Training then reads the same sequences from TFDS with random access:
  --config.data.source=tfds --config.data.tfds_dir=data/tfds
(`load_sequences` rebuilds the Sequence records; `FrameReader` hands PairStream the frame bytes.)
"""

import os

from absl import app
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import readers
from input_pipeline import sequence as sequence_lib

SPLITS = ('train', 'test', 'all')


class FrameBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set DATASET (a name of input_pipeline.readers.DATASETS) and `name`."""

  DATASET = ''
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Frame records (original bytes) and a sequence table.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=s, description=f'reader split {s!r}') for s in SPLITS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'manual_dir = the benchmark folder as downloaded (or a synthetic set).'

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """None: no checksums file to look for (data comes from manual_dir); TFDS's lookup of the
    builder's source folder also needs the `importlib_resources` package, absent here."""
    return None

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded bytes, as on disk
            'sequence': tfds.features.Scalar(dtype=np.int32),
            'frame': tfds.features.Scalar(dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # records in key (= generation) order: a sequence's frames are contiguous
        description=f'{self.DATASET} frames for COST-JAX')

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    split = None if self.builder_config.name == 'all' else self.builder_config.name
    sequences = readers.load_dataset(self.DATASET, root, split=split)
    table, first = [], 0
    for seq in sequences:
      table.append(sequence_row(seq, root, first))
      first += len(seq)
    self.info.metadata['sequences'] = table
    return {'train': self._generate_examples(sequences)}

  def _generate_examples(self, sequences):
    record = 0
    for i, seq in enumerate(sequences):
      for j, path in enumerate(seq.frames):
        with open(path, 'rb') as f:
          yield record, {'image': f.read(), 'sequence': i, 'frame': j}
        record += 1


def sequence_row(seq, root, first):
  """A Sequence as a JSON-able table row (boxes keep NaN; floats round-trip exactly)."""
  return {'name': seq.name, 'dataset': seq.dataset, 'first': first, 'length': len(seq),
          'frames': [os.path.relpath(p, root) for p in seq.frames], 'boxes': seq.boxes.tolist(),
          'visible': seq.visible.astype(int).tolist(), 'sentence': seq.sentence,
          'attributes': dict(seq.attributes), 'sequence_key': seq.sequence_key}


def _builder_class(dataset):
  class_name = 'Cost' + ''.join(part.capitalize() for part in dataset.split('_'))
  return type(class_name, (FrameBuilder,), {'DATASET': dataset, 'name': f'cost_{dataset}',
                                            '__module__': __name__})


BUILDERS = {name: _builder_class(name) for name in readers.DATASETS}


def builder(dataset, split, tfds_dir):
  """The builder of `dataset` ('lasot', ...) for reader split ('train' | 'test' | 'all'), writing array_record."""
  return BUILDERS[dataset](data_dir=tfds_dir, config=split or 'all', file_format='array_record')


def build(dataset, split, manual_dir, tfds_dir):
  """Writes the records and table; returns the builder."""
  b = builder(dataset, split, tfds_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return b


def _table(b):
  return b.info.metadata['sequences']


def load_sequences(tfds_dir, dataset, split=None, root=''):
  """list[Sequence] from a built table (frames = root-joined relative paths, for names only)."""
  b = builder(dataset, split, tfds_dir)
  return [sequence_lib.Sequence(
      name=row['name'], dataset=row['dataset'], frames=[os.path.join(root, p) for p in row['frames']],
      boxes=np.array(row['boxes'], np.float64).reshape(-1, 4), visible=np.array(row['visible'], bool),
      sentence=row['sentence'], attributes=row['attributes'], sequence_key=row['sequence_key'])
      for row in _table(b)]


class FrameReader:
  """FrameReader(tfds_dir, sequences_by_dataset)(sequence, index) -> encoded bytes, by random access.

  Finds each sequence (by dataset and name) in whichever built config of its dataset holds it.
  """

  def __init__(self, tfds_dir, sequences_by_dataset):
    self._where = {}
    wanted = {(s.dataset, s.name) for seqs in sequences_by_dataset.values() for s in seqs}
    for dataset in sorted({d for d, _ in wanted}):
      for split in SPLITS:
        b = builder(dataset, split, tfds_dir)
        if not b.is_prepared():
          continue
        source = None
        for row in _table(b):
          key = (dataset, row['name'])
          if key in wanted and key not in self._where:
            source = source or b.as_data_source(split='train')
            self._where[key] = (source, row['first'], row['length'])
    missing = sorted(wanted - set(self._where))
    if missing:
      raise ValueError(f'{len(missing)} sequences are in no TFDS build under {tfds_dir}, e.g. {missing[:3]}; '
                       'build them with `python -m input_pipeline.tfds_builders`')

  def __call__(self, sequence, index):
    source, first, length = self._where[(sequence.dataset, sequence.name)]
    if not 0 <= index < length:
      raise OSError(f'{sequence.name}: frame {index} not in the TFDS build ({length} frames)')
    return source[first + index]['image']


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this program (defined only when it runs: the stream imports this module)."""
  flags.DEFINE_enum('dataset', 'synthetic', list(readers.DATASETS), 'format to build')
  flags.DEFINE_enum('split', 'all', list(SPLITS), 'reader split')
  flags.DEFINE_string('manual_dir', None, 'the benchmark folder (or a synthetic set)')
  flags.DEFINE_string('tfds_dir', None, 'TFDS data_dir to write into (config.data.tfds_dir)')
  flags.mark_flags_as_required(['manual_dir', 'tfds_dir'])


def main(argv):
  del argv
  b = build(FLAGS.dataset, FLAGS.split, FLAGS.manual_dir, FLAGS.tfds_dir)
  table = _table(b)
  print(f'{b.name}/{FLAGS.split}: {len(table)} sequences, {sum(r["length"] for r in table)} frames '
        f'-> {b.data_dir}')


if __name__ == '__main__':
  define_flags()
  app.run(main)

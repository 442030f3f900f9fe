"""input_pipeline.check finds planted problems, names their paths, and exits non-zero when unusable."""

import os
import subprocess
import sys

import pytest

from input_pipeline import check
from input_pipeline import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = synthetic.Options(width=64, height=48, min_frames=6, max_frames=8, test_fraction=0.0)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  """A clean 4-video synthetic LaSOT-layout tree (real JPEGs)."""
  root = str(tmp_path_factory.mktemp('clean'))
  report = synthetic.generate(root, 'lasot', 4, seed=0, options=TINY, verbose=False)
  return root, [e['name'] for e in report['sequences']]


def folder_of(root, name):
  return os.path.join(root, name.rsplit('-', 1)[0], name)


def run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'input_pipeline.check', *args], capture_output=True,
                        text=True, cwd=REPO)


def test_sample_indices():
  assert check.sample_indices(100, 3, False) == [0, 25, 50, 74, 99]
  assert check.sample_indices(4, 3, False) == [0, 1, 2, 3]
  assert check.sample_indices(100, 3, True) == list(range(100))


def test_clean_tree_passes_with_counts(tree):
  root, names = tree
  lines = []
  scan, decode = check.check('synthetic', root, full=True, out=lines.append)
  assert not scan.problems and not decode
  frames = sum(len(s) for s in scan.sequences)
  assert lines == [f'synthetic (all) at {root}: 4 sequences, {frames} frames '
                   f'({sum(int(s.visible.sum()) for s in scan.sequences)} with a visible target), '
                   '0 errors, 0 warnings']
  result = run_cli('--dataset=lasot_ext', f'--data_dir={root}')
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith('OK') and 'official release: 150' in result.stdout
  listed = run_cli('--dataset=synthetic', f'--data_dir={root}', '--list').stdout.splitlines()
  first = next(s for s in scan.sequences if s.name == listed[0].split(':')[0])
  assert listed[0] == (f'{first.name}: {len(first)} frames, {int(first.visible.sum())} visible, '
                       f'{first.sentence!r}')


def test_planted_problems_are_found_with_paths(tree, tmp_path):
  clean, names = tree
  root = str(tmp_path / 'bad')
  subprocess.run(['cp', '-r', clean, root], check=True)
  a, b, c, d = (folder_of(root, n) for n in names)
  missing = os.path.join(a, 'img', '00000003.jpg')
  os.remove(missing)  # missing frame
  with open(os.path.join(b, 'groundtruth.txt'), 'a') as f:  # box count != frame count
    f.write('1,2,3,4\n')
  corrupt = os.path.join(c, 'img', '00000002.jpg')
  with open(corrupt, 'wb') as f:  # unreadable image
    f.write(b'\xff\xd8 not a jpeg')
  with open(os.path.join(d, 'nlp.txt'), 'w') as f:  # empty sentence
    f.write('\n')
  with open(os.path.join(d, 'groundtruth.txt')) as f:
    lines = f.read().splitlines()
  lines[0] = '5,5,0,7'  # invalid box on a visible frame (frame 1 is always visible)
  with open(os.path.join(d, 'groundtruth.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')

  result = run_cli('--dataset=synthetic', f'--data_dir={root}', '--full')
  assert result.returncode == 1
  out = result.stdout
  assert f'error: {missing}: missing frame' in out
  n = len(os.listdir(os.path.join(b, 'img')))
  assert f'error: {os.path.join(b, "img")}: {n} frames but {n + 1} boxes' in out
  assert f'warning: {corrupt}: unreadable image' in out
  assert f'warning: {d}: empty sentence' in out
  assert f'warning: {d}: 1 visible frame(s) with an invalid box (first: frame 1' in out
  assert '2 errors, 3 warnings' in out and out.strip().endswith('UNUSABLE')


def test_warnings_alone_pass_unless_strict(tree, tmp_path):
  clean, names = tree
  root = str(tmp_path / 'warn')
  subprocess.run(['cp', '-r', clean, root], check=True)
  with open(os.path.join(folder_of(root, names[0]), 'nlp.txt'), 'w') as f:
    f.write('')
  assert run_cli('--dataset=synthetic', f'--data_dir={root}').returncode == 0
  assert run_cli('--dataset=synthetic', f'--data_dir={root}', '--strict').returncode == 1


def test_missing_root_and_unknown_dataset_exit_nonzero(tmp_path):
  result = run_cli('--dataset=tnl2k', f'--data_dir={tmp_path}/nothing')
  assert result.returncode == 1 and f'{tmp_path}/nothing' in result.stdout
  result = run_cli('--dataset=tnl2k', f'--data_dir={tmp_path}', '--split=test')
  assert result.returncode == 1 and "no 'test' split folder" in result.stdout


def test_check_and_the_stream_agree_on_empty_sentences(tree, tmp_path):
  """Only an empty sentence is a problem (sequence.is_empty_sentence): check warns about exactly those
  sequences, and the stream replaces exactly those; accents, dashes and long sentences are data."""
  from input_pipeline import sequence as sequence_lib
  from input_pipeline import stream
  from tests.test_stream import small_config
  clean, names = tree
  root = str(tmp_path / 'text')
  subprocess.run(['cp', '-r', clean, root], check=True)
  sentences = ['rouge carré — “red square”', ' '.join(['word'] * 60), '\u3000 \t', '']
  for name, sentence in zip(names, sentences):
    with open(os.path.join(folder_of(root, name), 'nlp.txt'), 'w', encoding='utf-8') as f:
      f.write(sentence + '\n')
  lines = []
  scan, _ = check.check('synthetic', root, out=lines.append)
  warned = {line.split(': ')[1] for line in lines if line.endswith('empty sentence')}
  assert warned == {folder_of(root, n) for n in names[2:]}
  empty = {s.name for s in scan.sequences if sequence_lib.is_empty_sentence(s.sentence)}
  assert empty == set(names[2:])
  config = small_config(batch=8)
  config.data.weights = {'synthetic': 1.0}
  pairs = stream.PairStream(config, {'synthetic': scan.sequences})
  keys = {int(k) for _, batch in zip(range(3), pairs.iterate(0)) for k in batch['sequence_key']}
  by_name = {s.name: s.sequence_key for s in scan.sequences}
  assert keys == {by_name[n] for n in names[:2]}
  assert set(pairs.replacements()) == {'empty_sentence'}

"""Readers: fixture trees with each format's quirks, parsed exactly; bad trees fail naming the path."""

import collections
import json
import os

import ml_collections
import numpy as np
import pytest

from input_pipeline import readers
from input_pipeline.readers import lasot
from input_pipeline.readers import otb99_lang


def write(path, text=''):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def frames(folder, names):
  for name in names:
    write(os.path.join(folder, name))


def rows(boxes, sep=','):
  return ''.join(sep.join(str(v) for v in box) + '\n' for box in boxes)


BOXES = [[10, 20, 30, 40], [11.5, 21, 30, 40], [0, 0, 0, 0], [12, 22, 31, 41]]


def lasot_sequence(root, name, boxes=BOXES, occlusion='0,0,1,0', out_of_view='0,0,0,0',
                   sentence='white airplane landing on ground'):
  folder = os.path.join(root, name.rsplit('-', 1)[0], name)
  frames(os.path.join(folder, 'img'), [f'{i:08d}.jpg' for i in range(1, len(boxes) + 1)])
  write(os.path.join(folder, 'groundtruth.txt'), rows(boxes))
  write(os.path.join(folder, 'full_occlusion.txt'), occlusion + '\n')
  write(os.path.join(folder, 'out_of_view.txt'), out_of_view + '\n')
  write(os.path.join(folder, 'nlp.txt'), sentence + '\n')
  return folder


# --------------------------------------------------------------------------- LaSOT


def test_lasot_split_lists_are_the_official_ones():
  train, test = lasot.split_names('train'), lasot.split_names('test')
  assert len(train) == 1120 and len(test) == 280 and not set(train) & set(test)
  per_class = collections.Counter(n.rsplit('-', 1)[0] for n in test)
  assert len(per_class) == 70 and set(per_class.values()) == {4}  # 4 test videos of each class
  assert collections.Counter(n.rsplit('-', 1)[0] for n in train).most_common()[-1][1] == 16
  assert test[:3] == ['airplane-1', 'airplane-9', 'airplane-13']


def test_lasot_parses_boxes_visibility_sentence(tmp_path):
  root = str(tmp_path)
  lasot_sequence(root, 'airplane-1')
  lasot_sequence(root, 'airplane-10', out_of_view='0,1,0,0', sentence='  plane in the sky  ')
  seqs = {s.name: s for s in readers.load_dataset('lasot', root)}
  a = seqs['airplane-1']
  np.testing.assert_array_equal(a.boxes, BOXES)
  np.testing.assert_array_equal(a.visible, [True, True, False, True])
  assert a.sentence == 'white airplane landing on ground' and a.dataset == 'lasot'
  assert a.frames[0] == os.path.join(root, 'airplane', 'airplane-1', 'img', '00000001.jpg')
  assert a.attributes == {}
  np.testing.assert_array_equal(seqs['airplane-10'].visible, [True, False, False, True])
  assert seqs['airplane-10'].sentence == 'plane in the sky'


def test_lasot_test_split_reads_listed_names_and_names_missing_ones(tmp_path):
  root = str(tmp_path)
  lasot_sequence(root, 'airplane-1')
  with pytest.raises(readers.MissingPathError) as e:
    readers.load_dataset('lasot', root, split='test')
  assert os.path.join(root, 'airplane', 'airplane-9') in str(e.value)
  assert 'missing folder' in str(e.value) and '279 problem' in str(e.value)


def test_lasot_attributes_from_user_file_json_and_csv(tmp_path):
  root = str(tmp_path / 'lasot')
  lasot_sequence(root, 'airplane-1')
  js = tmp_path / 'att.json'
  js.write_text(json.dumps({'att_name_short': ['IV', 'POC', 'FM'], 'att_name_long': ['a', 'b', 'c'],
                            'airplane-1': ['POC', 'FM']}))
  seq, = readers.load_dataset('lasot', root, attributes_file=str(js))
  assert seq.attributes == {'IV': 0, 'POC': 1, 'FM': 1}
  cs = tmp_path / 'att.csv'
  cs.write_text('name,IV,POC,FM\nairplane-1,1,0,1\n')
  seq, = readers.load_dataset('lasot', root, attributes_file=str(cs))
  assert seq.attributes == {'IV': 1, 'POC': 0, 'FM': 1}


def test_lasot_ext_reads_the_whole_tree(tmp_path):
  lasot_sequence(str(tmp_path), 'atv-1')
  lasot_sequence(str(tmp_path), 'wingsuit-3')
  names = [s.name for s in readers.load_dataset('lasot_ext', str(tmp_path))]
  assert names == ['atv-1', 'wingsuit-3']


# --------------------------------------------------------------------------- TNL2K


def tnl2k_sequence(folder, names, boxes, sentence='the man in a red coat'):
  frames(os.path.join(folder, 'imgs'), names)
  write(os.path.join(folder, 'groundtruth.txt'), rows(boxes))
  write(os.path.join(folder, 'language.txt'), sentence + '\n')


def test_tnl2k_splits_frame_names_and_damaged_frame(tmp_path):
  root = str(tmp_path)
  tnl2k_sequence(os.path.join(root, 'TNL2K_train_subset', 'part1', 'Arrow_Video_ZZ04_done'),
                 ['frame_10.png', 'frame_2.jpg', 'frame_1.jpg'], BOXES[:3])
  damaged = os.path.join(root, 'test', 'test_015_Sord_video_Q01_done')
  tnl2k_sequence(damaged, ['00000001.png', '00000002.pn_error', '00000003.png', 'notes.txt'],
                 [BOXES[0], BOXES[1], [1, 2, 3, 4]])
  seq, = readers.load_dataset('tnl2k', root, split='train')
  assert seq.name == 'Arrow_Video_ZZ04_done'
  assert [os.path.basename(f) for f in seq.frames] == ['frame_1.jpg', 'frame_2.jpg', 'frame_10.png']
  np.testing.assert_array_equal(seq.visible, [True, True, False])  # 0,0,0,0: no target
  assert seq.sentence == 'the man in a red coat'
  seq, = readers.load_dataset('tnl2k', root, split='test')
  assert [os.path.basename(f) for f in seq.frames] == ['00000001.png', '00000002.pn_error',
                                                       '00000003.png']
  with pytest.raises(readers.MissingPathError, match='val'):
    readers.load_dataset('tnl2k', root, split='val')


# --------------------------------------------------------------------------- OTB99-Lang


def otb_video(videos, folder, numbers, digits=4, annotations=None, ext='jpg'):
  frames(os.path.join(videos, folder, 'img'), [f'{i:0{digits}d}.{ext}' for i in numbers])
  for name, text in (annotations or {}).items():
    write(os.path.join(videos, folder, name), text)


def test_otb99_lang_offsets_digits_and_shared_videos(tmp_path):
  root = str(tmp_path)
  videos = os.path.join(root, 'OTB_videos')
  box = lambda i: [i, i + 1, 20, 30]
  otb_video(videos, 'David', range(1, 771),
            annotations={'groundtruth_rect.txt': rows([box(i) for i in range(471)], ' ')})
  otb_video(videos, 'Board', range(1, 699), digits=5,
            annotations={'groundtruth_rect.txt': rows([box(i) for i in range(698)], '\t')})
  otb_video(videos, 'Tiger1', range(1, 355),
            annotations={'groundtruth_rect.txt': rows([box(i) for i in range(354)])})
  otb_video(videos, 'BlurCar1', range(247, 989),
            annotations={'groundtruth_rect.txt': rows([box(i) for i in range(742)])})
  otb_video(videos, 'Jogging', range(1, 308),
            annotations={'groundtruth_rect.1.txt': rows([box(1)] * 307),
                         'groundtruth_rect.2.txt': rows([box(2)] * 307)})
  for name in ('David', 'Board', 'Jogging-1'):
    write(os.path.join(root, 'OTB_query_train', f'{name}.txt'), f'sentence of {name}\n')
  for name in ('Tiger1', 'BlurCar1', 'Jogging-2'):
    write(os.path.join(root, 'OTB_query_test', f'{name}.txt'), f'sentence of {name}\n')

  seqs = {s.name: s for s in readers.load_dataset('otb99_lang', root)}
  assert set(seqs) == {'David', 'Board', 'Jogging-1', 'Tiger1', 'BlurCar1', 'Jogging-2'}
  david = seqs['David']
  assert len(david) == 471 and david.frames[0].endswith(os.path.join('David', 'img', '0300.jpg'))
  assert david.frames[-1].endswith('0770.jpg')
  np.testing.assert_array_equal(david.boxes[0], box(0))
  board = seqs['Board']
  assert len(board) == 698 and board.frames[0].endswith('00001.jpg')
  np.testing.assert_array_equal(board.boxes[-1], box(697))
  tiger = seqs['Tiger1']  # the first 5 frames omitted, and their boxes
  assert len(tiger) == 349 and tiger.frames[0].endswith('0006.jpg')
  np.testing.assert_array_equal(tiger.boxes[0], box(5))
  car = seqs['BlurCar1']
  assert len(car) == 742 and car.frames[0].endswith('0247.jpg') and car.frames[-1].endswith('0988.jpg')
  np.testing.assert_array_equal(seqs['Jogging-1'].boxes[0], box(1))
  np.testing.assert_array_equal(seqs['Jogging-2'].boxes[0], box(2))
  assert seqs['Jogging-1'].frames == seqs['Jogging-2'].frames
  assert seqs['Jogging-2'].sentence == 'sentence of Jogging-2'
  assert seqs['Jogging-1'].sequence_key != seqs['Jogging-2'].sequence_key
  assert [s.name for s in readers.load_dataset('otb99_lang', root, split='test')] == [
      'BlurCar1', 'Jogging-2', 'Tiger1']


def test_otb99_lang_split_copy_of_shared_video(tmp_path):
  root = str(tmp_path)
  otb_video(os.path.join(root, 'OTB_videos'), 'Skating2-1', range(1, 474),
            annotations={'groundtruth_rect.txt': rows([[5, 6, 7, 8]] * 473)})
  write(os.path.join(root, 'OTB_query_test', 'Skating2-1.txt'), 'a girl skating\n')
  write(os.path.join(root, 'OTB_query_train', '.keep'))
  seq, = readers.load_dataset('otb99_lang', root, split='test')
  assert len(seq) == 473 and os.path.join('Skating2-1', 'img', '0001.jpg') in seq.frames[0]
  assert otb99_lang.table_entry('Human4')['annotation'] == 'Human4/groundtruth_rect.2.txt'


# --------------------------------------------------------------------------- VL-SOT


def vlsot_sequence(root, name, image_dir='imgs', speed=None, absent='0\n0\n1\n0\n'):
  folder = os.path.join(root, name)
  frames(os.path.join(folder, image_dir), [f'{i:06d}.jpg' for i in range(1, 5)])
  write(os.path.join(folder, 'groundtruth_rect.txt'), rows(BOXES))
  write(os.path.join(folder, 'language.txt'), 'a small bird flying over the lake\n')
  write(os.path.join(folder, 'absent.txt'), absent)
  write(os.path.join(folder, 'attributes.txt'), ','.join(['0', '1'] * 8 + ['1']) + '\n')
  if speed is not None:
    write(os.path.join(folder, 'relative_speed.txt'), speed)


def test_vlsot_absent_frames_img_dirs_attributes_speed(tmp_path):
  r230, r270 = str(tmp_path / '230'), str(tmp_path / '270')
  vlsot_sequence(r230, 'bird_1')
  vlsot_sequence(r270, 'drone_7', image_dir='img', speed='3.93\n', absent='0\n1\n1\n0\n')
  seq, = readers.load_dataset('vlsot230', r230)
  np.testing.assert_array_equal(seq.boxes, BOXES)  # kept as in the file, 0,0,0,0 included
  np.testing.assert_array_equal(seq.visible, [True, True, False, True])
  assert seq.sentence == 'a small bird flying over the lake'
  assert seq.attributes == {f'attr{i + 1:02d}': v for i, v in enumerate([0, 1] * 8 + [1])}
  seq, = readers.load_dataset('vlsot270', r270)
  assert seq.frames[0].endswith(os.path.join('img', '000001.jpg'))
  np.testing.assert_array_equal(seq.visible, [True, False, False, True])
  assert seq.attributes['relative_speed'] == pytest.approx(3.93)
  names = tmp_path / 'names.txt'
  names.write_text(''.join(f'a{i}\n' for i in range(17)))
  seq, = readers.load_dataset('vlsot270', r270, attributes_file=str(names))
  assert seq.attributes['a1'] == 1 and seq.attributes['a16'] == 1


# --------------------------------------------------------------------------- GOT-10k


def test_got10k_cover_absence_and_pseudo_sentence(tmp_path):
  folder = os.path.join(str(tmp_path), 'train', 'GOT-10k_Train_000001')
  frames(folder, [f'{i:08d}.jpg' for i in range(1, 5)])
  write(os.path.join(folder, 'groundtruth.txt'), rows(BOXES))
  write(os.path.join(folder, 'absence.label'), '0\n0\n1\n0\n')
  write(os.path.join(folder, 'cover.label'), '8\n0\n0\n3\n')
  write(os.path.join(folder, 'meta_info.ini'),
        '[METAINFO]\nurl: https://youtu.be/x\nbegin: 00:00:01\nobject_class: ailurus fulgens\n'
        'motion_class: walking\nmajor_class: carnivore\nroot_class: animal\nmotion_adverb: slowly\n'
        'resolution: (1280, 720)\n')
  write(os.path.join(str(tmp_path), 'train', 'list.txt'), 'GOT-10k_Train_000001\n')
  seq, = readers.load_dataset('got10k', str(tmp_path), split='train')
  np.testing.assert_array_equal(seq.visible, [True, False, False, True])
  assert seq.sentence == 'ailurus fulgens walking slowly'
  assert seq.attributes['root_class'] == 'animal' and seq.attributes['object_class'] == 'ailurus fulgens'
  assert seq.frames[3].endswith('00000004.jpg')


# --------------------------------------------------------------------------- bad trees


@pytest.mark.parametrize('plant, message', [
    (lambda f: os.remove(os.path.join(f, 'groundtruth.txt')), 'groundtruth.txt: missing file'),
    (lambda f: write(os.path.join(f, 'img', '00000005.jpg')), '5 frames but 4 boxes'),
    (lambda f: os.remove(os.path.join(f, 'img', '00000002.jpg')), '00000002.jpg: missing frame'),
    (lambda f: write(os.path.join(f, 'groundtruth.txt'), '1,2,3,4\n1,2,a,4\n'), 'line 2: not numbers'),
    (lambda f: write(os.path.join(f, 'groundtruth.txt'), '1,2,3\n'), 'line 1: 3 values, expected 4'),
    (lambda f: write(os.path.join(f, 'full_occlusion.txt'), '0,0,0\n'), '3 values but 4 frames'),
])
def test_malformed_lasot_fails_at_construction_naming_path(tmp_path, plant, message):
  folder = lasot_sequence(str(tmp_path), 'cat-1')
  plant(folder)
  with pytest.raises(readers.DatasetError) as e:
    readers.load_dataset('lasot', str(tmp_path))
  assert message in str(e.value) and folder in str(e.value)
  assert isinstance(e.value, ValueError)


def test_box_separators_comma_tab_whitespace_and_nan(tmp_path):
  path = str(tmp_path / 'gt.txt')
  write(path, '1,2,3,4\n5\t6\t7\t8\n9 10  11 12\n13, 14, 15, 16\nNaN,NaN,NaN,NaN\n\n')
  from input_pipeline.readers import common
  boxes = common.read_boxes(path)
  np.testing.assert_array_equal(boxes[:4], np.arange(1, 17).reshape(4, 4))
  assert np.isnan(boxes[4]).all() and len(boxes) == 5


def test_unknown_dataset_and_missing_root(tmp_path):
  with pytest.raises(readers.DatasetError, match='unknown dataset'):
    readers.load_dataset('lasott', str(tmp_path))
  with pytest.raises(FileNotFoundError, match='nowhere'):
    readers.load_dataset('lasot', str(tmp_path / 'nowhere'))
  with pytest.raises(readers.DatasetError, match='no sequences'):
    readers.load_dataset('lasot_ext', str(tmp_path))


# --------------------------------------------------------------------------- roots, keys


def test_dataset_root_config_then_env_then_clear_error(monkeypatch):
  config = ml_collections.ConfigDict({'data': {'roots': {'lasot': '/data/lasot', 'tnl2k': ''}}})
  monkeypatch.setenv('COST_DATA_LASOT', '/env/lasot')
  monkeypatch.setenv('COST_DATA_TNL2K', '/env/tnl2k')
  assert readers.dataset_root(config, 'lasot') == '/data/lasot'
  assert readers.dataset_root(config, 'tnl2k') == '/env/tnl2k'
  monkeypatch.delenv('COST_DATA_TNL2K')
  with pytest.raises(readers.DatasetError) as e:
    readers.dataset_root(config, 'tnl2k')
  assert '--config.data.roots.tnl2k=' in str(e.value) and 'COST_DATA_TNL2K=' in str(e.value)


def test_sequence_keys_unique_across_datasets(tmp_path):
  lasot_sequence(str(tmp_path / 'a'), 'cat-1')
  lasot_sequence(str(tmp_path / 'b'), 'cat-1')
  a, = readers.load_dataset('lasot', str(tmp_path / 'a'))
  b, = readers.load_dataset('lasot_ext', str(tmp_path / 'b'))
  assert a.sequence_key != b.sequence_key
  assert a.sequence_key == readers.load_dataset('lasot', str(tmp_path / 'a'))[0].sequence_key


# --------------------------------------------------------------------------- errors name their file


def test_bad_relative_speed_names_file_and_line_and_later_problems_are_reported_too(tmp_path):
  root = str(tmp_path)
  vlsot_sequence(root, 'bird_1', speed='fast abc\n')
  vlsot_sequence(root, 'bird_2')
  vlsot_sequence(root, 'bird_3')
  write(os.path.join(root, 'bird_3', 'groundtruth_rect.txt'), '1,2,3,4\n')  # 1 box, 4 frames
  scan = readers.scan_dataset('vlsot270', root)
  assert [s.name for s in scan.sequences] == ['bird_2']  # the scan went on past bird_1
  with pytest.raises(readers.DatasetError) as e:
    readers.load_dataset('vlsot270', root)
  message = str(e.value)
  speed = os.path.join(root, 'bird_1', 'relative_speed.txt')
  assert f"{speed}: line 1: not a number: 'fast'" in message and '2 problem(s)' in message
  assert f'{os.path.join(root, "bird_3", "imgs")}: 4 frames but 1 boxes' in message


def test_utf16_groundtruth_is_a_named_error_and_a_utf8_bom_is_accepted(tmp_path):
  root = str(tmp_path)
  folder = lasot_sequence(root, 'cat-1')
  gt = os.path.join(folder, 'groundtruth.txt')
  with open(gt, 'wb') as f:
    f.write(rows(BOXES).encode('utf-16'))  # b'\xff\xfe' + UTF-16-LE
  with pytest.raises(readers.DatasetError) as e:
    readers.load_dataset('lasot', root)
  assert str(e.value).splitlines() == [f'lasot: error: {gt}: UTF-16 text (starts with a UTF-16 '
                                       'byte-order mark); save it as UTF-8 or ASCII']
  assert not isinstance(e.value, UnicodeDecodeError)
  with open(gt, 'wb') as f:
    f.write(b'1,2,3,4\n\xe9,2,3,4\n')  # Latin-1, not UTF-8
  with pytest.raises(readers.DatasetError, match=r'groundtruth.txt: line 2: not UTF-8 text \(byte 0xe9'):
    readers.load_dataset('lasot', root)
  with open(gt, 'wb') as f:
    f.write(b'\xef\xbb\xbf' + rows(BOXES).encode())
  seq, = readers.load_dataset('lasot', root)
  np.testing.assert_array_equal(seq.boxes, BOXES)


def test_empty_otb_query_is_reported_with_the_query_file(tmp_path):
  root = str(tmp_path)
  otb_video(os.path.join(root, 'OTB_videos'), 'Skating2-1', range(1, 474),
            annotations={'groundtruth_rect.txt': rows([[5, 6, 7, 8]] * 473)})
  write(os.path.join(root, 'OTB_query_test', 'Skating2-1.txt'), '\n')
  scan = readers.scan_dataset('otb99_lang', root, split='test')
  assert [str(p) for p in scan.problems] == [
      f'warning: {os.path.join(root, "OTB_query_test", "Skating2-1.txt")}: empty sentence']


def test_names_read_only_the_named_sequences_and_unknown_names_are_named(tmp_path):
  root = str(tmp_path)
  lasot_sequence(root, 'cat-1')
  lasot_sequence(root, 'cat-2')
  write(os.path.join(root, 'cat', 'cat-2', 'groundtruth.txt'), 'garbage\n')  # never read below
  seq, = readers.load_dataset('lasot', root, names=['cat-1'])
  assert seq.name == 'cat-1'
  with pytest.raises(readers.DatasetError, match='garbage'):
    readers.load_dataset('lasot', root)
  with pytest.raises(readers.DatasetError) as e:
    readers.load_dataset('lasot', root, names=['cat-1', 'cta-1', 'dog'])
  assert str(e.value) == f'lasot: no sequence named cta-1, dog under {root}; it holds 2 (cat-1, cat-2)'
  vlsot_sequence(str(tmp_path / 'v'), 'bird_1')
  with pytest.raises(readers.DatasetError, match='no sequence named bird'):
    readers.load_dataset('vlsot230', str(tmp_path / 'v'), names=['bird'])


def test_frame_order_is_numeric():
  from input_pipeline.readers import common
  paths = ['/s/10.jpg', '/s/2.jpg', '/s/1.jpg', '/s/11.jpg']
  assert sorted(paths, key=common.frame_order) == ['/s/1.jpg', '/s/2.jpg', '/s/10.jpg', '/s/11.jpg']

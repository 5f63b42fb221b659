"""Tests of the dataset loaders: DAVIS (real 2016 data, tiny 2017 folders), YouTube-VOS,
the synthetic set, a user's own video, and the errors bad input gives."""

import json
import os
import pathlib

import cv2
import numpy as np
from PIL import Image
import pytest

from configs import default
from conftest import DAVIS2016_VAL
from jvos.data.davis import load_davis
from jvos.data.synthetic import ensure_synthetic_davis
from jvos.data.user_video import load_user_video
from jvos.data.video import VOID, palette, read_frame, write_label_map
from jvos.data.youtube_vos import load_youtube_vos
from jvos.errors import InputError

HEIGHT, WIDTH = 48, 64
TINY_SYNTHETIC = dict(num_videos=2, num_frames=5, height=64, width=96, max_objects=3, seed=7)


def _rect(top: int, left: int, bottom: int, right: int) -> np.ndarray:
  mask = np.zeros((HEIGHT, WIDTH), bool)
  mask[top:bottom, left:right] = True
  return mask


RECT_1 = _rect(5, 5, 20, 25)
RECT_2 = _rect(25, 30, 40, 60)


def _labels(objects: dict[int, np.ndarray]) -> np.ndarray:
  """A label map with each object id drawn over its boolean mask."""
  labels = np.zeros((HEIGHT, WIDTH), np.uint8)
  for obj, mask in objects.items():
    labels[mask] = obj
  return labels


def _write_frames(folder: pathlib.Path, names, size=(HEIGHT, WIDTH)) -> list[pathlib.Path]:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(len(names))
  paths = [folder / f'{name}.jpg' for name in names]
  for path in paths:
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
  return paths


def _frame_names(count: int, step: int = 1) -> list[str]:
  return [f'{t:05d}' for t in range(0, count * step, step)]


@pytest.fixture
def davis2017_root(tmp_path) -> pathlib.Path:
  """A DAVIS-2017 folder: 2 sequences of 3 frames, 2 objects, a void band; val lists both."""
  root = tmp_path / 'davis2017'
  labels = _labels({1: RECT_1, 2: RECT_2})
  labels[25:40, 27:30] = VOID  # DAVIS-2017 marks uncertain edges as void.
  for sequence in ('shapes', 'boxes'):
    _write_frames(root / 'JPEGImages' / '480p' / sequence, _frame_names(3))
    for name in _frame_names(3):
      write_label_map(root / 'Annotations' / '480p' / sequence / f'{name}.png', labels,
                      binary=False)
  (root / 'ImageSets' / '2017').mkdir(parents=True)
  (root / 'ImageSets' / '2017' / 'val.txt').write_text('shapes\nboxes\n')
  return root


def _write_youtube_split(split_dir: pathlib.Path, videos: dict) -> None:
  """videos: name -> (frame names, {obj: (category, meta frames)}, {frame name: labels})."""
  meta = {'videos': {}}
  for name, (frames, objects, annotations) in videos.items():
    _write_frames(split_dir / 'JPEGImages' / name, frames)
    for frame_name, labels in annotations.items():
      write_label_map(split_dir / 'Annotations' / name / f'{frame_name}.png', labels,
                      binary=False)
    meta['videos'][name] = {'objects': {
        str(obj): {'category': category, 'frames': meta_frames}
        for obj, (category, meta_frames) in objects.items()}}
  (split_dir / 'meta.json').write_text(json.dumps(meta))


@pytest.fixture
def youtube_root(tmp_path) -> pathlib.Path:
  """train: masks every 5th of 11 frames. valid: every 5th frame kept, object 2 starts late."""
  root = tmp_path / 'youtube_vos'
  train_masks = _frame_names(3, step=5)
  _write_youtube_split(root / 'train', {
      'pets': (_frame_names(11), {1: ('cat', train_masks), 2: ('dog', train_masks)},
               {name: _labels({1: RECT_1, 2: RECT_2}) for name in train_masks})})
  valid_frames = _frame_names(6, step=5)
  _write_youtube_split(root / 'valid', {
      'park': (valid_frames, {1: ('person', valid_frames), 2: ('frisbee', valid_frames[2:])},
               {'00000': _labels({1: RECT_1}), '00010': _labels({2: RECT_2})}),
      'sofa': (valid_frames[:3], {1: ('cat', valid_frames[:3])},
               {'00000': _labels({1: RECT_1})})})
  return root


# DAVIS-2016, the real data.


def test_davis2016_val_is_binary_one_object_every_frame_annotated(davis2016_root):
  dataset = load_davis(davis2016_root, split='val')
  assert [video.name for video in dataset] == list(DAVIS2016_VAL)
  assert dataset.dense_annotations
  for video in dataset:
    assert video.binary and video.object_ids == (1,)
    assert sorted(video.annotation_paths) == list(video.frame_names)
  dog = dataset.videos[DAVIS2016_VAL.index('dog')]
  assert dog.frame(0).shape == (480, 854, 3)
  labels = dog.annotation(dog.frame_names[-1])
  assert set(np.unique(labels).tolist()) == {0, 1}
  with Image.open(dog.annotation_paths['00000']) as image:  # On disk it is 0/255 grey.
    assert image.mode == 'L' and np.asarray(image).max() == 255


def test_davis2016_train_keeps_every_second_frame(davis2016_root):
  dataset = load_davis(davis2016_root, split='train')
  assert len(dataset) == 30
  assert not set(video.name for video in dataset) & set(DAVIS2016_VAL)
  listed = (davis2016_root / 'ImageSets' / '480p' / 'train.txt').read_text().split()[::2]
  for video in dataset:
    numbers = [int(name) for name in video.frame_names]
    assert numbers[0] == 0 and set(np.diff(numbers).tolist()) == {2}, video.name
    assert sorted(video.annotation_paths) == list(video.frame_names)
    assert len(video) == sum(f'/{video.name}/' in line for line in listed)


def test_davis_sequences_are_read_in_the_given_order(davis2016_root):
  dataset = load_davis(davis2016_root, sequences=('goat', 'bear'))
  assert [video.name for video in dataset] == ['goat', 'bear']


# DAVIS-2017 style folders.


def test_davis2017_palette_masks_give_object_ids_and_void(davis2017_root):
  dataset = load_davis(davis2017_root)
  assert [video.name for video in dataset] == ['shapes', 'boxes']
  video = dataset.videos[0]
  assert not video.binary and video.object_ids == (1, 2)
  assert set(np.unique(video.annotation('00002')).tolist()) == {0, 1, 2, VOID}
  given = video.given_masks()
  assert given[1][0] == given[2][0] == 0
  np.testing.assert_array_equal(given[1][1], RECT_1)
  np.testing.assert_array_equal(given[2][1], RECT_2)


def test_davis2017_split_file_selects_sequences(davis2017_root):
  (davis2017_root / 'ImageSets' / '2017' / 'train.txt').write_text('boxes\n')
  assert [video.name for video in load_davis(davis2017_root, split='train')] == ['boxes']


# YouTube-VOS.


def test_youtube_vos_valid_objects_start_on_their_own_frame(youtube_root):
  dataset = load_youtube_vos(youtube_root, split='valid')
  assert dataset.name == 'youtube_vos' and not dataset.dense_annotations
  assert dataset.seen_categories == {'cat', 'dog'}
  park, sofa = dataset.videos
  assert (park.name, sofa.name) == ('park', 'sofa')
  assert park.frame_names == ('00000', '00005', '00010', '00015', '00020', '00025')
  assert dict(park.first_frames) == {1: '00000', 2: '00010'}
  assert dict(park.categories) == {1: 'person', 2: 'frisbee'}
  assert sorted(park.annotation_paths) == ['00000', '00010']
  given = park.given_masks()
  assert (given[1][0], given[2][0]) == (0, 2)
  np.testing.assert_array_equal(given[1][1], RECT_1)
  np.testing.assert_array_equal(given[2][1], RECT_2)
  assert dict(sofa.categories) == {1: 'cat'}


def test_youtube_vos_train_has_masks_every_fifth_frame(youtube_root):
  (pets,) = load_youtube_vos(youtube_root, split='train').videos
  assert len(pets) == 11
  assert sorted(pets.annotation_paths) == ['00000', '00005', '00010']
  assert dict(pets.first_frames) == {1: '00000', 2: '00000'}
  np.testing.assert_array_equal(pets.annotation('00005'), _labels({1: RECT_1, 2: RECT_2}))


def test_youtube_vos_without_train_split_has_no_seen_categories(youtube_root):
  (youtube_root / 'train' / 'meta.json').unlink()
  dataset = load_youtube_vos(youtube_root, sequences=('sofa',))
  assert [video.name for video in dataset] == ['sofa']
  assert dataset.seen_categories == frozenset()


@pytest.mark.parametrize('breakage, culprit', [
    ('no_root', ''),
    ('no_split', 'valid'),
    ('no_meta', 'valid/meta.json'),
    ('garbage_meta', 'valid/meta.json'),
    ('unknown_video', 'valid/meta.json'),
    ('no_first_mask', 'valid/Annotations/park/00010.png'),
])
def test_youtube_vos_bad_input_names_the_file(youtube_root, breakage, culprit):
  sequences = ()
  if breakage == 'no_root':
    youtube_root = youtube_root.parent / 'elsewhere' / 'youtube_vos'
  elif breakage == 'no_split':
    (youtube_root / 'valid').rename(youtube_root / 'val')
  elif breakage == 'no_meta':
    (youtube_root / 'valid' / 'meta.json').unlink()
  elif breakage == 'garbage_meta':
    (youtube_root / 'valid' / 'meta.json').write_text('{"videos": [')
  elif breakage == 'unknown_video':
    sequences = ('park', 'no_such_video')
  elif breakage == 'no_first_mask':
    (youtube_root / 'valid' / 'Annotations' / 'park' / '00010.png').unlink()
  with pytest.raises(InputError) as error:
    load_youtube_vos(youtube_root, split='valid', sequences=sequences)
  assert str(youtube_root / culprit) in str(error.value), str(error.value)


# The synthetic set.


def _tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_synthetic_is_deterministic(tmp_path):
  first = _tree_bytes(ensure_synthetic_davis(tmp_path / 'a', **TINY_SYNTHETIC))
  second = _tree_bytes(ensure_synthetic_davis(tmp_path / 'b', **TINY_SYNTHETIC))
  assert len(first) == 1 + 1 + 2 * 2 * 5  # Marker, val.txt, 2 videos x 5 frames x (jpg, png).
  assert first == second
  other = _tree_bytes(ensure_synthetic_davis(tmp_path / 'c', **{**TINY_SYNTHETIC, 'seed': 8}))
  masks = [name for name in first if name.endswith('.png')]
  assert any(first[name] != other[name] for name in masks)


def test_synthetic_is_not_rewritten_but_regenerated_on_new_parameters(tmp_path):
  root = ensure_synthetic_davis(tmp_path, **TINY_SYNTHETIC)
  files = sorted(p for p in root.rglob('*') if p.is_file())
  old = 1_000_000_000_000_000_000
  for p in files:
    os.utime(p, ns=(old, old))  # A rewrite now shows even on coarse-grained file systems.
  assert ensure_synthetic_davis(tmp_path, **TINY_SYNTHETIC) == root
  assert all(p.stat().st_mtime_ns == old for p in files)

  ensure_synthetic_davis(tmp_path, **{**TINY_SYNTHETIC, 'num_frames': 3, 'num_videos': 1})
  dataset = load_davis(root)
  assert [len(video) for video in dataset] == [3]
  # Stale frames and videos of the old set are gone, not merely unlisted.
  assert len(list((root / 'JPEGImages' / '480p').rglob('*.jpg'))) == 3
  assert len(list((root / 'Annotations' / '480p').rglob('*.png'))) == 3


def _edge_strength(frame: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """Mean horizontal colour step on label boundaries, and off them."""
  step = np.abs(np.diff(frame.astype(np.float32), axis=1)).sum(-1)
  boundary = labels[:, 1:] != labels[:, :-1]
  return float(step[boundary].mean()), float(step[~boundary].mean())


def _objects_touch(labels: np.ndarray) -> bool:
  """Two different objects share a boundary: one covers part of the other."""
  left, right = labels[:, :-1], labels[:, 1:]
  return bool(np.any((left != right) & (left > 0) & (right > 0)))


def test_default_synthetic_set_has_exact_moving_occluding_objects(tmp_path):
  parameters = default.get_config().data.synthetic.to_dict()
  dataset = load_davis(ensure_synthetic_davis(tmp_path, **parameters))
  assert len(dataset) == parameters['num_videos']
  assert len(dataset.videos[0].object_ids) == parameters['max_objects']
  occlusions = 0
  for video in dataset:
    assert len(video) == parameters['num_frames'] and not video.binary
    assert 1 <= len(video.object_ids) <= parameters['max_objects']
    first = video.annotation('00000')
    assert set(np.unique(first).tolist()) == {0, *video.object_ids}
    last = video.annotation(video.frame_names[-1])
    for obj in video.object_ids:
      shift = np.subtract(*[np.argwhere(labels == obj).mean(0) for labels in (first, last)])
      assert np.hypot(*shift) > 5, f'object {obj} of {video.name} barely moves'
    for t in (0, len(video) - 1):
      frame, labels = video.frame(t), video.annotation(video.frame_names[t])
      assert frame.shape == (parameters['height'], parameters['width'], 3)
      on_boundary, elsewhere = _edge_strength(frame, labels)
      off_by_two, _ = _edge_strength(frame, np.roll(labels, 2, axis=1))
      assert on_boundary > 4 * elsewhere and on_boundary > 2 * off_by_two, video.name
    occlusions += any(_objects_touch(video.annotation(name)) for name in video.frame_names)
  assert occlusions >= 1


def test_synthetic_rejects_impossible_parameters(tmp_path):
  with pytest.raises(InputError, match='max_objects'):
    ensure_synthetic_davis(tmp_path, **{**TINY_SYNTHETIC, 'max_objects': 0})


# A user's own video.


def test_user_frames_folder_with_grey_mask_of_any_name(tmp_path):
  frames = _write_frames(tmp_path / 'walk', ['frame_b', 'frame_a', 'frame_c'])
  mask = tmp_path / 'my drawing.png'
  Image.fromarray(np.where(RECT_2, 255, 0).astype(np.uint8), mode='L').save(mask)
  dataset = load_user_video(tmp_path / 'walk', mask, tmp_path / 'work')
  assert dataset.name == 'video' and not dataset.dense_annotations
  (video,) = dataset.videos
  assert video.name == 'walk' and video.binary
  assert video.frame_paths == tuple(sorted(frames))
  assert dict(video.annotation_paths) == {'frame_a': mask}
  assert dict(video.first_frames) == {1: 'frame_a'}
  index, given = video.given_masks()[1]
  assert index == 0
  np.testing.assert_array_equal(given, RECT_2)


def test_user_palette_mask_gives_objects_and_no_mask_gives_zero_shot(tmp_path):
  _write_frames(tmp_path / 'walk', _frame_names(2))
  mask = tmp_path / 'mask.png'
  write_label_map(mask, _labels({1: RECT_1, 2: RECT_2}), binary=False)
  (video,) = load_user_video(tmp_path / 'walk', mask, tmp_path / 'work').videos
  assert not video.binary and video.object_ids == (1, 2)
  (video,) = load_user_video(tmp_path / 'walk', None, tmp_path / 'work').videos
  assert len(video) == 2 and dict(video.first_frames) == {} and not video.annotation_paths


def test_user_video_file_is_decoded_once(tmp_path):
  path = tmp_path / 'clip.avi'
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (WIDTH, HEIGHT))
  # Smooth frames of distinct brightness, so JPEG round trips stay close and tell them apart.
  ramp = np.linspace(0, 100, WIDTH, dtype=np.uint8)[None, :, None]
  originals = [np.broadcast_to(ramp + 20 * t, (HEIGHT, WIDTH, 3)).copy() for t in range(6)]
  for frame in originals:
    writer.write(frame)
  writer.release()
  mask = tmp_path / 'first.png'
  Image.fromarray(np.where(RECT_1, 255, 0).astype(np.uint8), mode='L').save(mask)

  (video,) = load_user_video(path, mask, tmp_path / 'work').videos
  assert video.name == 'clip'
  assert video.frame_paths == tuple(tmp_path / 'work' / 'frames' / 'clip' / f'{name}.jpg'
                                    for name in _frame_names(6))
  for t, original in enumerate(originals):
    assert np.abs(video.frame(t).astype(int) - original).mean() < 4, t
  assert dict(video.first_frames) == {1: '00000'}

  old = 1_000_000_000_000_000_000
  for p in video.frame_paths:
    os.utime(p, ns=(old, old))
  (again,) = load_user_video(path, mask, tmp_path / 'work').videos
  assert again.frame_paths == video.frame_paths
  assert all(p.stat().st_mtime_ns == old for p in again.frame_paths)


# Bad input: an InputError whose message names the file.


def _assert_names(error: pytest.ExceptionInfo, path: pathlib.Path) -> None:
  assert str(path) in str(error.value), str(error.value)


def test_missing_davis_root(tmp_path):
  with pytest.raises(InputError) as error:
    load_davis(tmp_path / 'no_davis')
  _assert_names(error, tmp_path / 'no_davis')


def test_missing_davis_sequence(davis2017_root):
  with pytest.raises(InputError) as error:
    load_davis(davis2017_root, sequences=('shapes', 'cows'))
  assert "['cows']" in str(error.value)
  _assert_names(error, davis2017_root / 'JPEGImages' / '480p')


def test_frames_without_first_frame_mask(davis2017_root):
  first_mask = davis2017_root / 'Annotations' / '480p' / 'boxes' / '00000.png'
  first_mask.unlink()
  with pytest.raises(InputError) as error:
    load_davis(davis2017_root)
  _assert_names(error, first_mask)


def test_mask_size_differs_from_frames(davis2017_root, tmp_path):
  first_mask = davis2017_root / 'Annotations' / '480p' / 'boxes' / '00000.png'
  write_label_map(first_mask, np.ones((HEIGHT, WIDTH + 1), np.uint8), binary=False)
  with pytest.raises(InputError) as error:
    load_davis(davis2017_root)
  _assert_names(error, first_mask)
  assert f'{WIDTH + 1}, {HEIGHT}' in str(error.value) and f'{WIDTH}, {HEIGHT}' in str(error.value)

  small_mask = tmp_path / 'small.png'
  Image.new('L', (WIDTH // 2, HEIGHT // 2), 255).save(small_mask)
  with pytest.raises(InputError) as error:
    load_user_video(davis2017_root / 'JPEGImages' / '480p' / 'boxes', small_mask, tmp_path)
  _assert_names(error, small_mask)


def test_empty_first_mask(davis2017_root, tmp_path):
  first_mask = davis2017_root / 'Annotations' / '480p' / 'shapes' / '00000.png'
  write_label_map(first_mask, np.zeros((HEIGHT, WIDTH), np.uint8), binary=False)
  with pytest.raises(InputError) as error:
    load_davis(davis2017_root)
  _assert_names(error, first_mask)

  empty_mask = tmp_path / 'empty.png'
  Image.new('L', (WIDTH, HEIGHT), 0).save(empty_mask)
  with pytest.raises(InputError) as error:
    load_user_video(davis2017_root / 'JPEGImages' / '480p' / 'boxes', empty_mask, tmp_path)
  _assert_names(error, empty_mask)


def test_corrupt_frame_and_mask(davis2017_root, tmp_path):
  (video, _) = load_davis(davis2017_root).videos
  truncated = video.frame_paths[1]
  truncated.write_bytes(truncated.read_bytes()[:300])
  with pytest.raises(InputError) as error:
    video.frame(1)
  _assert_names(error, truncated)
  video.frame_paths[2].write_bytes(b'not a jpeg at all')
  with pytest.raises(InputError) as error:
    read_frame(video.frame_paths[2])
  _assert_names(error, video.frame_paths[2])

  garbage_mask = video.annotation_paths['00001']
  garbage_mask.write_bytes(b'\x89PNG garbage')
  with pytest.raises(InputError) as error:
    video.annotation('00001')
  _assert_names(error, garbage_mask)
  with pytest.raises(InputError) as error:  # The same file as a user's first-frame mask.
    load_user_video(davis2017_root / 'JPEGImages' / '480p' / 'boxes', garbage_mask, tmp_path)
  _assert_names(error, garbage_mask)
  first_mask = video.annotation_paths['00000']
  first_mask.write_bytes(b'\x89PNG garbage')
  with pytest.raises(InputError) as error:  # ... and as the first-frame mask of a dataset.
    load_davis(davis2017_root)
  _assert_names(error, first_mask)


def test_rgb_masks_instead_of_palette(davis2017_root):
  # What a DAVIS-2017 mask becomes when re-saved by an image editor: the palette's colours.
  for mask in (davis2017_root / 'Annotations' / '480p' / 'shapes').glob('*.png'):
    Image.fromarray(palette()[_labels({1: RECT_1, 2: RECT_2})]).save(mask)
  with pytest.raises(InputError, match='palette') as error:
    load_davis(davis2017_root)
  _assert_names(error, davis2017_root / 'Annotations' / '480p' / 'shapes' / '00000.png')


def test_user_video_bad_paths(tmp_path):
  with pytest.raises(InputError) as error:
    load_user_video(tmp_path / 'missing.mp4', None, tmp_path / 'work')
  _assert_names(error, tmp_path / 'missing.mp4')

  not_a_video = tmp_path / 'holiday.mp4'
  not_a_video.write_bytes(b'\x00' * 1000)
  with pytest.raises(InputError) as error:
    load_user_video(not_a_video, None, tmp_path / 'work')
  _assert_names(error, not_a_video)

  _write_frames(tmp_path / 'walk', _frame_names(2))
  with pytest.raises(InputError) as error:
    load_user_video(tmp_path / 'walk', tmp_path / 'no_mask.png', tmp_path / 'work')
  _assert_names(error, tmp_path / 'no_mask.png')

"""Tests of the multi-object composites of real DAVIS-2016 objects (jvos/data/composites.py).

Expected masks and pixels are rebuilt here from the DAVIS-2016 files themselves and the recipe
the marker records (donor, scale, offset, donor frame of each object), not from the module's
own helpers, so a wrong placement, paste order or frame mapping shows.
"""

import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image
import pytest

from conftest import DAVIS2016_VAL
from jvos.data import composites
from jvos.data.composites import (IDENTITY, Placement, ensure_composites, main, paste_object,
                                  ping_pong, read_marker)
from jvos.data.davis import load_davis
from jvos.errors import InputError

# Two val backgrounds, five frames each: the first composite has max_pasted=2 donors.
SMALL_VAL = dict(split='val', num_videos=2, max_frames=5)
# dog-agility (13 frames) pasted into bear (41): 30 frames make it play back and forth.
PING_PONG_TRAIN = dict(split='train', sequences=('bear', 'dog-agility'), max_pasted=1,
                       max_frames=30)


@pytest.fixture(scope='module')
def val_root(davis2016_root, tmp_path_factory) -> pathlib.Path:
  return ensure_composites(davis2016_root, tmp_path_factory.mktemp('val'), **SMALL_VAL)


@pytest.fixture(scope='module')
def train_root(davis2016_root, tmp_path_factory) -> pathlib.Path:
  return ensure_composites(davis2016_root, tmp_path_factory.mktemp('train'), **PING_PONG_TRAIN)


def _recipes(root: pathlib.Path, split: str) -> dict:
  return json.loads((root / f'jvos_composites_{split}.json').read_text())['videos']


def _source_mask(davis_root: pathlib.Path, sequence: str, frame: str) -> np.ndarray:
  with Image.open(davis_root / 'Annotations' / '480p' / sequence / f'{frame}.png') as image:
    return np.asarray(image) > 0


def _source_frame(davis_root: pathlib.Path, sequence: str, frame: str) -> np.ndarray:
  with Image.open(davis_root / 'JPEGImages' / '480p' / sequence / f'{frame}.jpg') as image:
    return np.asarray(image.convert('RGB'))


def _composite(root: pathlib.Path, video: str, frame: str) -> tuple[np.ndarray, np.ndarray]:
  with Image.open(root / 'JPEGImages' / '480p' / video / f'{frame}.jpg') as image:
    pixels = np.asarray(image.convert('RGB'))
  with Image.open(root / 'Annotations' / '480p' / video / f'{frame}.png') as image:
    assert image.mode == 'P'
    labels = np.asarray(image)
  return pixels, labels


def _placed(mask: np.ndarray, scale: float, offset, shape) -> np.ndarray:
  """Composite pixel (x, y) shows donor pixel floor((x + 0.5 - ox) / s), likewise for y."""
  ys = np.floor((np.arange(shape[0]) + 0.5 - offset[1]) / scale).astype(int)
  xs = np.floor((np.arange(shape[1]) + 0.5 - offset[0]) / scale).astype(int)
  has_y = (ys >= 0) & (ys < mask.shape[0])
  has_x = (xs >= 0) & (xs < mask.shape[1])
  placed = np.zeros(shape, bool)
  placed[np.ix_(has_y, has_x)] = mask[np.ix_(ys[has_y], xs[has_x])]
  return placed


def _object_masks(davis_root, recipe: dict, t: int, shape) -> dict[int, np.ndarray]:
  """Object id -> its whole placed mask on composite frame t, visible or not."""
  masks = {}
  for obj, o in sorted(recipe['objects'].items(), key=lambda item: int(item[0])):
    masks[int(obj)] = _placed(_source_mask(davis_root, o['sequence'], o['frames'][t]),
                              o['scale'], o['offset'], shape)
  return masks


def _tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_ping_pong_plays_a_short_donor_back_and_forth():
  assert ping_pong(4, 10) == (0, 1, 2, 3)
  assert ping_pong(9, 3) == (0, 1, 2, 1, 0, 1, 2, 1, 0)
  assert ping_pong(3, 1) == (0, 0, 0)


def test_val_composites_load_as_a_davis2017_set(val_root, davis2016_root):
  dataset = load_davis(val_root, split='val')
  names = (val_root / 'ImageSets' / '2017' / 'val.txt').read_text().split()
  assert [video.name for video in dataset] == names == sorted(names) and len(names) == 2
  recipes = _recipes(val_root, 'val')
  assert sorted(recipes) == names
  for video in dataset:
    background, *donors = video.name.split('+')
    assert background in DAVIS2016_VAL and set(donors) <= set(DAVIS2016_VAL)
    assert len({background, *donors}) == 1 + len(donors) and 1 <= len(donors) <= 2
    assert not video.binary and video.object_ids == tuple(range(1, 2 + len(donors)))
    assert [o['sequence'] for _, o in sorted(recipes[video.name]['objects'].items())] == [
        background, *donors]
    source = load_davis(davis2016_root, sequences=(background,)).videos[0]
    assert video.frame_names == source.frame_names[:5]
    assert sorted(video.annotation_paths) == list(video.frame_names)
    assert video.frame(0).shape == (480, 854, 3)
  # The first composite is the most crowded one.
  assert max(len(video.object_ids) for video in dataset) == 3


def test_train_composites_keep_the_background_frame_names(train_root, davis2016_root):
  (video, other) = load_davis(train_root, split='train').videos
  assert (video.name, other.name) == ('bear+dog-agility', 'dog-agility+bear')
  assert video.frame_names == tuple(f'{t:05d}' for t in range(0, 60, 2))
  assert other.frame_names == tuple(f'{t:05d}' for t in range(0, 26, 2))
  donor = [f'{t:05d}' for t in range(0, 26, 2)]  # dog-agility keeps every second frame too.
  # Matched by position, back and forth: 0..12, 11..0, 1..5.
  positions = [*range(13), *range(11, -1, -1), *range(1, 6)]
  recipe = _recipes(train_root, 'train')['bear+dog-agility']
  assert recipe['objects']['2']['frames'] == [donor[i] for i in positions]
  assert recipe['objects']['1']['frames'] == list(video.frame_names)
  assert _recipes(train_root, 'train')['dog-agility+bear']['objects']['2']['frames'] == [
      f'{t:05d}' for t in range(0, 26, 2)]


@pytest.mark.parametrize('split', ['val', 'train'])
def test_labels_are_the_placed_donor_masks_in_paste_order(split, val_root, train_root,
                                                          davis2016_root):
  root = val_root if split == 'val' else train_root
  occluded = 0
  for name, recipe in _recipes(root, split).items():
    for t, frame in enumerate(recipe['objects']['1']['frames']):
      _, labels = _composite(root, name, frame)
      expected = np.zeros(labels.shape, np.uint8)
      masks = _object_masks(davis2016_root, recipe, t, labels.shape)
      for obj, mask in masks.items():  # Later objects are drawn over earlier ones.
        occluded += int((expected[mask] > 0).sum())
        expected[mask] = obj
      np.testing.assert_array_equal(labels, expected, err_msg=f'{name} {frame}')
      for obj, mask in masks.items():
        assert (labels[mask] >= obj).all(), f'{name} {frame}: object {obj} drawn over a later one'
  assert occluded > 1000, 'no object covers another: the paste order is not tested'


def test_val_placements_scale_and_move_the_donors(val_root):
  pasted = [o for recipe in _recipes(val_root, 'val').values()
            for obj, o in recipe['objects'].items() if obj != '1']
  assert all(0.6 <= o['scale'] <= 1 for o in pasted)
  assert any(o['scale'] < 1 for o in pasted) and any(o['offset'] != [0, 0] for o in pasted)


def test_object_interiors_show_the_donors_pixels(val_root, davis2016_root):
  # Three pixels in from every label edge, no alpha ramp (FEATHER = 2) reaches.
  kernel = np.ones((7, 7), np.uint8)
  for name, recipe in _recipes(val_root, 'val').items():
    frames = recipe['objects']['1']['frames']
    for t in (0, len(frames) - 1):
      pixels, labels = _composite(val_root, name, frames[t])
      background = _source_frame(davis2016_root, recipe['background'], frames[t])
      for obj, o in recipe['objects'].items():
        interior = cv2.erode((labels == int(obj)).astype(np.uint8), kernel).astype(bool)
        assert interior.sum() > 100, f'{name} {frames[t]}: object {obj} barely visible'
        donor = _source_frame(davis2016_root, o['sequence'], o['frames'][t])
        if o['scale'] != 1:
          donor = cv2.resize(donor, (0, 0), fx=o['scale'], fy=o['scale'],
                             interpolation=cv2.INTER_AREA)
        ys, xs = np.nonzero(interior)
        expected = donor[ys - o['offset'][1], xs - o['offset'][0]].astype(int)
        error = np.abs(pixels[ys, xs].astype(int) - expected)
        # Only the composite's own JPEG encoding (quality 95, 4:4:4) stands between them.
        assert error.mean() < 2 and np.percentile(error, 99) < 10, (name, frames[t], obj)
        if obj != '1':
          assert np.abs(background[ys, xs].astype(int) - expected).mean() > 10


def test_every_object_shows_enough_of_itself_on_frame_0(val_root, train_root, davis2016_root):
  for root, split in ((val_root, 'val'), (train_root, 'train')):
    for name, recipe in _recipes(root, split).items():
      _, labels = _composite(root, name, recipe['objects']['1']['frames'][0])
      for obj, o in recipe['objects'].items():
        area = _source_mask(davis2016_root, o['sequence'], o['frames'][0]).sum() * o['scale'] ** 2
        assert (labels == int(obj)).sum() >= 0.3 * area, (name, obj)


def test_paste_object_feathers_the_image_but_not_the_labels():
  frame = np.zeros((20, 30, 3), np.float32)
  labels = np.zeros((20, 30), np.uint8)
  first = np.zeros((20, 30), bool)
  first[5:15, 5:12] = True
  paste_object(frame, labels, np.full((20, 30, 3), 200, np.uint8), first, 1, IDENTITY)
  np.testing.assert_array_equal(labels, first)
  assert (frame[7:13, 7:10] == 200).all()  # Interior: the donor, exactly.
  assert 100 < frame[10, 5, 0] < 200 and 0 < frame[10, 4, 0] < 100  # The ramp across the edge.
  assert (frame[:, :2] == 0).all() and (frame[:2] == 0).all()  # Far outside: untouched.

  # A later object covers the earlier one, in the labels and in the image.
  second = np.zeros((20, 30), bool)
  second[2:12, 10:20] = True
  paste_object(frame, labels, np.full((20, 30, 3), 50, np.uint8), second, 2, IDENTITY)
  np.testing.assert_array_equal(labels == 2, second)
  np.testing.assert_array_equal(labels == 1, first & ~second)
  assert frame[8, 15, 0] == 50 and frame[13, 7, 0] == 200

  # Scaled by 0.5: donor rows 2..11 land on rows oy+1..oy+5, columns likewise.
  small_labels = np.zeros((20, 30), np.uint8)
  donor_mask = np.zeros((20, 30), bool)
  donor_mask[2:12, 4:14] = True
  paste_object(np.zeros((20, 30, 3), np.float32), small_labels, np.zeros((20, 30, 3), np.uint8),
               donor_mask, 3, Placement(0.5, (6, 4)))
  expected = np.zeros((20, 30), bool)
  expected[5:10, 8:13] = True
  np.testing.assert_array_equal(small_labels == 3, expected)


def test_composites_are_deterministic(val_root, davis2016_root, tmp_path):
  again = _tree_bytes(ensure_composites(davis2016_root, tmp_path / 'again', **SMALL_VAL))
  assert again == _tree_bytes(val_root)
  assert len(again) == 1 + 1 + 2 * 2 * 5  # Marker, val.txt, 2 videos x 5 frames x (jpg, png).
  other = ensure_composites(davis2016_root, tmp_path / 'other', **{**SMALL_VAL, 'seed': 1})
  assert _recipes(other, 'val') != _recipes(val_root, 'val')


def test_composites_are_not_rewritten_but_regenerated_on_new_parameters(davis2016_root,
                                                                        tmp_path):
  tiny = dict(split='val', num_videos=2, max_frames=3)
  root = ensure_composites(davis2016_root, tmp_path, **tiny)
  train = dict(split='train', sequences=('bear', 'dog-agility'), max_pasted=1, max_frames=2)
  ensure_composites(davis2016_root, tmp_path, **train)  # A train set beside it.
  mine = [tmp_path / 'JPEGImages' / '480p' / 'mine' / '00000.jpg',
          tmp_path / 'JPEGImages' / '480p' / 'not+davis' / '00000.jpg']
  for path in mine:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'not ours')
  files = sorted(p for p in root.rglob('*') if p.is_file())
  old = 1_000_000_000_000_000_000
  for p in files:
    os.utime(p, ns=(old, old))  # A rewrite now shows even on coarse-grained file systems.
  assert ensure_composites(davis2016_root, tmp_path, **tiny) == root
  assert all(p.stat().st_mtime_ns == old for p in files)

  old_names = set(_recipes(root, 'val'))
  ensure_composites(davis2016_root, tmp_path, **{**tiny, 'num_videos': 1, 'max_frames': 2})
  (video,) = load_davis(root, split='val').videos
  assert len(video) == 2 and video.name in old_names
  # Stale frames and videos of the old val set are gone, not merely unlisted...
  for kind, suffix in (('JPEGImages', '*.jpg'), ('Annotations', '*.png')):
    for name in old_names - {video.name}:
      assert not (root / kind / '480p' / name).exists()
    assert len(list((root / kind / '480p' / video.name).glob(suffix))) == 2
  # ...but the train set and other folders stay.
  assert [len(v) for v in load_davis(root, split='train')] == [2, 2]
  assert all(path.read_bytes() == b'not ours' for path in mine)

  # A run killed before its marker is redone.
  (root / 'jvos_composites_val.json').unlink()
  frame = root / 'JPEGImages' / '480p' / video.name / '00000.jpg'
  os.utime(frame, ns=(old, old))
  ensure_composites(davis2016_root, tmp_path, **{**tiny, 'num_videos': 1, 'max_frames': 2})
  assert frame.stat().st_mtime_ns != old and read_marker(root, 'val') is not None


@pytest.mark.parametrize('parameters, field', [
    (dict(max_pasted=0), 'max_pasted=0'),
    (dict(max_pasted=10), 'max_pasted=10'),  # Val has 10 sequences: 9 donors at most.
    (dict(num_videos=0), 'num_videos=0'),
    (dict(num_videos=10 * (9 + 9 * 8) + 1), 'num_videos'),
    (dict(seed=-1), 'seed=-1'),
    (dict(max_frames=0), 'max_frames=0'),
    (dict(sequences=('dog', 'cat')), "sequences=['cat']"),
    (dict(sequences=('dog',)), 'sequences'),
    (dict(split='no_such_split'), "'no_such_split'"),
])
def test_bad_parameters_name_the_parameter(davis2016_root, tmp_path, parameters, field):
  with pytest.raises(InputError) as error:
    ensure_composites(davis2016_root, tmp_path / 'out', **parameters)
  assert field in str(error.value), str(error.value)
  assert not (tmp_path / 'out').exists()


def test_writing_into_the_davis_folder_is_refused(davis2016_root):
  with pytest.raises(InputError, match='out_root'):
    ensure_composites(davis2016_root, davis2016_root, num_videos=1)


def test_unplaceable_objects_name_the_parameters_to_change(davis2016_root, tmp_path,
                                                           monkeypatch):
  monkeypatch.setattr(composites, 'MIN_VISIBLE_FRACTION', 1.01)  # More than any object shows.
  monkeypatch.setattr(composites, 'MAX_PLACEMENT_TRIES', 3)
  with pytest.raises(InputError) as error:
    ensure_composites(davis2016_root, tmp_path, num_videos=1, max_frames=1, seed=4)
  assert 'max_pasted=2' in str(error.value) and 'seed=4' in str(error.value)
  assert read_marker(tmp_path, 'val') is None


def test_command_line(davis2016_root, tmp_path, capsys):
  out = tmp_path / 'out'
  assert main(['--davis', str(davis2016_root), '--out', str(out), '--num_videos', '1',
               '--max_frames', '2', '--seed', '3']) == 0
  (name,) = _recipes(out, 'val')
  printed = capsys.readouterr().out
  assert f'{name}: 2 frames' in printed and '1 composites' in printed
  assert load_davis(out, split='val').videos[0].name == name
  # Run as a module, a bad parameter gives the one-line message and status 2.
  result = subprocess.run(
      [sys.executable, '-m', 'jvos.data.composites', '--davis', str(davis2016_root), '--out',
       str(out), '--max_pasted', '0'], capture_output=True, text=True,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert result.returncode == 2 and 'max_pasted=0' in result.stderr, result.stderr

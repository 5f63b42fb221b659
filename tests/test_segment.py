"""The runner (jvos/segment.py): what a segmenter is handed, merging, working size.

Real DAVIS-2016 frames shrunk 4x (214x120) keep every run short: a zero-shot run on a DAVIS
copy whose annotations are moved away.
"""

import pathlib

import cv2
import numpy as np
import pytest

from configs import default, osvos_davis16
from jvos import evaluation
from jvos import segment
from jvos import systems
from jvos.data.davis import load_davis
from jvos.data.video import read_frame, read_label_map, write_label_map
from jvos.errors import InputError

SMALL = (214, 120)  # (width, height): DAVIS 854x480 shrunk 4x.
NUM_FRAMES = 8


def shrink_frame(frame: np.ndarray) -> np.ndarray:
  return cv2.resize(frame, SMALL, interpolation=cv2.INTER_AREA)


def shrink_labels(labels: np.ndarray) -> np.ndarray:
  return cv2.resize(labels, SMALL, interpolation=cv2.INTER_NEAREST)


def write_frame(path: pathlib.Path, frame: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(path), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def iou(a: np.ndarray, b: np.ndarray) -> float:
  return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope='module')
def small_davis(davis2016_root, tmp_path_factory) -> pathlib.Path:
  """The first NUM_FRAMES frames of DAVIS-2016 dog, shrunk, in the DAVIS layout."""
  root = tmp_path_factory.mktemp('small_davis')
  for t in range(NUM_FRAMES):
    name = f'{t:05d}'
    write_frame(root / 'JPEGImages' / '480p' / 'dog' / f'{name}.jpg',
                shrink_frame(read_frame(davis2016_root / 'JPEGImages' / '480p' / 'dog' /
                                        f'{name}.jpg')))
    labels = read_label_map(davis2016_root / 'Annotations' / '480p' / 'dog' / f'{name}.png',
                            binary=True)
    write_label_map(root / 'Annotations' / '480p' / 'dog' / f'{name}.png', shrink_labels(labels),
                    binary=True)
  return root


class RecordingSegmenter:
  """Records what the runner hands it. One-shot, it scores each object as its given mask (a
  static 'propagation'); zero-shot, it proposes one fixed box (the frame's central quarter)."""

  def __init__(self):
    self.videos, self.frames, self.events = [], [], []

  def start(self, video: segment.VideoInput):
    self.videos.append(video)
    return np.zeros((video.num_objects, *video.working_size), np.float32)

  def step(self, state, frame):
    self.frames.append(frame.copy())
    self.events.append(('step',))
    if not self.videos[-1].num_objects:
      height, width = frame.shape[:2]
      box = np.zeros((1, height, width), np.float32)
      box[0, height // 4:3 * height // 4, width // 4:3 * width // 4] = 1
      return state, box
    return state, state

  def add_objects(self, state, frame, slots, masks):
    self.events.append(('add', tuple(slots), masks.copy()))
    state[list(slots)] = masks
    return state


# The zero-shot task ------------------------------------------------------------------------


def test_zero_shot_run_cannot_reach_any_annotation(small_davis, tmp_path):
  video = load_davis(small_davis, sequences=('dog',)).videos[0]
  annotations = small_davis / 'Annotations'
  away = small_davis / 'Annotations_away'
  annotations.rename(away)  # After loading: reading any mask now fails.
  try:
    segmenter = RecordingSegmenter()
    segment.segment_video(segmenter, video, tmp_path / 'masks' / 'dog', 'unsupervised')
  finally:
    away.rename(annotations)
  (view,) = segmenter.videos
  assert view.given == {} and view.num_objects == 0
  assert all(path.parent.parent.parent.name == 'JPEGImages' for path in view.frame_paths)
  # Every frame is stepped, frame 0 included (nothing is given to wait for), and no object is
  # ever added.
  assert segmenter.events == [('step',)] * NUM_FRAMES
  for index, frame in enumerate(segmenter.frames):
    np.testing.assert_array_equal(frame, video.frame(index))

  # With the annotations back, the masks score: the box against the dog, every frame
  # (unsupervised: first and last frames included).
  result = evaluation.evaluate(load_davis(small_davis, sequences=('dog',)), tmp_path / 'masks',
                               tmp_path / 'out', task='unsupervised', workers=1)
  box = np.zeros((SMALL[1], SMALL[0]), bool)
  box[30:90, 53:160] = True
  expected = np.mean([iou(box, video.annotation(name) > 0) for name in video.frame_names])
  assert 0.2 < expected < 0.6
  assert result['J_mean'] == pytest.approx(expected)


@pytest.mark.parametrize('config_module', [default, osvos_davis16], ids=['flow', 'osvos'])
def test_one_shot_system_refuses_the_zero_shot_task(config_module):
  config = config_module.get_config()
  config.task = 'unsupervised'
  with pytest.raises(InputError, match=r"segments only \('semi-supervised',\) but "
                                       r"task='unsupervised'"):
    systems.build_segmenter(config)


# Merging per-object scores ------------------------------------------------------------------


def test_merge_scores_overlaps_ties_and_threshold():
  # Pixels: both objects over the threshold; a tie; exactly the threshold; just above it;
  # only object 2.
  scores = np.array([[[0.9, 0.6, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.3]],
                     [[0.7, 0.6, 0.2, 0.0, 0.8]]], np.float32)
  # The most confident object wins an overlap; on a tie the first slot (the lower object id)
  # does; a score of exactly the threshold is background.
  np.testing.assert_array_equal(segment.merge_scores(scores), [[1, 1, 0, 1, 2]])
  np.testing.assert_array_equal(segment.merge_scores(scores, threshold=0.8), [[1, 0, 0, 0, 0]])
  assert segment.merge_scores(scores).dtype == np.uint8


# Working size -------------------------------------------------------------------------------


def test_segmenter_works_at_max_height_and_masks_come_back_at_frame_size(small_davis, tmp_path):
  video = load_davis(small_davis, sequences=('dog',)).videos[0]
  segmenter = RecordingSegmenter()
  segment.segment_video(segmenter, video, tmp_path / 'masks', 'semi-supervised', max_height=60)
  (view,) = segmenter.videos
  assert view.working_size == (60, 107)  # 214 * 60 / 120.
  assert [frame.shape for frame in segmenter.frames] == [(60, 107, 3)] * (NUM_FRAMES - 1)
  np.testing.assert_array_equal(segmenter.frames[0], cv2.resize(
      video.frame(1), (107, 60), interpolation=cv2.INTER_AREA))
  first = video.annotation(video.frame_names[0]) > 0
  _, added_masks = segmenter.events[0][1:]
  np.testing.assert_array_equal(added_masks[0], cv2.resize(
      first.astype(np.uint8), (107, 60), interpolation=cv2.INTER_NEAREST) > 0)
  for name in video.frame_names:
    written = read_label_map(tmp_path / 'masks' / f'{name}.png', binary=True)
    assert written.shape == (120, 214)
  # Frame 0 is the given mask itself; later frames are the working-size mask scaled back up.
  np.testing.assert_array_equal(
      read_label_map(tmp_path / 'masks' / '00000.png', binary=True) > 0, first)
  upscaled = read_label_map(tmp_path / 'masks' / f'{video.frame_names[1]}.png', binary=True) > 0
  assert 0.9 < iou(upscaled, first) < 1.0

"""The runner (jvos/segment.py): what a segmenter is handed, merging, late objects, working size.

Real DAVIS-2016 frames shrunk 4x (214x120) keep every run short: a zero-shot run on a DAVIS
copy whose annotations are moved away, a YouTube-VOS valid split made of the DAVIS dog with a
real goat pasted in from its 4th frame on, segmented end to end by flow and by OSVOS.
"""

import json
import pathlib
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from configs import default, osvos_davis16
from jvos import evaluation
from jvos import segment
from jvos import systems
from jvos.data import build_dataset
from jvos.data.davis import load_davis
from jvos.data.video import read_frame, read_label_map, write_label_map
from jvos.data.youtube_vos import load_youtube_vos
from jvos.errors import InputError

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = (214, 120)  # (width, height): DAVIS 854x480 shrunk 4x.
NUM_FRAMES = 8
LATE = 3  # The goat's first frame in the YouTube-VOS fixture.


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


def test_one_shot_labels_of_an_object_that_appears_on_frame_k():
  object_ids, k = (3, 7), 2
  box = np.zeros((6, 8), bool)
  box[1:4, 2:6] = True
  given = {0: (0, np.ones((6, 8), bool)), 1: (k, box)}
  # Object 7's method scores it 0.9 everywhere but where it really is; object 3 0.6 everywhere.
  scores = np.stack([np.full((6, 8), 0.6), np.where(box, 0.0, 0.9)]).astype(np.float32)
  for frame in range(k):
    # Nothing of object 7 before its frame, whatever it scores.
    labels = segment.one_shot_labels(scores, object_ids, frame, given)
    assert not (labels == 7).any() and (labels == 3).all(), frame
  on_k = segment.one_shot_labels(scores, object_ids, k, given)
  np.testing.assert_array_equal(on_k == 7, box)  # Exactly its given mask,
  assert (on_k[~box] == 3).all()  # and object 3 everywhere else.
  after = segment.one_shot_labels(scores, object_ids, k + 1, given)
  np.testing.assert_array_equal(after == 7, ~box)  # From then on, what the method says.


# Late objects, end to end: YouTube-VOS ------------------------------------------------------


@pytest.fixture(scope='module')
def late_goat(davis2016_root, tmp_path_factory):
  """A YouTube-VOS valid split of one video: DAVIS dog (object 1, from frame 0) with DAVIS goat
  (object 2) pasted at half size to its right from frame LATE on, frames named every 5th as in
  YouTube-VOS. As in the valid split, only the first frame of each object has a mask, showing
  only that object. Returns (root, frame names, true label maps of every frame)."""
  root = tmp_path_factory.mktemp('youtube_vos')
  split = root / 'valid'
  davis_frames = davis2016_root / 'JPEGImages' / '480p'
  davis_masks = davis2016_root / 'Annotations' / '480p'
  names = [f'{5 * t:05d}' for t in range(NUM_FRAMES)]
  truths = []
  for t, name in enumerate(names):
    frame = read_frame(davis_frames / 'dog' / f'{t:05d}.jpg').copy()
    labels = read_label_map(davis_masks / 'dog' / f'{t:05d}.png', binary=True)
    if t >= LATE:
      goat = cv2.resize(read_frame(davis_frames / 'goat' / f'{t - LATE:05d}.jpg'), (427, 240),
                        interpolation=cv2.INTER_AREA)
      goat_mask = cv2.resize(read_label_map(davis_masks / 'goat' / f'{t - LATE:05d}.png',
                                            binary=True), (427, 240),
                             interpolation=cv2.INTER_NEAREST) > 0
      window = np.s_[200:440, 420:847]
      frame[window][goat_mask] = goat[goat_mask]
      labels[window][goat_mask] = 2
    frame, labels = shrink_frame(frame), shrink_labels(labels)
    write_frame(split / 'JPEGImages' / 'dog_goat' / f'{name}.jpg', frame)
    truths.append(labels)
  write_label_map(split / 'Annotations' / 'dog_goat' / f'{names[0]}.png',
                  (truths[0] == 1).astype(np.uint8), binary=False)
  write_label_map(split / 'Annotations' / 'dog_goat' / f'{names[LATE]}.png',
                  np.where(truths[LATE] == 2, 2, 0).astype(np.uint8), binary=False)
  meta = {'videos': {'dog_goat': {'objects': {
      '1': {'category': 'dog', 'frames': names},
      '2': {'category': 'goat', 'frames': names[LATE:]}}}}}
  (split / 'meta.json').write_text(json.dumps(meta))
  assert truths[0].max() == 1 and (truths[LATE] == 2).sum() > 300
  return root, names, truths


def test_runner_adds_the_late_object_on_its_frame(late_goat, tmp_path):
  root, _, truths = late_goat
  video = load_youtube_vos(root, split='valid').videos[0]
  segmenter = RecordingSegmenter()
  segment.segment_video(segmenter, video, tmp_path, 'semi-supervised')
  events = [event[:2] for event in segmenter.events]
  # Frame 0 is not stepped (nothing to follow yet); on frame LATE the dog is stepped first,
  # then the goat added.
  assert events == ([('add', (0,))] + [('step',)] * LATE + [('add', (1,))]
                    + [('step',)] * (NUM_FRAMES - 1 - LATE))
  np.testing.assert_array_equal(segmenter.events[0][2][0], truths[0] == 1)
  np.testing.assert_array_equal(segmenter.events[LATE + 1][2][0], truths[LATE] == 2)


def launch(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(REPO / 'launch.py'), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def check_late_goat(workdir: pathlib.Path, names, truths, least_iou: float) -> list[float]:
  """The masks in workdir/masks and the submission: the goat is absent before its frame,
  exactly its given mask on it, found after it (IoU with the truth > least_iou); the dog is
  found on every frame. Returns the goat's IoU on the frames after its first."""
  written = [read_label_map(workdir / 'masks' / 'dog_goat' / f'{name}.png', binary=False)
             for name in names]
  goat_ious = []
  for t, (labels, truth) in enumerate(zip(written, truths)):
    assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1, 2}
    assert iou(labels == 1, truth == 1) > 0.5, (t, iou(labels == 1, truth == 1))
    if t < LATE:
      assert not (labels == 2).any(), t
    elif t == LATE:
      np.testing.assert_array_equal(labels == 2, truth == 2)
    else:
      goat_ious.append(iou(labels == 2, truth == 2))
  assert min(goat_ious) > least_iou, goat_ious
  # The valid split has no later masks to score: the run packs the submission for the server.
  assert not (workdir / 'metrics.json').exists()
  with zipfile.ZipFile(workdir / 'submission.zip') as archive:
    assert sorted(archive.namelist()) == [f'Annotations/dog_goat/{name}.png' for name in names]
    assert archive.read(f'Annotations/dog_goat/{names[LATE]}.png') == (
        workdir / 'masks' / 'dog_goat' / f'{names[LATE]}.png').read_bytes()
  return goat_ious


def test_late_object_end_to_end_by_flow(late_goat, tmp_path):
  root, names, truths = late_goat
  workdir = tmp_path / 'w'
  result = launch('--config', str(REPO / 'configs' / 'default.py'),
                  '--config.data.name=youtube_vos', f'--config.data.root={root}',
                  '--config.data.split=valid', f'--workdir={workdir}', cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-5000:]
  # Seen: goat IoU 0.77, 0.68, 0.60, 0.53 on the 4 frames after it appears (flow drifts).
  print(check_late_goat(workdir, names, truths, least_iou=0.45))


def test_late_object_end_to_end_by_osvos(late_goat, released_osvos_120, tmp_path):
  # What `launch.py --config configs/osvos_davis16.py --config.data.name=youtube_vos` runs, in
  # this process, to reuse the session's compiled fine-tuning loop (frames of 120 rows).
  root, names, truths = late_goat
  config, segmenter = released_osvos_120
  config = config.copy_and_resolve_references()
  config.data.update(name='youtube_vos', root=str(root), split='valid')
  workdir = tmp_path / 'w'
  dataset = build_dataset(config.data, workdir)
  segment.segment_dataset(segmenter, dataset, workdir / 'masks', task=config.task,
                          max_height=config.segment.max_height)
  assert evaluation.evaluate(dataset, workdir / 'masks', workdir) is None
  print(check_late_goat(workdir, names, truths, least_iou=0.3))


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


def test_a_rerun_with_the_same_config_keeps_finished_videos_and_another_config_fails(tmp_path):
  masks_dir = tmp_path / 'masks'
  record = {'segment': {'flip': True, 'scales': (1.0, 0.75)}, 'model': {'name': 'osvos'}}
  assert segment.completed_videos(masks_dir, record) == set()
  (tmp_path / 'masks_completed.txt').write_text('dog\ngoat\n')
  # The record is stored as JSON (tuples as lists) and still matches the config it came from.
  assert segment.completed_videos(masks_dir, record) == {'dog', 'goat'}
  other = {'segment': {'flip': True, 'scales': (1.0,)}, 'model': {'name': 'osvos'}}
  with pytest.raises(InputError, match=r'segment\.scales: \[1\.0, 0\.75\] -> \[1\.0\]'):
    segment.completed_videos(masks_dir, other)

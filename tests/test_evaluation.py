"""Tests of jvos.evaluation.

The J and F numbers are checked against an independent implementation (vos-benchmark) on real
DAVIS-2016 sequences; the edge cases, the unsupervised matching, YouTube-VOS and the input
checks on small generated datasets whose scores can be worked out by hand.
"""

import dataclasses
import json
import pathlib
import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import morphology
from vos_benchmark import benchmark as vos_benchmark
from vos_benchmark import utils as vos_utils

from jvos.data.davis import load_davis
from jvos.data.video import Video, VideoDataset, write_label_map
from jvos.errors import InputError
from jvos.evaluation import evaluate, metrics

# 240 frames of real DAVIS-2016 val: enough variety, a few seconds to score twice.
EQUALITY_SEQUENCES = ('dog', 'goat', 'horsejump-high', 'motocross-jump')


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """The mask moved by (dy, dx) pixels; what leaves the image is lost, what enters is 0."""
  moved = np.zeros_like(mask)
  height, width = mask.shape
  moved[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = (
      mask[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)])
  return moved


def _distort(mask: np.ndarray, t: int) -> np.ndarray:
  """Frame t's ground truth, changed in one of five ways by t (kind and amount vary)."""
  kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * (t % 7) + 3,) * 2)
  kind = t % 5
  if kind == 0:
    return mask
  if kind == 1:
    return _shift(mask, 3 + t % 11, -(5 + t % 13))
  if kind == 2:
    return cv2.erode(mask, kernel)
  if kind == 3:
    return cv2.dilate(mask, kernel)
  return np.zeros_like(mask)


def test_matches_vos_benchmark_on_real_davis2016(davis2016_root, tmp_path):
  dataset = load_davis(davis2016_root, sequences=EQUALITY_SEQUENCES)
  gt_root, masks_dir = tmp_path / 'gt', tmp_path / 'masks'
  gt_root.mkdir()
  for video in dataset:
    (gt_root / video.name).symlink_to(davis2016_root / 'Annotations' / '480p' / video.name)
    for t, name in enumerate(video.frame_names):
      write_label_map(masks_dir / video.name / f'{name}.png', _distort(video.annotation(name), t),
                      binary=True)

  ours = evaluate(dataset, masks_dir, tmp_path / 'out', workers=2)
  _, _, _, (theirs,) = vos_benchmark.benchmark(
      [str(gt_root)], [str(masks_dir)], strict=False, num_processes=2, verbose=False,
      skip_first_and_last=True)

  assert sorted(theirs) == sorted(EQUALITY_SEQUENCES)
  for name, (iou, boundary_f) in theirs.items():
    # vos-benchmark reports percentages and names the 0/255 object 255.
    assert list(iou) == [255]
    assert ours['sequences'][name]['J_mean'] == pytest.approx(iou[255] / 100, abs=1e-6)
    assert ours['sequences'][name]['F_mean'] == pytest.approx(boundary_f[255] / 100, abs=1e-6)
    assert ours['objects'][f'{name}_1']['J_mean'] == ours['sequences'][name]['J_mean']
  # The distortions make the scores far from trivial, F included.
  for name in EQUALITY_SEQUENCES:
    assert 0.4 < ours['sequences'][name]['J_mean'] < 0.9
    assert 0.3 < ours['sequences'][name]['F_mean'] < 0.9


# Edge cases and hand-computed values ------------------------------------------------------


def test_disk_is_skimage_disk():
  for radius in range(13):
    np.testing.assert_array_equal(metrics.disk(radius), morphology.disk(radius))


def test_boundary_radius_is_ceil_of_0008_diagonal():
  assert metrics.boundary_radius(480, 854) == 8  # 0.008 * 979.65 = 7.84
  assert metrics.boundary_radius(100, 100) == 2  # 0.008 * 141.42 = 1.13
  assert metrics.boundary_radius(1080, 1920) == 18  # 0.008 * 2202.91 = 17.62


def test_seg2bmap_of_a_square_is_the_outline_shifted_towards_the_origin():
  mask = np.zeros((100, 100), bool)
  mask[20:40, 20:40] = True
  expected = np.zeros_like(mask)
  expected[19:40, 19:40] = True
  expected[20:39, 20:39] = False  # A 21x21 outline: 80 pixels.
  np.testing.assert_array_equal(metrics.seg2bmap(mask), expected)
  assert metrics.seg2bmap(mask).sum() == 80


def test_seg2bmap_edge_rules():
  # The image border is no boundary: the last row/column only compare east/south.
  assert not metrics.seg2bmap(np.ones((5, 7), bool)).any()
  last_row = np.zeros((5, 7), bool)
  last_row[-1] = True
  expected = np.zeros_like(last_row)
  expected[-2] = True
  np.testing.assert_array_equal(metrics.seg2bmap(last_row), expected)


def test_seg2bmap_matches_the_official_one_on_blobs_touching_the_border():
  rng = np.random.default_rng(0)
  blobs = cv2.dilate((rng.random((3, 40, 50)) > 0.97).astype(np.uint8).transpose(1, 2, 0),
                     np.ones((5, 5), np.uint8)).transpose(2, 0, 1).astype(bool)
  for blob in blobs:
    np.testing.assert_array_equal(metrics.seg2bmap(blob), vos_utils._seg2bmap(blob))
  np.testing.assert_array_equal(metrics.seg2bmap(blobs),
                                [vos_utils._seg2bmap(blob) for blob in blobs])


def _stripes(start, stop, size=100):
  mask = np.zeros((size, size), bool)
  mask[:, start:stop] = True
  return mask


def test_region_similarity_edge_cases():
  empty, gt, pred = _stripes(0, 0), _stripes(20, 60), _stripes(20, 70)
  assert metrics.region_similarity(empty, empty) == 1.0  # Empty union: perfect.
  assert metrics.region_similarity(gt, empty) == 0.0
  assert metrics.region_similarity(empty, gt) == 0.0
  assert metrics.region_similarity(gt, pred) == pytest.approx(40 / 50)
  # Void pixels count in neither the intersection nor the union.
  assert metrics.region_similarity(gt, pred, void=_stripes(60, 70)) == 1.0


def test_boundary_f_edge_cases():
  empty, gt = _stripes(0, 0), _stripes(20, 60)
  assert metrics.boundary_f_measure(empty, empty) == 1.0  # P = R = 1.
  assert metrics.boundary_f_measure(gt, empty) == 0.0  # P = 1, R = 0.
  assert metrics.boundary_f_measure(empty, gt) == 0.0  # P = 0, R = 1.


def test_boundary_f_of_stripes_with_one_edge_out_of_reach():
  # Boundaries: columns 19 and 59 (ground truth), 19 and 69 (prediction), 100 pixels each.
  # Radius 2: column 19 matches, columns 59 and 69 are 10 apart. P = R = 0.5.
  gt, pred = _stripes(20, 60), _stripes(20, 70)
  assert metrics.boundary_f_measure(gt, pred) == pytest.approx(0.5)
  assert metrics.boundary_f_measure(gt, pred, void=_stripes(60, 70)) == 1.0


def test_one_pixel_shift_of_a_square():
  gt = np.zeros((100, 100), bool)
  gt[20:40, 20:40] = True
  pred = _shift(gt, 0, 1)
  assert metrics.region_similarity(gt, pred) == pytest.approx(380 / 420)
  assert metrics.boundary_f_measure(gt, pred) == 1.0  # Every boundary pixel is within 2.


def test_scoring_pairs_at_once_equals_scoring_them_one_by_one():
  rng = np.random.default_rng(1)
  gts = rng.random((3, 30, 40)) > 0.6
  preds = rng.random((4, 30, 40)) > 0.5
  void = rng.random((30, 40)) > 0.9
  j = metrics.region_similarity(gts[None], preds[:, None], void)
  f = metrics.boundary_f_measure(gts[None], preds[:, None], void)
  assert j.shape == f.shape == (4, 3)
  for p, pred in enumerate(preds):
    for g, gt in enumerate(gts):
      assert j[p, g] == metrics.region_similarity(gt, pred, void)
      assert f[p, g] == metrics.boundary_f_measure(gt, pred, void)


def test_db_statistics_on_a_known_sequence():
  # 10 frames: decay bins are frames 0-2, 2-5, 5-7, 7-9.
  mean, recall, decay = metrics.db_statistics(np.arange(10) / 10)
  assert mean == pytest.approx(0.45)
  assert recall == pytest.approx(0.4)  # 0.6, 0.7, 0.8, 0.9.
  assert decay == pytest.approx(0.1 - 0.8)


def test_decay_bins_do_not_wrap_past_255_frames():
  assert metrics.decay_bins(300) == [slice(0, 76), slice(75, 151), slice(150, 225),
                                     slice(224, 300)]
  _, _, decay = metrics.db_statistics(np.arange(300) < 76)
  assert decay == 1.0


# A generated DAVIS-2017 style dataset: 3 objects, void pixels -----------------------------

NUM_FRAMES, HEIGHT, WIDTH = 6, 60, 80


def _labels(t: int) -> np.ndarray:
  """Frame t: three moving rectangles; a void band around object 1."""
  labels = np.zeros((HEIGHT, WIDTH), np.uint8)
  labels[8:24, 4 + t:20 + t] = 255
  labels[10:22, 6 + t:18 + t] = 1
  labels[30:50, 30:44 - t] = 2
  labels[5:15, 50:70] = 3
  return labels


@pytest.fixture(name='davis17')
def fixture_davis17(tmp_path) -> VideoDataset:
  root = tmp_path / 'davis17'
  for t in range(NUM_FRAMES):
    frames = root / 'JPEGImages' / '480p' / 'boxes'
    frames.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * t, np.uint8)).save(frames / f'{t:05d}.jpg')
    write_label_map(root / 'Annotations' / '480p' / 'boxes' / f'{t:05d}.png', _labels(t),
                    binary=False)
  return load_davis(root, sequences=('boxes',))


def _write_results(masks_dir: pathlib.Path, labels_of_frame) -> pathlib.Path:
  for t in range(NUM_FRAMES):
    write_label_map(masks_dir / 'boxes' / f'{t:05d}.png', labels_of_frame(t), binary=False)
  return masks_dir


def _prediction(t: int) -> np.ndarray:
  """The ground truth without void, object 2 shifted by 3 pixels (J < 1)."""
  labels = np.where(_labels(t) == 255, 0, _labels(t))
  labels[labels == 2] = 0
  labels[_shift(_labels(t) == 2, 3, 0)] = 2
  return labels


def test_semisupervised_objects_and_tables(davis17, tmp_path):
  masks_dir = _write_results(tmp_path / 'masks', _prediction)
  result = evaluate(davis17, masks_dir, tmp_path / 'out', workers=1)
  assert davis17.videos[0].object_ids == (1, 2, 3)
  assert set(result['objects']) == {'boxes_1', 'boxes_2', 'boxes_3'}
  assert result['objects']['boxes_1']['J_mean'] == 1.0
  # Object 2 is 20 rows tall, moved down 3: J = 17 / 23 on every frame.
  assert result['objects']['boxes_2']['J_mean'] == pytest.approx(17 / 23)
  assert result['J_mean'] == pytest.approx((2 + 17 / 23) / 3)
  assert result['sequences']['boxes']['J_mean'] == result['J_mean']
  assert result['JF_mean'] == pytest.approx((result['J_mean'] + result['F_mean']) / 2)
  for key in ('J_mean', 'F_mean', 'JF_mean', 'J_recall', 'F_recall'):
    assert 0 <= result[key] <= 1
  on_disk = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
  assert on_disk['J_mean'] == result['J_mean'] and on_disk['task'] == 'semi-supervised'
  global_csv = (tmp_path / 'out' / 'global_results-semi-supervised.csv').read_text().splitlines()
  assert global_csv[0] == 'J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay'
  assert global_csv[1].split(',')[1] == f'{result["J_mean"]:.3f}'
  per_sequence = (tmp_path / 'out' / 'per-sequence_results-semi-supervised.csv').read_text()
  assert per_sequence.splitlines() == [
      'Sequence,J-Mean,F-Mean', 'boxes_1,1.000,1.000',
      f'boxes_2,{17 / 23:.3f},{result["objects"]["boxes_2"]["F_mean"]:.3f}',
      'boxes_3,1.000,1.000']


def test_object_never_predicted_is_scored_empty(davis17, tmp_path):
  masks_dir = _write_results(tmp_path / 'masks', lambda t: np.where(_prediction(t) == 3, 0,
                                                                      _prediction(t)))
  result = evaluate(davis17, masks_dir, tmp_path / 'out', workers=1)
  assert result['objects']['boxes_3']['J_mean'] == 0.0
  assert result['objects']['boxes_3']['F_mean'] == 0.0


def _permuted(t: int) -> np.ndarray:
  """_prediction with object 1 as id 3, 2 as 1, 3 as 2."""
  return np.array([0, 3, 1, 2], np.uint8)[_prediction(t)]


def _with_spurious_proposal(labels: np.ndarray) -> np.ndarray:
  labels = labels.copy()
  labels[54:58, 0:4] = 5  # Overlaps no object; id 4 stays an empty proposal.
  return labels


def test_unsupervised_matches_permuted_proposals(davis17, tmp_path):
  same = evaluate(davis17, _write_results(tmp_path / 'same', _prediction),
                  tmp_path / 'out_same', task='unsupervised', workers=1)
  permuted = evaluate(
      davis17, _write_results(tmp_path / 'permuted', lambda t: _with_spurious_proposal(
          _permuted(t))), tmp_path / 'out_permuted', task='unsupervised', workers=1)
  assert same['task'] == 'unsupervised'
  assert same['objects'] == permuted['objects']
  assert same['objects']['boxes_1']['J_mean'] == 1.0
  assert same['objects']['boxes_2']['J_mean'] == pytest.approx(17 / 23)
  # The semi-supervised protocol takes ids at face value: permuted ids score nothing.
  semi = evaluate(davis17, _write_results(tmp_path / 'semi', _permuted), tmp_path / 'out_semi',
                  workers=1)
  assert semi['J_mean'] == 0.0


def test_unsupervised_leaves_void_out(davis17, tmp_path):
  # Object 1 drawn over its void band: void is ignored unsupervised, not semi-supervised.
  masks_dir = _write_results(tmp_path / 'masks', lambda t: np.where(_labels(t) == 255, 1,
                                                                      _labels(t)))
  unsupervised = evaluate(davis17, masks_dir, tmp_path / 'u', task='unsupervised', workers=1)
  semi = evaluate(davis17, masks_dir, tmp_path / 's', workers=1)
  assert unsupervised['objects']['boxes_1']['J_mean'] == 1.0
  assert semi['objects']['boxes_1']['J_mean'] == pytest.approx(12 * 12 / (16 * 16))


def _columns(start: int, stop: int) -> np.ndarray:
  mask = np.zeros((40, 80), bool)
  mask[10:30, start:stop] = True
  return mask


def test_unsupervised_assignment_is_optimal_where_greedy_is_not(tmp_path):
  """Object 1 is columns 10-50, object 2 columns 50-70 (20 rows each). Proposal 1 covers
  columns 16-70, most of object 1 and all of object 2; proposal 2 the rest of object 1, 10-16.

  (J + F) / 2 of proposal p for object o, from the metrics proven against vos-benchmark:
  p1-o1 0.560, p1-o2 0.462, p2-o1 0.279, p2-o2 0. Greedy matching, by object (object 1 takes its
  best, proposal 1) or by the best pair first (the same pair), leaves object 2 proposal 2:
  total 0.560. The optimal assignment, o1-p2 and o2-p1, totals 0.740.
  """
  root = tmp_path / 'davis17'
  labels = np.zeros((40, 80), np.uint8)
  labels[_columns(10, 50)], labels[_columns(50, 70)] = 1, 2
  proposals = np.zeros_like(labels)
  proposals[_columns(16, 70)], proposals[_columns(10, 16)] = 1, 2
  for t in range(3):
    Image.fromarray(np.full((40, 80, 3), 90, np.uint8)).save(
        _mkdir(root / 'JPEGImages' / '480p' / 'pair') / f'{t:05d}.jpg')
    write_label_map(root / 'Annotations' / '480p' / 'pair' / f'{t:05d}.png', labels, binary=False)
    write_label_map(tmp_path / 'masks' / 'pair' / f'{t:05d}.png', proposals, binary=False)
  result = evaluate(load_davis(root, sequences=('pair',)), tmp_path / 'masks', tmp_path / 'out',
                    task='unsupervised', workers=1)

  def jf(proposal, obj):
    gt, pred = labels == obj, proposals == proposal
    return (metrics.region_similarity(gt, pred) + metrics.boundary_f_measure(gt, pred)) / 2
  optimal, greedy = jf(2, 1) + jf(1, 2), jf(1, 1) + jf(2, 2)
  assert jf(1, 1) == max(jf(1, 1), jf(2, 1), jf(1, 2))  # Greedy's first pick, either way.
  assert optimal == pytest.approx(0.740, abs=1e-3) and greedy == pytest.approx(0.560, abs=1e-3)
  # Object 1 got proposal 2 (6 of its 40 columns), object 2 proposal 1 (54 columns, 20 its own).
  assert result['objects']['pair_1']['J_mean'] == pytest.approx(6 / 40)
  assert result['objects']['pair_2']['J_mean'] == pytest.approx(20 / 54)
  assert sum(o['JF_mean'] for o in result['objects'].values()) == pytest.approx(optimal)


def test_unsupervised_with_fewer_proposals_than_objects(davis17, tmp_path):
  # One proposal, exactly object 2; objects 1 and 3 are matched to the empty padding proposals.
  masks_dir = _write_results(tmp_path / 'masks',
                             lambda t: (_labels(t) == 2).astype(np.uint8))
  result = evaluate(davis17, masks_dir, tmp_path / 'out', task='unsupervised', workers=1)
  assert {name: s['J_mean'] for name, s in result['objects'].items()} == {
      'boxes_1': 0.0, 'boxes_2': 1.0, 'boxes_3': 0.0}
  assert result['objects']['boxes_2']['F_mean'] == 1.0
  assert result['J_mean'] == pytest.approx(1 / 3)


def _mkdir(path: pathlib.Path) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  return path


# YouTube-VOS ------------------------------------------------------------------------------


def _rectangle(obj: int, top: int, left: int) -> np.ndarray:
  labels = np.zeros((32, 48), np.uint8)
  labels[top:top + 8, left:left + 10] = obj
  return labels


def _youtube_video(root: pathlib.Path, name: str, annotations: dict[str, np.ndarray],
                   frame_names, first_frames, categories) -> Video:
  frame_paths = []
  for frame in frame_names:
    path = root / 'JPEGImages' / name / f'{frame}.jpg'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(path)
    frame_paths.append(path)
  annotation_paths = {}
  for frame, labels in annotations.items():
    annotation_paths[frame] = root / 'Annotations' / name / f'{frame}.png'
    write_label_map(annotation_paths[frame], labels, binary=False)
  return Video(name=name, frame_paths=tuple(frame_paths), annotation_paths=annotation_paths,
               first_frames=first_frames, categories=categories)


@pytest.fixture(name='youtube')
def fixture_youtube(tmp_path) -> VideoDataset:
  """v1: a cat (seen) from 00000 and a zebra (unseen) from 00005; v2: a dog (seen)."""
  root = tmp_path / 'ytvos'
  both = _rectangle(1, 2, 2) + _rectangle(2, 20, 30)
  v1 = _youtube_video(root, 'v1', {'00000': _rectangle(1, 2, 2), '00005': both, '00010': both,
                                   '00015': both},
                      ('00000', '00003', '00005', '00010', '00015'),
                      {1: '00000', 2: '00005'}, {1: 'cat', 2: 'zebra'})
  dog = _rectangle(1, 10, 10)
  v2 = _youtube_video(root, 'v2', {'00000': dog, '00005': dog, '00010': dog},
                      ('00000', '00005', '00010'), {1: '00000'}, {1: 'dog'})
  return VideoDataset(name='youtube_vos', root=root, videos=(v1, v2), dense_annotations=False,
                      seen_categories=frozenset({'cat', 'dog'}))


def _youtube_results(masks_dir: pathlib.Path, dataset: VideoDataset) -> pathlib.Path:
  cat, zebra, dog = _rectangle(1, 2, 2), _rectangle(2, 20, 30), _rectangle(1, 10, 10)
  v1 = {'00000': cat, '00003': cat, '00005': cat, '00010': cat + zebra, '00015': cat}
  v2 = {'00000': dog, '00005': dog, '00010': np.zeros_like(dog)}
  for video, frames in zip(dataset, (v1, v2)):
    for name, labels in frames.items():
      write_label_map(masks_dir / video.name / f'{name}.png', labels, binary=False)
  return masks_dir


def test_youtube_vos_seen_unseen_scores(youtube, tmp_path):
  result = evaluate(youtube, _youtube_results(tmp_path / 'masks', youtube), tmp_path / 'out',
                    workers=1)
  # Cat: perfect on 00005-00015. Zebra: missed on its first frame 00005 (not scored), found on
  # 00010, missed on 00015: 0.5. Dog: found on 00005, missed on 00010: 0.5.
  assert {k: v['J_mean'] for k, v in result['objects'].items()} == {
      'v1_1': 1.0, 'v1_2': 0.5, 'v2_1': 0.5}
  assert result['J_seen'] == result['F_seen'] == 0.75
  assert result['J_unseen'] == result['F_unseen'] == 0.5
  assert result['overall'] == 0.625
  assert result['J_mean'] == pytest.approx(2 / 3)
  assert result['JF_mean'] == pytest.approx(2 / 3)
  assert json.loads((tmp_path / 'out' / 'metrics.json').read_text())['overall'] == 0.625


def test_youtube_vos_submission_zip(youtube, tmp_path):
  masks_dir = _youtube_results(tmp_path / 'masks', youtube)
  evaluate(youtube, masks_dir, tmp_path / 'out', workers=1)
  with zipfile.ZipFile(tmp_path / 'out' / 'submission.zip') as archive:
    names = sorted(archive.namelist())
    assert names == sorted(f'Annotations/{video.name}/{frame}.png' for video in youtube
                           for frame in video.frame_names)
    assert archive.read('Annotations/v1/00003.png') == (masks_dir / 'v1' / '00003.png').read_bytes()


def test_youtube_vos_valid_split_is_packed_not_scored(youtube, tmp_path):
  # As in the valid split: only first masks, the later one showing only the new object.
  v1 = _youtube_video(tmp_path / 'valid', 'v1', {'00000': _rectangle(1, 2, 2),
                                                 '00005': _rectangle(2, 20, 30)},
                      ('00000', '00003', '00005', '00010', '00015'),
                      {1: '00000', 2: '00005'}, {})
  dataset = VideoDataset(name='youtube_vos', root=tmp_path / 'valid', videos=(v1,),
                         dense_annotations=False)
  masks_dir = _youtube_results(tmp_path / 'masks', youtube)
  assert evaluate(dataset, masks_dir, tmp_path / 'out') is None
  assert (tmp_path / 'out' / 'submission.zip').is_file()
  assert not (tmp_path / 'out' / 'metrics.json').exists()


def test_youtube_vos_rejects_non_palette_results(youtube, tmp_path):
  masks_dir = _youtube_results(tmp_path / 'masks', youtube)
  bad = masks_dir / 'v2' / '00005.png'
  Image.new('RGB', (48, 32)).save(bad)
  with pytest.raises(InputError, match=re.escape(str(bad))):
    evaluate(youtube, masks_dir, tmp_path / 'out')
  assert not (tmp_path / 'out' / 'submission.zip').exists()


def test_user_video_has_nothing_to_score(tmp_path):
  dataset = VideoDataset(name='video', root=tmp_path, videos=(), dense_annotations=False)
  assert evaluate(dataset, tmp_path / 'no_masks', tmp_path) is None


# Bad input --------------------------------------------------------------------------------


@pytest.fixture(name='good_results')
def fixture_good_results(tmp_path) -> pathlib.Path:
  return _write_results(tmp_path / 'masks', _prediction)


def test_missing_results_folder_says_to_segment_first(davis17, tmp_path):
  with pytest.raises(InputError, match='--mode segment'):
    evaluate(davis17, tmp_path / 'nowhere', tmp_path / 'out')


def test_missing_frames_are_listed(davis17, good_results, tmp_path):
  (good_results / 'boxes' / '00002.png').unlink()
  (good_results / 'boxes' / '00004.png').unlink()
  with pytest.raises(InputError, match=r'boxes.*2 of 6.*00002\.png, 00004\.png'):
    evaluate(davis17, good_results, tmp_path / 'out')


def test_wrong_size_names_both_files(davis17, good_results, tmp_path):
  bad = good_results / 'boxes' / '00003.png'
  write_label_map(bad, np.zeros((HEIGHT, WIDTH + 1), np.uint8), binary=False)
  gt = davis17.videos[0].annotation_paths['00003']
  with pytest.raises(InputError) as error:
    evaluate(davis17, good_results, tmp_path / 'out')
  assert str(bad) in str(error.value) and str(gt) in str(error.value)


def test_extra_object_id_names_the_file(davis17, good_results, tmp_path):
  bad = good_results / 'boxes' / '00002.png'
  write_label_map(bad, np.where(_prediction(2) == 3, 4, _prediction(2)), binary=False)
  with pytest.raises(InputError, match=rf'{re.escape(str(bad))}.*object id 4'):
    evaluate(davis17, good_results, tmp_path / 'out', workers=1)


def test_too_many_proposals_names_the_file(davis17, good_results, tmp_path):
  bad = good_results / 'boxes' / '00000.png'
  write_label_map(bad, np.where(_prediction(0) == 3, 21, _prediction(0)), binary=False)
  with pytest.raises(InputError, match=rf'{re.escape(str(bad))}.*object id 21'):
    evaluate(davis17, good_results, tmp_path / 'out', task='unsupervised')


def test_corrupt_result_names_the_file(davis17, good_results, tmp_path):
  bad = good_results / 'boxes' / '00001.png'
  bad.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  with pytest.raises(InputError, match=re.escape(str(bad))):
    evaluate(davis17, good_results, tmp_path / 'out')
  assert not (tmp_path / 'out' / 'metrics.json').exists()


def test_errors_in_worker_processes_reach_the_caller(davis17, good_results, tmp_path):
  second = shutil.copytree(good_results / 'boxes', good_results / 'boxes2')
  (second / '00001.png').write_bytes(b'not a png')
  videos = (davis17.videos[0], dataclasses.replace(davis17.videos[0], name='boxes2'))
  two_videos = dataclasses.replace(davis17, videos=videos)
  with pytest.raises(InputError, match=re.escape(str(second / '00001.png'))):
    evaluate(two_videos, good_results, tmp_path / 'out', workers=2)


def test_unknown_task(davis17, good_results, tmp_path):
  with pytest.raises(InputError, match='semi-supervised'):
    evaluate(davis17, good_results, tmp_path / 'out', task='interactive')

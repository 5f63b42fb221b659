"""report.html and the overlay video, on a small real DAVIS-2016 case.

Two sequences of 6 frames, with results made from their ground truth shifted sideways by a
different amount on each frame, so the order of frames and sequences by J is known in advance.
"""

import base64
import html.parser
import io
import json
import pathlib
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import pytest
from PIL import Image

from jvos import report
from jvos.data.davis import load_davis
from jvos.data.video import VOID, VideoDataset, read_frame, write_label_map
from jvos.errors import InputError
from jvos.evaluation import evaluate
from jvos.segment import overlay
from jvos.video_writer import H264Writer

NUM_FRAMES = 6
# Columns each frame's mask is shifted by. Frame 0 is given and the last is not scored (the
# semi-supervised protocol), so the last one's mask is left empty to show it is never scored.
SHIFTS = {'dog': (0, 0, 40, 10, 80, None), 'goat': (0, 3, 0, 1, 2, None)}
# The 3 frames of lowest J each, lowest first; dog scores worse than goat.
WORST = {'dog': ['00004', '00002', '00003'], 'goat': ['00001', '00004', '00003']}
SCORED = ['00001', '00002', '00003', '00004']
METRICS_KEYS = {'task', 'JF_mean', 'J_mean', 'J_recall', 'J_decay', 'F_mean', 'F_recall',
                'F_decay', 'sequences', 'objects'}
CHROMIUM = shutil.which('chromium')
# As the machine's notes start it: headless, as root, no network chatter.
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync',
                  '--allow-file-access-from-files', '--hide-scrollbars')


def _shift(mask: np.ndarray, columns: int) -> np.ndarray:
  shifted = np.zeros_like(mask)
  shifted[:, columns:] = mask[:, :mask.shape[1] - columns]
  return shifted


@pytest.fixture(name='davis', scope='module')
def fixture_davis(davis2016_root, tmp_path_factory) -> VideoDataset:
  """The first 6 frames of dog and goat, in a DAVIS layout."""
  root = tmp_path_factory.mktemp('davis')
  for name in SHIFTS:
    for kind, suffix in (('JPEGImages', 'jpg'), ('Annotations', 'png')):
      source = davis2016_root / kind / '480p' / name
      target = root / kind / '480p' / name
      target.mkdir(parents=True)
      for path in sorted(source.glob(f'*.{suffix}'))[:NUM_FRAMES]:
        shutil.copy(path, target / path.name)
  return load_davis(root, sequences=tuple(SHIFTS))


def _write_results(dataset: VideoDataset, masks_dir: pathlib.Path) -> pathlib.Path:
  for video in dataset:
    for name, columns in zip(video.frame_names, SHIFTS[video.name]):
      truth = video.annotation(name)
      labels = np.zeros_like(truth) if columns is None else _shift(truth, columns)
      write_label_map(masks_dir / video.name / f'{name}.png', labels, binary=True)
  return masks_dir


@pytest.fixture(name='run', scope='module')
def fixture_run(davis, tmp_path_factory):
  """A scored run's workdir with its report: (workdir, metrics, report path)."""
  workdir = tmp_path_factory.mktemp('run')
  masks_dir = _write_results(davis, workdir / 'masks')
  metrics = evaluate(davis, masks_dir, workdir, workers=1)
  return workdir, metrics, report.write_report(workdir, davis, metrics, masks_dir)


class _Page(html.parser.HTMLParser):
  """What the tests read off the page: sections in order, their plot points and previews."""

  def __init__(self):
    super().__init__()
    self.sequences: list[str] = []
    self.points: dict[str, list[str]] = {}
    self.previews: dict[str, list[str]] = {}
    self.images: list[str] = []
    self.links: list[str] = []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'section' and 'data-sequence' in attrs:
      self.sequences.append(attrs['data-sequence'])
      self.points[self.sequences[-1]], self.previews[self.sequences[-1]] = [], []
    elif tag == 'circle' and 'j' in attrs.get('class', '').split():
      self.points[self.sequences[-1]].append(attrs['data-frame'])
    elif tag == 'figure' and 'preview' in attrs.get('class', '').split():
      self.previews[self.sequences[-1]].append(attrs['data-frame'])
    for key in ('src', 'href'):
      if key in attrs:
        (self.images if key == 'src' else self.links).append(attrs[key])


def _parse(path: pathlib.Path) -> _Page:
  parser = _Page()
  parser.feed(path.read_text(encoding='utf-8'))
  parser.close()
  return parser


def _chromium(*args: str) -> subprocess.CompletedProcess:
  with tempfile.TemporaryDirectory() as profile:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={profile}', *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_evaluator_writes_per_frame_scores_beside_unchanged_metrics(run):
  workdir, metrics, _ = run
  assert set(metrics) == METRICS_KEYS
  assert json.loads((workdir / 'metrics.json').read_text()) == metrics
  per_frame = json.loads((workdir / 'per_frame.json').read_text())
  assert per_frame['task'] == 'semi-supervised'
  assert set(per_frame['objects']) == set(metrics['objects']) == {'dog_1', 'goat_1'}
  for key, obj in per_frame['objects'].items():
    assert obj['sequence'] == key[:-2] and obj['object'] == obj['predicted_id'] == 1
    assert obj['frames'] == SCORED
    assert np.mean(obj['J']) == pytest.approx(metrics['objects'][key]['J_mean'])
    assert np.mean(obj['F']) == pytest.approx(metrics['objects'][key]['F_mean'])
  dog_j = dict(zip(SCORED, per_frame['objects']['dog_1']['J']))
  assert dog_j['00001'] == 1.0  # Unshifted.
  assert dog_j['00004'] < dog_j['00002'] < dog_j['00003'] < 1.0


def test_report_lists_sequences_worst_first_with_plots_and_lowest_j_previews(run):
  workdir, metrics, path = run
  assert path == workdir / 'report.html'
  page = _parse(path)
  assert metrics['sequences']['dog']['JF_mean'] < metrics['sequences']['goat']['JF_mean']
  assert page.sequences == ['dog', 'goat']
  for name in SHIFTS:
    assert page.points[name] == SCORED  # One point per scored frame, in order.
    assert page.previews[name] == WORST[name]
  text = path.read_text(encoding='utf-8')
  assert f'{metrics["JF_mean"]:.3f}' in text and 'semi-supervised' in text


def test_report_references_only_embedded_images_and_files_that_exist(run):
  workdir, _, path = run
  page = _parse(path)
  assert len(page.images) == report.NUM_PREVIEWS * len(SHIFTS)
  for src in page.images:
    prefix = 'data:image/jpeg;base64,'
    assert src.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))) as image:
      assert image.format == 'JPEG'
      # Prediction | 4-pixel gap | ground truth, each 854x480 at 135 rows.
      assert image.size == (2 * 240 + 4, report.PREVIEW_HEIGHT)
  files = [link for link in page.links if not link.startswith('#')]
  assert {'metrics.json', 'per_frame.json'} <= set(files)
  for link in files:
    assert (workdir / link).is_file(), link
  anchors = {link[len('#seq-'):] for link in page.links if link.startswith('#')}
  assert anchors == set(page.sequences)


def test_previews_show_prediction_beside_ground_truth(davis, run):
  workdir, _, _ = run
  video = davis.videos[0]
  name = '00004'
  frame = read_frame(video.frame_paths[4])
  truth = video.annotation(name)
  predicted = _shift(truth, 80)
  image = report.preview(frame, predicted, truth, height=480)
  assert image.shape == (480, 2 * 854 + 4, 3)
  np.testing.assert_array_equal(image[:, :854], overlay(frame, predicted))
  np.testing.assert_array_equal(image[:, -854:], overlay(frame, truth))


def test_unsupervised_report_scores_every_frame_as_matched_proposals(davis, tmp_path):
  masks_dir = _write_results(davis, tmp_path / 'masks')
  metrics = evaluate(davis, masks_dir, tmp_path, task='unsupervised', workers=1)
  assert set(metrics) == METRICS_KEYS
  per_frame = json.loads((tmp_path / 'per_frame.json').read_text())
  assert per_frame['task'] == 'unsupervised'
  assert per_frame['objects']['dog_1']['predicted_id'] == 1
  page = _parse(report.write_report(tmp_path, davis, metrics, masks_dir))
  every_frame = [f'{t:05d}' for t in range(NUM_FRAMES)]
  for name in SHIFTS:
    assert page.points[name] == every_frame
  # The empty last frame is now scored, and worst.
  assert page.previews['dog'] == ['00005', '00004', '00002']


def test_as_objects_recolours_matched_proposals_and_voids_the_rest():
  labels = np.array([[0, 1, 2, 3]], np.uint8)
  objects = [{'object': 1, 'predicted_id': 3}, {'object': 2, 'predicted_id': 1}]
  np.testing.assert_array_equal(report.as_objects(labels, objects), [[0, 2, VOID, 1]])


def test_worst_frames_averages_objects_and_breaks_ties_by_frame():
  objects = [{'frames': ['a', 'b', 'c', 'd'], 'J': [1.0, 0.2, 0.5, 0.5]},
             {'frames': ['a', 'b', 'c', 'd'], 'J': [0.0, 0.2, 0.5, 0.5]}]
  assert report.worst_frames(objects) == ['b', 'a', 'c']


def test_worst_frames_come_from_different_lows():
  # Two dips, at frames 10-12 and 40: not 3 views of the first one.
  j = np.ones(60)
  j[10:13], j[40] = (0.1, 0.05, 0.12), 0.3
  objects = [{'frames': [f'{t:05d}' for t in range(60)], 'J': j.tolist()}]
  assert report.worst_frames(objects) == ['00011', '00040', '00000']


def test_no_report_without_scores_and_a_clear_error_without_per_frame(davis, run, tmp_path):
  assert report.write_report(tmp_path, davis, None, tmp_path / 'masks') is None
  assert not (tmp_path / 'report.html').exists()
  workdir, metrics, _ = run
  with pytest.raises(InputError, match='per_frame.json.*--mode evaluate'):
    report.write_report(tmp_path, davis, metrics, workdir / 'masks')


def _overlay_frames(video):
  for path in video.frame_paths:
    yield overlay(read_frame(path), video.annotation(path.stem))


def test_overlay_video_decodes_to_every_frame_at_the_frame_size(davis, tmp_path):
  video = davis.videos[0]
  path = tmp_path / 'overlay.mp4'
  with H264Writer(path, fps=24) as writer:
    for frame in _overlay_frames(video):
      writer.add(frame)
  assert writer.frames == NUM_FRAMES and not list(tmp_path.glob('*.tmp*'))
  capture = cv2.VideoCapture(str(path))
  decoded = []
  while True:
    ok, bgr = capture.read()
    if not ok:
      break
    decoded.append(bgr[..., ::-1])
  capture.release()
  assert len(decoded) == NUM_FRAMES
  assert decoded[0].shape == (480, 854, 3)
  first = next(_overlay_frames(video))
  assert np.abs(decoded[0].astype(int) - first).mean() < 6  # Lossy, but the same picture.


def test_overlay_video_pads_odd_sizes_and_rejects_mixed_ones(tmp_path):
  path = tmp_path / 'odd.mp4'
  with H264Writer(path, fps=10) as writer:
    for t in range(3):
      writer.add(np.full((33, 47, 3), 60 * t, np.uint8))
  capture = cv2.VideoCapture(str(path))
  assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (48, 34)
  capture.release()
  broken = tmp_path / 'mixed.mp4'
  with pytest.raises(ValueError, match='one size'):
    with H264Writer(broken) as writer:
      writer.add(np.zeros((32, 32, 3), np.uint8))
      writer.add(np.zeros((32, 48, 3), np.uint8))
  assert not broken.exists() and not list(tmp_path.glob('*.tmp*'))
  with pytest.raises(InputError, match='fps'):
    H264Writer(tmp_path / 'x.mp4', fps=0)


@pytest.mark.skipif(CHROMIUM is None, reason='headless Chromium not installed '
                    '(apt-get install chromium)')
def test_chromium_renders_the_report_and_plays_the_overlay_video(run, davis, tmp_path):
  workdir, _, path = run
  screenshot = workdir / 'report.png'
  result = _chromium(f'--screenshot={screenshot}', '--window-size=1280,1400',
                     path.resolve().as_uri())
  assert screenshot.is_file(), result.stderr
  with Image.open(screenshot) as image:
    pixels = np.asarray(image.convert('RGB'))
  assert pixels.shape[:2] == (1400, 1280)
  # The previews are drawn: far more than a blank page's colours.
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
  with H264Writer(tmp_path / 'overlay.mp4') as writer:
    for frame in _overlay_frames(davis.videos[0]):
      writer.add(frame)
  (tmp_path / 'play.html').write_text(
      '<!DOCTYPE html><video id="v" src="overlay.mp4" muted></video><p id="out">pending</p>'
      '<script>const v = document.getElementById("v"), out = document.getElementById("out");'
      'v.onloadeddata = () => { out.textContent = `played ${v.videoWidth}x${v.videoHeight}`; };'
      'v.onerror = () => { out.textContent = `error ${v.error.code}`; };</script>')
  result = _chromium('--virtual-time-budget=5000', '--dump-dom',
                     (tmp_path / 'play.html').as_uri())
  assert '<p id="out">played 854x480</p>' in result.stdout, result.stdout[-500:]

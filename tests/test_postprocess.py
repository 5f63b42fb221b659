"""The dense CRF post-processing: it must fix boundaries, on a drawn frame and a real DAVIS one.

Each test asserts a number that a CRF ignoring the image could not reach: masks that are off
by several pixels come back to the colour edge. Runs in a few seconds on one CPU core.
"""

import cv2
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jvos import postprocess
from jvos.errors import InputError
from jvos.evaluation.metrics import boundary_f_measure, region_similarity
from jvos.segment import merge_scores

HEIGHT, WIDTH = 120, 160
BACKGROUND, RED, GREEN = (50, 100, 190), (200, 70, 60), (90, 200, 80)


def _disc(cy: float, cx: float, radius: float) -> np.ndarray:
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
  return (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2


def _frame(*objects: tuple[np.ndarray, tuple[int, int, int]], seed: int = 0) -> np.ndarray:
  """Flat-coloured objects on a flat background, with sensor-like noise (sigma 6 levels)."""
  frame = np.empty((HEIGHT, WIDTH, 3), np.float32)
  frame[:] = BACKGROUND
  for mask, colour in objects:
    frame[mask] = colour
  frame += np.random.default_rng(seed).normal(0, 6, frame.shape)
  return np.clip(frame, 0, 255).astype(np.uint8)


def _soft(mask: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
  """A mask as a method's unsure probability map: blurred, between low and high."""
  return low + (high - low) * cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


def _crf_on() -> postprocess.PostProcess:
  section = postprocess.default_config()
  section.crf = True
  return postprocess.postprocess(section)


def test_crf_moves_a_shifted_disc_back_to_its_colour_edge():
  disc = _disc(60, 80, 35)
  frame = _frame((disc, RED))
  # The method saw the disc 9 pixels to the right, and is unsure near its edge.
  scores = _soft(_disc(60, 89, 35), 4, 0.15, 0.85)[None]
  before = region_similarity(disc, scores[0] > 0.5)
  refined = _crf_on()(frame, scores)
  after = region_similarity(disc, refined[0] > 0.5)
  assert refined.shape == scores.shape and refined.dtype == np.float32
  assert 0 <= refined.min() and refined.max() <= 1
  assert before < 0.75, before  # 0.720
  assert after > 0.99, after  # 0.9997


def test_both_resolutions_of_the_appearance_kernel_fix_the_disc():
  disc = _disc(60, 80, 35)
  frame = _frame((disc, RED))
  scores = _soft(_disc(60, 89, 35), 4, 0.25, 0.75)[None]
  for stride in (1, 2):
    refined = postprocess.dense_crf(frame, scores, postprocess.CRFParams(bilateral_stride=stride))
    assert region_similarity(disc, refined[0] > 0.5) > 0.99  # 0.9997 at both


@pytest.mark.parametrize('degrade, j_gain, f_gain', [
    (cv2.dilate, 0.07, 0.15),  # J 0.805 -> 0.895, F 0.739 -> 0.923.
    (cv2.erode, 0.04, 0.06),  # J 0.765 -> 0.820, F 0.619 -> 0.698.
])
def test_crf_sharpens_a_degraded_mask_on_a_real_davis_frame(davis2016_root, degrade, j_gain,
                                                             f_gain):
  frame = np.asarray(Image.open(davis2016_root / 'JPEGImages/480p/dog/00010.jpg').convert('RGB'))
  truth = np.asarray(Image.open(davis2016_root / 'Annotations/480p/dog/00010.png')) > 0
  # A mask 6 pixels too fat (or thin) all round, blurred: a typical low-resolution output.
  grown = degrade(truth.astype(np.float32), np.ones((13, 13), np.uint8))
  scores = cv2.GaussianBlur(grown, (0, 0), 4)[None]
  refined = _crf_on()(frame, scores)
  j = [region_similarity(truth, s[0] > 0.5) for s in (scores, refined)]
  f = [boundary_f_measure(truth, s[0] > 0.5) for s in (scores, refined)]
  assert j[1] > j[0] + j_gain, j
  assert f[1] > f[0] + f_gain, f


def test_two_objects_keep_their_own_labels():
  left, right = _disc(60, 45, 28), _disc(60, 125, 22)
  frame = _frame((left, RED), (right, GREEN))
  # Each object seen 6 pixels off, in a different direction.
  scores = np.stack([_soft(_disc(66, 39, 28), 3, 0.1, 0.9), _soft(_disc(54, 130, 22), 3, 0.1, 0.9)])
  before, after = merge_scores(scores), merge_scores(_crf_on()(frame, scores))
  for label, truth in ((1, left), (2, right)):
    assert region_similarity(truth, before == label) < 0.7  # 0.675 and 0.630
    assert region_similarity(truth, after == label) > 0.98  # 1.000 and 1.000


def test_without_pairwise_terms_the_runner_decides_as_before():
  """The unary term is the runner's merge: background 1 - max_k p_k against the objects."""
  rng = np.random.default_rng(1)
  scores = rng.random((3, 40, 50)).astype(np.float32)
  frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
  params = postprocess.CRFParams(gaussian_compat=0, bilateral_compat=0)
  refined = postprocess.dense_crf(frame, scores, params)
  np.testing.assert_array_equal(merge_scores(refined), merge_scores(scores))
  # One object: the refined score is the score itself (up to the 1e-5 clip of the unary).
  np.testing.assert_allclose(postprocess.dense_crf(frame, scores[:1], params), scores[:1],
                             atol=2e-5)


def test_lattice_filter_approximates_the_exact_gaussian(davis2016_root):
  """The permutohedral lattice against the exact O(P^2) sum, on a 40x60 patch of a real frame."""
  frame = np.asarray(Image.open(davis2016_root / 'JPEGImages/480p/dog/00010.jpg').convert('RGB'))
  patch = frame[160:200, 360:420]  # Half dog, half ground: the edge a CRF works on.
  ys, xs = np.mgrid[0:40, 0:60].astype(np.float32)
  features = np.concatenate([np.stack([xs.ravel(), ys.ravel()]) / 15,
                             patch.reshape(-1, 3).T.astype(np.float32) / 7])
  values = (patch.reshape(-1, 3).sum(axis=1) > np.median(patch.sum(axis=2)))[None]
  values = values.astype(np.float32)
  lattice = postprocess.Lattice(features)
  approximate = lattice.filter(values)[0] / lattice.filter(np.ones_like(values))[0]
  squared = (features ** 2).sum(axis=0)
  kernel = np.exp(-0.5 * (squared[:, None] + squared[None] - 2 * features.T @ features))
  exact = kernel @ values[0] / kernel.sum(axis=1)
  assert np.corrcoef(approximate, exact)[0, 1] > 0.995  # 0.9997
  assert np.abs(approximate - exact).mean() < 0.01  # 0.0026 (the values spread 0.49)


@pytest.mark.parametrize('section', [
    None,
    ml_collections.ConfigDict(),
    postprocess.default_config(),
    ml_collections.ConfigDict(dict(crf=False, crf_iterations=10, crf_bilateral_sxy=20.0)),
])
def test_off_is_the_identity(section):
  scores = np.random.default_rng(0).random((2, 8, 9)).astype(np.float32)
  assert postprocess.postprocess(section)(np.zeros((8, 9, 3), np.uint8), scores) is scores


def test_default_config_matches_the_parameters():
  section = postprocess.default_config()
  assert section.crf is False
  assert postprocess.crf_params(section) == postprocess.CRFParams()
  assert set(section.keys()) == {
      'crf', 'crf_iterations', 'crf_gaussian_sxy', 'crf_gaussian_compat', 'crf_bilateral_sxy',
      'crf_bilateral_srgb', 'crf_bilateral_compat', 'crf_bilateral_stride'}


@pytest.mark.parametrize('field, value', [
    ('crf_iterations', -1),
    ('crf_iterations', 0),
    ('crf_iterations', 2.5),
    ('crf_iterations', True),
    ('crf_gaussian_sxy', 0.0),
    ('crf_gaussian_compat', -5.0),
    ('crf_bilateral_sxy', -15.0),
    ('crf_bilateral_srgb', 0),
    ('crf_bilateral_srgb', float('nan')),
    ('crf_bilateral_compat', -1),
    ('crf_bilateral_compat', '9'),
    ('crf_bilateral_stride', 0),
    ('crf', 'yes'),
    ('crf_iteration', 5),  # A typo: not a field.
])
def test_bad_config_values_raise_input_error_naming_the_field(field, value):
  section = postprocess.default_config().to_dict()
  section.update(crf=True)
  section[field] = value
  with pytest.raises(InputError, match=f'postprocess.{field}'):
    postprocess.postprocess(ml_collections.ConfigDict(section))
  if field != 'crf':  # Checked even when the CRF is off, so a typo never waits for a rerun.
    section['crf'] = False
    with pytest.raises(InputError, match=f'postprocess.{field}'):
      postprocess.postprocess(ml_collections.ConfigDict(section))


def test_scores_that_do_not_fit_the_frame_are_a_bug():
  with pytest.raises(ValueError, match='image must be'):
    postprocess.dense_crf(np.zeros((10, 12, 3), np.uint8), np.zeros((1, 10, 11), np.float32))
  with pytest.raises(ValueError, match='probabilities must be'):
    postprocess.dense_crf(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12), np.float32))

"""Post-processing of per-object probability maps that any method can switch on from its config.

For now one step: the fully connected (dense) CRF of Krähenbühl & Koltun, "Efficient Inference
in Fully Connected CRFs with Gaussian Edge Potentials" (NeurIPS 2011), as COSNet (and OSMN)
apply it to their output to snap mask boundaries to image colour edges. It lives here, outside
every model, because it needs nothing from the network: only the frame and the scores.

How a runner uses it (`config.postprocess` is the section documented in `default_config`):

    refine = postprocess.postprocess(config.postprocess)   # validates; identity when crf=False
    for index, scores in enumerate(segmenter(video)):       # scores: (N, H, W) in [0, 1]
      scores = refine(video.frame(index), scores)           # same shape, same meaning
      labels = merge_scores(scores)                         # argmax against 0.5, as before

Build it once per run, before segmenting, so a bad value stops the run before any work. In the
one-shot task, zero the objects that have not appeared yet before refining (as one_shot_labels
does before merging): a score of 0 stays near 0 through the CRF, so they take no pixels.

The model. Labels are background (0) and the N objects. The unary term is -log of the method's
probabilities, with background scored 1 - max_k p_k: the runner's merge (an object wins where
its score beats 0.5 and every other object's) is exactly the argmax over [1 - max_k p_k, p_1,
..., p_N], and for one object these are COSNet's [1 - p, p]. Pairwise terms are Potts (a price
for neighbours that disagree), weighted by two kernels over every pair of pixels:
  * smoothness: w_g exp(-|x_i - x_j|^2 / 2 sxy_g^2), which removes isolated pixels;
  * appearance: w_b exp(-|x_i - x_j|^2 / 2 sxy_b^2 - |I_i - I_j|^2 / 2 srgb^2), which pulls
    pixels of similar colour, up to a few sxy_b away, to the same label
(x: pixel position, I: RGB colour, w: the `compat` weights).
Mean-field inference updates Q_i(l) ~ exp(log P_i(l) + sum_m w_m [K~_m Q(l)]_i) for a fixed
number of iterations, with each kernel symmetrically normalised, K~ = D^-1/2 K D^-1/2 with
D = diag(K 1): what pydensecrf's addPairwiseEnergy(..., NORMALIZE_SYMMETRIC) and its
PottsCompatibility compute, so COSNet's parameters mean the same here.

Why not a package: no dense-CRF package installs on Python 3.11 x86-64 Linux from a binary
wheel (pydensecrf and SimpleCRF ship only sources, pydensecrf2 1.1 only macOS cp39 wheels,
SimpleCRF-binaries only cp36-cp39), so this is numpy + scipy.sparse + OpenCV. Not JAX: the
lattice below has a size that depends on the image, which XLA would recompile for every frame.

Why it is fast enough. A direct sum over all pixel pairs is O(P^2) (1.7e11 terms at 480x854).
  * The smoothness kernel is a Gaussian over pixel positions alone: an exact separable blur.
  * The appearance kernel is a Gaussian in 5-D (x, y, r, g, b) feature space. It is filtered on
    the permutohedral lattice of Adams, Baek & Davis (Eurographics 2010), the approximation the
    reference implementation uses: each pixel is splatted with barycentric weights onto the
    d+1 = 6 corners of its lattice simplex, the lattice is blurred with [1 2 1]/4 along its d+1
    axes, and each pixel reads back (slices) its corners. The work is linear in the pixels
    and in the lattice points, which exist only around the pixels' features (about 100k for a
    DAVIS frame at half resolution). The lattice is built once per frame; an iteration is
    then one sparse (P x M) product each way and 12 gathers over the lattice. A dense 5-D
    bilateral grid would need 37^3 colour cells times the spatial cells at srgb=7, and a
    windowed filter would lose the long-range pull that makes the CRF dense.
  * The appearance kernel spans sxy = 20 pixels, so its lattice is built on the frame shrunk
    by `bilateral_stride` (2), and its message is brought back to full resolution by joint
    bilateral upsampling (each pixel's bilinear neighbours, weighted by colour likeness), so
    it still stops at colour edges. The unary and the smoothness term stay at full resolution.
    On 6 degraded DAVIS masks this is within 0.003 of stride 1 in mean J and F, in 0.6x the time.
  One 480x854 frame, 5 iterations, on one core of a 2-core AMD EPYC: 0.21 s CPU for 2 labels
  (one object), 0.39 s for 4; 0.36 s and 0.53 s at stride 1 (experiments/crf_speed.md).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import cv2
import ml_collections
import numpy as np
import scipy.sparse

from jvos import errors
from jvos.errors import InputError, with_defaults

PostProcess = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Probabilities are clipped here before the log, as pydensecrf's unary_from_softmax does, so a
# score of exactly 0 costs a finite 11.5 and the pairwise terms can still overturn it.
_CLIP = 1e-5


@dataclasses.dataclass(frozen=True)
class CRFParams:
  """Dense-CRF parameters, in pydensecrf's units (pixels, 0-255 colour levels).

  A config's `postprocess` section holds each of them as `crf_<name>` (default_config).

  Attributes:
    iterations: mean-field iterations (COSNet: 5).
    gaussian_sxy, gaussian_compat: smoothness kernel, position only (COSNet: 1 and 5).
    bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel, position and colour.
      COSNet tried sxy 10/15/20, srgb 7, compat 8/9/10; sxy 20 with compat 10 repaired
      degraded DAVIS masks best of that grid (experiments/crf_speed.md). A compat of 0 drops
      that kernel.
    bilateral_stride: build the appearance kernel's lattice on the frame shrunk by this factor
      and upsample its message back: 2 takes 0.6x the time of 1 at 480p and changes mean DAVIS
      J and F by under 0.005 (experiments/crf_speed.md); the other terms stay at full
      resolution.
  """
  iterations: int = 5
  gaussian_sxy: float = 1.0
  gaussian_compat: float = 5.0
  bilateral_sxy: float = 20.0
  bilateral_srgb: float = 7.0
  bilateral_compat: float = 10.0
  bilateral_stride: int = 2


def default_config() -> ml_collections.ConfigDict:
  """The `postprocess` config section: `crf` (off by default) and CRFParams as `crf_<name>`."""
  return ml_collections.ConfigDict(dict(
      crf=False, **{f'crf_{f.name}': f.default for f in dataclasses.fields(CRFParams)}))


def crf_params(section: ml_collections.ConfigDict) -> CRFParams:
  """Validated CRF parameters from a `postprocess` section (fields it lacks take the defaults).

  Raises InputError for an unknown field (a typo would otherwise be ignored in silence) and
  for a value out of range, naming the field and a value that works.
  """
  defaults = default_config()
  section = with_defaults(section, defaults, 'postprocess')
  check = functools.partial(errors.number, section, 'postprocess', defaults=defaults, low=0)
  return CRFParams(
      iterations=check('crf_iterations', low=1, whole=True,
                       hint=' (to switch the CRF off, set postprocess.crf=False)'),
      gaussian_sxy=float(check('crf_gaussian_sxy', above=True)),
      gaussian_compat=float(check('crf_gaussian_compat')),
      bilateral_sxy=float(check('crf_bilateral_sxy', above=True)),
      bilateral_srgb=float(check('crf_bilateral_srgb', above=True)),
      bilateral_compat=float(check('crf_bilateral_compat')),
      bilateral_stride=check('crf_bilateral_stride', low=1, whole=True))


def postprocess(section: ml_collections.ConfigDict | None) -> PostProcess:
  """The post-processing a `postprocess` config section asks for: (image, scores) -> scores.

  Validates the section now, so a bad value stops the run before any frame is segmented.
  Returns the identity (the scores object itself) when nothing is switched on or the section
  is None.
  """
  if section is None:
    return _identity
  crf = section.get('crf', False)
  if not isinstance(crf, bool):
    raise InputError(f'postprocess.crf={crf!r}: use True or False.')
  params = crf_params(section)
  if not crf:
    return _identity
  return functools.partial(dense_crf, params=params)


def _identity(image: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
  del image
  return probabilities


def dense_crf(image: np.ndarray, probabilities: np.ndarray,
              params: CRFParams = CRFParams()) -> np.ndarray:
  """Per-object probabilities (N, H, W) in [0, 1] refined by the dense CRF on an RGB frame.

  Args:
    image: (H, W, 3) uint8 RGB frame the scores belong to.
    probabilities: (N, H, W) float scores, one map per object, as segmenters yield them.
    params: CRF parameters (see CRFParams / default_config).

  Returns:
    (N, H, W) float32: for object k, Q_k / (Q_k + Q_background) with Q the CRF's marginals.
    With that, the runner's merge (argmax against a 0.5 background) gives exactly the CRF's
    most likely label at every pixel; for one object it is the CRF's own Q_1.
  """
  probabilities = np.asarray(probabilities)
  image = np.asarray(image)
  if probabilities.ndim != 3:
    raise ValueError(f'probabilities must be (N, H, W), got shape {probabilities.shape}.')
  if image.shape != (*probabilities.shape[1:], 3) or image.dtype != np.uint8:
    raise ValueError(f'image must be (H, W, 3) uint8 matching probabilities '
                     f'{probabilities.shape}, got {image.shape} {image.dtype}.')
  num_objects, height, width = probabilities.shape
  if num_objects == 0:
    return probabilities.astype(np.float32)
  log_p = _unary(probabilities)  # (L, P), L = N + 1 labels, background first.
  kernels = []
  if params.gaussian_compat:
    kernels.append((params.gaussian_compat,
                    _gaussian_filter(height, width, params.gaussian_sxy)))
  if params.bilateral_compat:
    kernels.append((params.bilateral_compat,
                    _bilateral_filter(image, params.bilateral_sxy, params.bilateral_srgb,
                                      params.bilateral_stride)))
  q = _softmax(log_p.copy())
  if kernels:
    # Messages are linear in Q, and Q_background = 1 - sum_k Q_k: so only the N object
    # channels are filtered, and background's message is K~1 minus theirs (half the work
    # for one object).
    ones = np.ones((1, height * width), np.float32)
    message_of_one = sum(w * kernel(ones) for w, kernel in kernels)[0]
    for _ in range(params.iterations):
      messages = sum(w * kernel(q[1:]) for w, kernel in kernels)
      logits = log_p.copy()
      logits[1:] += messages
      logits[0] += message_of_one - messages.sum(axis=0)
      q = _softmax(logits)
  objects, background = q[1:], q[:1]
  refined = objects / np.maximum(objects + background, np.finfo(np.float32).tiny)
  return refined.reshape(num_objects, height, width)


def _unary(probabilities: np.ndarray) -> np.ndarray:
  """log P of [background, objects] per pixel, (N, H, W) -> (N + 1, H * W) float32.

  Background is 1 - max_k p_k: argmax over these is the runner's merge, and for one object it
  is the usual [1 - p, p]. Each pixel is normalised to sum 1 before clipping, as a softmax
  would be (objects may overlap).
  """
  p = np.clip(probabilities.astype(np.float32), 0, 1).reshape(probabilities.shape[0], -1)
  labels = np.concatenate([1 - p.max(axis=0, keepdims=True), p])
  labels /= np.maximum(labels.sum(axis=0, keepdims=True), np.finfo(np.float32).tiny)
  return np.log(np.clip(labels, _CLIP, 1))


def _softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over labels (axis 0) of (L, P) logits, computed in place."""
  logits -= logits.max(axis=0, keepdims=True)
  np.exp(logits, out=logits)
  logits /= logits.sum(axis=0, keepdims=True)
  return logits


def _gaussian_filter(height: int, width: int,
                     sxy: float) -> Callable[[np.ndarray], np.ndarray]:
  """q (L, P) -> K~ q for the smoothness kernel: an exact separable Gaussian blur.

  Zero padding outside the frame, with D^-1/2 on either side as for the appearance kernel (a
  border pixel has fewer neighbours, so its own vote counts more).
  """
  radius = max(1, int(np.ceil(4 * sxy)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sxy) ** 2).astype(np.float32)

  def blur(maps: np.ndarray) -> np.ndarray:  # (L, H, W) -> (L, H, W)
    return np.stack([cv2.sepFilter2D(m, -1, taps, taps, borderType=cv2.BORDER_CONSTANT)
                     for m in maps])

  norm = 1 / np.sqrt(blur(np.ones((1, height, width), np.float32))).reshape(1, -1)

  def apply(q: np.ndarray) -> np.ndarray:
    maps = (q * norm).astype(np.float32).reshape(-1, height, width)
    return blur(maps).reshape(q.shape[0], -1) * norm

  return apply


def _bilateral_filter(image: np.ndarray, sxy: float, srgb: float,
                      stride: int = 1) -> Callable[[np.ndarray], np.ndarray]:
  """q (L, P) -> K~ q for the appearance kernel, on a permutohedral lattice of the frame.

  stride > 1 builds the lattice on the frame shrunk by that factor (area averages of colour
  and of q), and brings the message back to each pixel by joint bilateral upsampling: its
  bilinear neighbours, each weighted also by how close its colour is to the pixel's, so a
  pixel beside an edge takes its message from its own side (plain bilinear upsampling leaks
  the object half a small pixel over the edge).
  """
  height, width = image.shape[:2]
  if stride == 1:
    small = image
  else:
    small = cv2.resize(image, (max(1, round(width / stride)), max(1, round(height / stride))),
                       interpolation=cv2.INTER_AREA)
  h, w = small.shape[:2]
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  # Positions in full-frame pixels, so sxy keeps its meaning at any stride.
  features = np.concatenate([
      np.stack([xs.ravel() * np.float32(width / w), ys.ravel() * np.float32(height / h)])
      / np.float32(sxy),
      small.reshape(-1, 3).T.astype(np.float32) / np.float32(srgb)])
  lattice = Lattice(features)
  norm = 1 / np.sqrt(np.maximum(lattice.filter(np.ones((1, h * w), np.float32)),
                                np.finfo(np.float32).tiny))
  if stride == 1:
    return lambda q: lattice.filter(q * norm) * norm

  upsample = _joint_upsampling(image, small, srgb)

  def apply(q: np.ndarray) -> np.ndarray:
    q_small = np.stack([cv2.resize(c.reshape(height, width), (w, h), interpolation=cv2.INTER_AREA)
                        for c in q]).reshape(len(q), -1)
    message = lattice.filter(q_small * norm) * norm
    return (upsample @ message.T).T

  return apply


def _joint_upsampling(image: np.ndarray, small: np.ndarray,
                      srgb: float) -> scipy.sparse.csr_matrix:
  """(H*W, h*w) sparse map of a message on `small` to every pixel of `image`.

  Row i weighs pixel i's 4 bilinear neighbours in `small` by bilinear weight times
  exp(-|colour difference|^2 / 2 srgb^2), normalised; a floor on the colour factor keeps a
  pixel unlike all four neighbours at plain bilinear.
  """
  height, width = image.shape[:2]
  h, w = small.shape[:2]

  def axis(n_full: int, n_small: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = (np.arange(n_full) + 0.5) * (n_small / n_full) - 0.5
    low = np.clip(np.floor(centre), 0, n_small - 1).astype(np.intp)
    high = np.minimum(low + 1, n_small - 1)
    frac = np.clip(centre - low, 0, 1).astype(np.float32)
    return low, high, frac

  y0, y1, fy = axis(height, h)
  x0, x1, fx = axis(width, w)
  planes = np.moveaxis(image, -1, 0).astype(np.float32)  # (3, H, W)
  small_planes = np.moveaxis(small, -1, 0).astype(np.float32)
  columns, weights = [], []
  for rows, wy in ((y0, 1 - fy), (y1, fy)):
    for cols, wx in ((x0, 1 - fx), (x1, fx)):
      # Gathers of whole rows, then columns: much faster than one 2-D fancy index.
      difference = planes - np.take(np.take(small_planes, rows, axis=1), cols, axis=2)
      difference *= difference
      distance = difference[0] + difference[1] + difference[2]
      colour = np.exp(distance * np.float32(-0.5 / srgb ** 2))
      np.maximum(colour, np.float32(1e-4), out=colour)
      colour *= wy[:, None] * wx[None, :]
      columns.append((rows[:, None] * w + cols[None, :]).ravel())
      weights.append(colour.ravel())
  weights = np.stack(weights)
  weights /= weights.sum(axis=0, keepdims=True)
  num_pixels = height * width
  return scipy.sparse.csr_matrix(
      (weights.T.ravel(), np.stack(columns).T.ravel(), np.arange(0, 4 * num_pixels + 1, 4)),
      shape=(num_pixels, h * w))


class Lattice:
  """The permutohedral lattice of Adams, Baek & Davis (2010) over (d, P) point features.

  `filter(values)` approximates, for every point i, sum_j exp(-|f_i - f_j|^2 / 2) values_j
  up to a constant factor (which the symmetric normalisation cancels). Built once per frame.

  Arrays are laid out (coordinate, point): every step is then a handful of whole-row numpy
  operations on contiguous rows of P values.
  """

  def __init__(self, features: np.ndarray):
    d, num_points = features.shape
    self.d = d
    # Scale so that the lattice's [1 2 1] blur along its d+1 axes is a Gaussian of standard
    # deviation 1 in feature units (Adams et al., section 3.1), and lift the point onto the
    # hyperplane sum(x) = 0 of R^(d+1).
    inv_std = np.sqrt(2 / 3) * (d + 1)
    scale = inv_std / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0))
    elevation = (_elevation_matrix(d) * scale[:, None]).astype(np.float32)
    elevated = elevation.T @ features.astype(np.float32)  # (d+1, P)

    # The nearest remainder-0 lattice point (all coordinates multiples of d+1), in units of
    # d+1, and the rank of each coordinate's rounding residual (0: the largest; ties by index).
    greedy = np.rint(elevated * np.float32(1 / (d + 1))).astype(np.int32)
    residual = elevated - greedy * np.float32(d + 1)
    rank = np.zeros((d + 1, num_points), np.int32)
    for i in range(d + 1):
      for j in range(i + 1, d + 1):
        smaller = residual[i] < residual[j]
        rank[i] += smaller
        rank[j] += ~smaller
    # Bring the point back onto the hyperplane: if its coordinates sum to `excess` (d+1)s,
    # move the `excess` coordinates of highest rank down by d+1 (or up, if negative).
    excess = greedy.sum(axis=0, dtype=np.int32)
    shift = ((excess < 0) & (rank < -excess)).astype(np.int32)
    shift -= (excess > 0) & (rank >= d + 1 - excess)
    greedy += shift
    rank += excess + (d + 1) * shift
    residual -= shift * np.float32(d + 1)

    # The residuals sorted by rank give the barycentric weights of the point's d+1 simplex
    # corners: corner r weighs s[d-r] - s[d+1-r] (corner 0: 1 + s[d] - s[0]), s in units of d+1.
    # `axis_of_rank[k]` is the coordinate whose rank is k (the inverse permutation).
    # Fancy indices are intp: numpy would convert int32 ones on every use.
    flat = (rank * num_points + np.arange(num_points, dtype=np.int32)).astype(np.intp)
    ranked = np.empty((d + 1, num_points), np.float32)
    ranked.ravel()[flat.ravel()] = (residual * np.float32(1 / (d + 1))).ravel()
    axis_of_rank = np.empty((d + 1, num_points), np.int32)
    axis_of_rank.ravel()[flat.ravel()] = np.repeat(np.arange(d + 1, dtype=np.int32), num_points)
    weights = np.empty((d + 1, num_points), np.float32)
    weights[0] = 1 + ranked[d] - ranked[0]
    weights[1:] = ranked[d - 1::-1] - ranked[d:0:-1]

    # Each lattice point gets one int64 code: its remainder r (all its coordinates are
    # r mod d+1) as the leading digit, then its first d coordinates in units of d+1 (the last
    # is minus their sum), with a margin of 2 for the corners and their blur neighbours.
    low = greedy[:d].min(axis=1).astype(np.int64) - 2
    radix = greedy[:d].max(axis=1).astype(np.int64) - low + 2
    strides = np.ones(d + 1, np.int64)  # strides[d] = 0: the dropped coordinate.
    strides[d] = 0
    for axis in range(d - 2, -1, -1):
      strides[axis] = strides[axis + 1] * radix[axis + 1]
    per_remainder = int(strides[0] * radix[0])  # R: the code span of one remainder.
    if np.log2(float(per_remainder) * (d + 1)) > 62:  # Only for absurdly small sxy or srgb.
      raise InputError('postprocess.crf_bilateral_sxy and crf_bilateral_srgb are too small for '
                       'this frame: the CRF lattice would not fit int64 codes; raise them.')
    base = np.zeros(num_points, np.int64)
    for axis in range(d):
      base += strides[axis] * (greedy[axis].astype(np.int64) - low[axis])
    # Corner r+1 is corner r plus 1 in every coordinate but -d in the one of rank d-r.
    corner_codes = np.empty((d + 1, num_points), np.int64)
    corner_codes[0] = base
    for r in range(d):
      corner_codes[r + 1] = corner_codes[r] + per_remainder - strides[axis_of_rank[d - r]]
    self._keys, corner_index = _unique_inverse(corner_codes.ravel())
    self.num_vertices = num_vertices = len(self._keys)

    # Splat and slice as one sparse (P x M) matrix: row i holds point i's corner weights.
    self._slice = scipy.sparse.csr_matrix(
        (weights.T.ravel(), corner_index.reshape(d + 1, num_points).T.ravel(),
         np.arange(0, (d + 1) * num_points + 1, d + 1)), shape=(num_points, num_vertices))
    self._splat = self._slice.T  # CSC: splatting needs no second copy.

    # Blur neighbours along each lattice axis j: key + 1 - (d+1) e_j and key - 1 + (d+1) e_j.
    # In codes that is a constant step per remainder (the remainder wraps from d to 0), so
    # the needles come in d+1 sorted runs and searchsorted stays cheap.
    wraps_up = self._keys // per_remainder == d
    total = int(strides.sum())
    # Only the forward neighbour is looked up: backward is its inverse map.
    self._neighbours = []
    for axis in range(d + 1):
      step = per_remainder - int(strides[axis])
      forward = self._lookup(
          self._keys + np.where(wraps_up, step - (d + 1) * per_remainder + total, step))
      backward = np.full(num_vertices, num_vertices, np.intp)
      found = np.flatnonzero(forward < num_vertices)
      backward[forward[found]] = found
      self._neighbours.append((forward, backward))

  def _lookup(self, codes: np.ndarray) -> np.ndarray:
    """Index of each code among the lattice points, or num_vertices (a zero entry) if absent."""
    index = np.minimum(np.searchsorted(self._keys, codes), self.num_vertices - 1)
    return np.where(self._keys[index] == codes, index, self.num_vertices)

  def filter(self, values: np.ndarray) -> np.ndarray:
    """(C, P) values -> (C, P): splat onto the lattice, blur along each axis, slice back."""
    lattice = np.zeros((values.shape[0], self.num_vertices + 1), np.float32)
    lattice[:, :-1] = (self._splat @ values.T).T
    for forward, backward in self._neighbours:
      for channel in lattice:  # 1-D takes: several times faster than 2-D fancy indexing.
        blurred = np.take(channel, forward)
        blurred += np.take(channel, backward)
        blurred *= 0.25
        channel[:-1] *= 0.5
        channel[:-1] += blurred
    return (self._slice @ lattice[:, :-1].T).T


def _unique_inverse(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """np.unique(codes, return_inverse=True) for non-negative int64 codes, several times faster.

  Packs each position into the low bits of its code, so one plain sort (SIMD on x86) replaces
  the argsort np.unique does; falls back to argsort when the codes are too wide to pack.
  """
  n = len(codes)
  bits = max(1, (n - 1).bit_length())
  if int(codes.max()) < 2 ** (63 - bits):
    packed = np.sort((codes << bits) | np.arange(n, dtype=np.int64))
    sorted_codes, order = packed >> bits, packed & ((1 << bits) - 1)
  else:
    order = np.argsort(codes)
    sorted_codes = codes[order]
  first = np.empty(n, bool)
  first[0] = True
  np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
  inverse = np.empty(n, np.int32)
  inverse[order] = np.cumsum(first, dtype=np.int32) - 1
  return sorted_codes[first], inverse


def _elevation_matrix(d: int) -> np.ndarray:
  """(d, d+1) map of scaled features onto the hyperplane sum(x) = 0 (Adams et al., eq. 3)."""
  matrix = np.zeros((d, d + 1))
  for axis in range(d):
    e = np.zeros(d)
    e[axis] = 1
    out = np.zeros(d + 1)  # The recurrence of the reference code, for the unit feature `axis`.
    out[d] = -d * e[d - 1]
    for i in range(d - 1, 0, -1):
      out[i] = out[i + 1] - i * e[i - 1] + (i + 2) * e[i]
    out[0] = out[1] + 2 * e[0]
    matrix[axis] = out
  return matrix

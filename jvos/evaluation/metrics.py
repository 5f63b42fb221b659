"""Region similarity J and boundary accuracy F, as the official DAVIS evaluation computes them.

Follows davisvideochallenge/davis2017-evaluation (`metrics.py`, `utils.py`) result for result,
edge cases included, but every function takes masks of shape (..., H, W) and scores all
leading entries at once (objects, or proposal x object pairs), broadcasting like numpy.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

# Boundary tolerance: a fraction of the image diagonal (the official `bound_th`).
BOUNDARY_FRACTION = 0.008
NUM_DECAY_BINS = 4


def _count(masks: np.ndarray) -> np.ndarray:
  """True pixels per mask: (..., H, W) bool -> (...) int."""
  return masks.sum(axis=(-2, -1), dtype=np.int64)


def disk(radius: int) -> np.ndarray:
  """skimage.morphology.disk(radius): (2r+1, 2r+1) uint8, 1 where dx^2 + dy^2 <= r^2."""
  offsets = np.arange(-radius, radius + 1)
  return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.uint8)


def boundary_radius(height: int, width: int) -> int:
  """Dilation radius of the boundary match: ceil(0.008 * image diagonal)."""
  # sqrt of the exact integer sum, as np.linalg.norm(shape) computes it in the official code.
  return int(np.ceil(BOUNDARY_FRACTION * np.sqrt(float(height * height + width * width))))


def seg2bmap(masks: np.ndarray) -> np.ndarray:
  """One-pixel-wide boundaries of (..., H, W) masks, as the official `_seg2bmap`.

  A pixel is on the boundary when it differs from its east, south or south-east neighbour.
  The last row compares only with the east neighbour, the last column only with the south
  one, and the bottom-right pixel is never a boundary: the official code's edge rules.
  """
  seg = masks.astype(bool, copy=False)
  here = seg[..., :-1, :-1]
  boundary = np.zeros_like(seg)
  boundary[..., :-1, :-1] = (here ^ seg[..., :-1, 1:]) | (here ^ seg[..., 1:, :-1]) | (
      here ^ seg[..., 1:, 1:])
  boundary[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
  boundary[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
  return boundary


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
  """Each (H, W) mask of (..., H, W) dilated by a disk, with cv2 as the official code does."""
  kernel = disk(radius)
  flat = np.ascontiguousarray(masks).reshape(-1, *masks.shape[-2:]).view(np.uint8)
  dilated = np.empty_like(flat)
  for source, target in zip(flat, dilated):
    cv2.dilate(source, kernel, dst=target)
  return dilated.view(bool).reshape(masks.shape)


def region_similarity(gt: np.ndarray, pred: np.ndarray,
                      void: np.ndarray | None = None) -> np.ndarray:
  """J: intersection over union of boolean masks, (..., H, W) -> (...) float.

  Void pixels (where given) count in neither set. An empty union scores 1, as officially:
  predicting nothing where there is nothing is perfect.
  """
  intersection = gt & pred
  union = gt | pred
  if void is not None:
    intersection &= ~void
    union &= ~void
  inter_count, union_count = _count(intersection), _count(union)
  return np.where(union_count == 0, 1.0, inter_count / np.maximum(union_count, 1))


def _f_from_counts(n_pred: np.ndarray, pred_match: np.ndarray, n_gt: np.ndarray,
                   gt_match: np.ndarray) -> np.ndarray:
  """Boundary F from boundary pixel counts, with the official empty-boundary rules.

  No predicted boundary: precision 1 (nothing wrong was drawn); no ground-truth boundary:
  recall 1 (nothing was missed); but precision 0 / recall 0 when only the other one is empty.
  """
  precision = np.where(n_pred == 0, 1.0,
                       np.where(n_gt == 0, 0.0, pred_match / np.maximum(n_pred, 1)))
  recall = np.where(n_gt == 0, 1.0, np.where(n_pred == 0, 0.0, gt_match / np.maximum(n_gt, 1)))
  total = precision + recall
  return np.where(total == 0, 0.0, 2 * precision * recall / np.where(total == 0, 1.0, total))


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray,
                       void: np.ndarray | None = None) -> np.ndarray:
  """F: boundary precision/recall of boolean masks within a tolerance, (..., H, W) -> (...).

  gt and pred broadcast against each other (e.g. (1, G, H, W) with (P, 1, H, W) scores every
  proposal against every object); boundaries and dilations are computed once per input mask.
  """
  if void is not None:
    gt = gt & ~void
    pred = pred & ~void
  radius = boundary_radius(*gt.shape[-2:])
  gt_boundary, pred_boundary = seg2bmap(gt), seg2bmap(pred)
  gt_match = _count(gt_boundary & _dilate(pred_boundary, radius))
  pred_match = _count(pred_boundary & _dilate(gt_boundary, radius))
  n_pred = np.broadcast_to(_count(pred_boundary), gt_match.shape)
  n_gt = np.broadcast_to(_count(gt_boundary), gt_match.shape)
  return _f_from_counts(n_pred, pred_match, n_gt, gt_match)


def decay_bins(num_frames: int) -> list[slice]:
  """The 4 official decay bins over a sequence of frames (neighbouring bins share a frame)."""
  edges = np.round(np.linspace(1, num_frames, NUM_DECAY_BINS + 1) + 1e-10) - 1
  # The official code casts the edges to uint8, which wraps past 255 frames and then compares
  # the wrong frames; integers give what it means to compute.
  edges = edges.astype(np.int64)
  return [slice(edges[i], edges[i + 1] + 1) for i in range(NUM_DECAY_BINS)]


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
  """(Mean, Recall, Decay) of one object's per-frame J or F, as the official `db_statistics`.

  Mean ignores NaN frames; Recall is the fraction of frames scoring above 0.5; Decay is the
  mean of the first quarter of the frames minus that of the last quarter.
  """
  values = np.asarray(per_frame, dtype=np.float64)
  if values.size == 0:
    raise ValueError('db_statistics needs at least one frame.')
  bins = decay_bins(len(values))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', category=RuntimeWarning)  # All-NaN slices give NaN.
    mean = np.nanmean(values)
    decay = np.nanmean(values[bins[0]]) - np.nanmean(values[bins[-1]])
  recall = np.mean(values > 0.5)
  return float(mean), float(recall), float(decay)

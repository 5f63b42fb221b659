"""A temporal prior any one-shot system can switch on: each object's scores are kept near where
the object was on the previous frame.

OSVOS scores every frame alone, so a distractor that looks like the object (a second car, a
second dancer) lights up wherever it is, and nothing stops it. OSVOS-S and OSMN's spatial
modulator answer with the previous mask as a location prior; this is that prior, outside any
network, as a wrapper around a system's `Segmenter` (jvos/segment.py), so it serves every
one-shot system alike:

    segmenter = temporal_prior.wrap(config.temporal_prior, systems.build_segmenter(config))

On each frame, for each object k with previous mask M_k (the wrapper's own last answer, or the
given mask on the frame that introduces the object):
  * `method='mask'`: M_k as it was; `'flow'`: M_k carried onto this frame along DIS optical flow
    (jvos/systems/flow.py), which follows fast motion;
  * the region is the carried mask dilated by `radius` pixels plus `relative_radius` times the
    object's size (the square root of its area), since a large or fast object moves further;
  * scores are multiplied by 1 inside the region and by `floor` outside (0: hard suppression).
An object whose previous mask is empty (lost, or occluded) gets no prior, so it can be found
again anywhere. The state is the inner system's plus one mask per object at the working size, so
memory does not grow with the video.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import ml_collections
import numpy as np

from jvos import errors
from jvos.errors import InputError, with_defaults
from jvos.segment import VideoInput, merge_scores

METHODS = ('none', 'mask', 'flow')


def default_config() -> ml_collections.ConfigDict:
  """The `temporal_prior` config section (off by default)."""
  return ml_collections.ConfigDict(dict(method='none', radius=16, relative_radius=0.25,
                                        floor=0.0))


@dataclasses.dataclass
class _State:
  inner: Any
  masks: np.ndarray  # (objects, H, W) bool: each object's last mask at the working size.
  previous_gray: np.ndarray | None  # For 'flow': the last frame, grey.


class TemporalPrior:
  """A `Segmenter` whose scores are the inner segmenter's, times each object's location prior."""

  def __init__(self, inner: Any, method: str, radius: float, relative_radius: float,
               floor: float):
    self.inner = inner
    self.method = method
    self.radius = radius
    self.relative_radius = relative_radius
    self.floor = floor
    if method == 'flow':
      from jvos.systems import flow  # pylint: disable=import-outside-toplevel
      self._flow = cv2.DISOpticalFlow_create(flow.PRESETS['medium'])
      self._warp = flow.backward_warp

  def start(self, video: VideoInput) -> _State:
    masks = np.zeros((video.num_objects, *video.working_size), bool)
    return _State(self.inner.start(video), masks, None)

  def region(self, mask: np.ndarray) -> np.ndarray:
    """The dilated neighbourhood of one carried mask, as float 0/1."""
    radius = int(round(self.radius + self.relative_radius * np.sqrt(mask.sum())))
    if radius <= 0:
      return mask.astype(np.float32)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), disk).astype(np.float32)

  def prior(self, state: _State, frame: np.ndarray) -> np.ndarray:
    """(objects, H, W) multipliers for this frame's scores, from the previous masks."""
    masks = state.masks.astype(np.float32)
    if self.method == 'flow':
      gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
      if state.previous_gray is not None and masks.size:
        masks = self._warp(masks, self._flow.calc(gray, state.previous_gray, None))
      state.previous_gray = gray
    priors = np.ones(masks.shape, np.float32)
    for k, mask in enumerate(masks > 0.5):
      if mask.any():
        priors[k] = self.floor + (1 - self.floor) * self.region(mask)
    return priors

  def step(self, state: _State, frame: np.ndarray) -> tuple[_State, np.ndarray]:
    state.inner, scores = self.inner.step(state.inner, frame)
    scores = np.asarray(scores, np.float32)
    if len(state.masks) == len(scores):
      scores = scores * self.prior(state, frame)
      labels = merge_scores(scores)
      state.masks = labels[None] == np.arange(1, len(scores) + 1)[:, None, None]
    return state, scores

  def add_objects(self, state: _State, frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> _State:
    state.inner = self.inner.add_objects(state.inner, frame, slots, masks)
    state.masks[list(slots)] = np.asarray(masks, bool)
    if self.method == 'flow':
      state.previous_gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return state


def wrap(section: ml_collections.ConfigDict | None, segmenter: Any) -> Any:
  """`segmenter` with the prior a `temporal_prior` config section asks for (itself when off).

  Validates the section, so a bad value stops the run before any frame is segmented.
  """
  if section is None:
    return segmenter
  defaults = default_config()
  section = with_defaults(section, defaults, 'temporal_prior')
  if section.method not in METHODS:
    raise InputError(f'temporal_prior.method={section.method!r}; use one of {METHODS} '
                     '(none: off).')
  for field, high in (('radius', np.inf), ('relative_radius', np.inf), ('floor', 1)):
    errors.number(section, 'temporal_prior', field, defaults, low=0, high=high)
  if section.method == 'none':
    return segmenter
  return TemporalPrior(segmenter, section.method, float(section.radius),
                       float(section.relative_radius), float(section.floor))

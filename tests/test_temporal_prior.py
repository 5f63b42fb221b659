"""The temporal prior (jvos/temporal_prior.py): distractors far from the object are cut, a
moving object is followed by the flow prior, a lost object is found again, bad values fail."""

import cv2
import ml_collections
import numpy as np
import pytest

from jvos import segment
from jvos import temporal_prior
from jvos.errors import InputError

SIZE = (96, 128)


def square(top: int, left: int, side: int = 20) -> np.ndarray:
  mask = np.zeros(SIZE, bool)
  mask[top:top + side, left:left + side] = True
  return mask


class Scripted:
  """A stateless segmenter answering with the scores it is given, frame after frame."""

  def __init__(self, scores: list[np.ndarray]):
    self.scores = scores

  def start(self, video):
    del video
    return 0

  def step(self, state, frame):
    del frame
    return state + 1, self.scores[state]

  def add_objects(self, state, frame, slots, masks):
    del frame, slots, masks
    return state


def section(**fields) -> ml_collections.ConfigDict:
  # Built from a dict, as a config file's literal would be: no types locked by the defaults.
  return ml_collections.ConfigDict({**temporal_prior.default_config().to_dict(), **fields})


def start(segmenter, first_mask: np.ndarray, frame: np.ndarray):
  video = segment.VideoInput('v', (), SIZE, {0: (0, first_mask)})
  state = segmenter.start(video)
  return segmenter.add_objects(state, frame, [0], first_mask[None])


def textured_frames(num_frames: int, shift: int) -> list[np.ndarray]:
  """A smooth random texture translated `shift` pixels right per frame (DIS can follow it)."""
  texture = np.random.default_rng(0).uniform(0, 255, (SIZE[0], SIZE[1] + num_frames * shift, 3))
  texture = cv2.GaussianBlur(texture.astype(np.float32), (0, 0), 2).astype(np.uint8)
  width = SIZE[1]
  return [np.ascontiguousarray(texture[:, num_frames * shift - t * shift:][:, :width])
          for t in range(num_frames)]


def test_a_distractor_far_from_the_object_is_cut_and_the_object_kept():
  obj, distractor = square(10, 10), square(60, 100)
  scores = [np.where(obj | distractor, 0.9, 0.05)[None].astype(np.float32)] * 3
  frame = np.zeros((*SIZE, 3), np.uint8)
  wrapped = temporal_prior.wrap(section(method='mask'), Scripted(scores))
  state = start(wrapped, obj, frame)
  for _ in range(3):
    state, out = wrapped.step(state, frame)
    assert np.all(out[0][obj] == pytest.approx(0.9))
    assert out[0][distractor].max() == 0.0
  # Off, the same scores come back as they are.
  plain = temporal_prior.wrap(section(method='none'), Scripted(scores))
  assert isinstance(plain, Scripted)
  _, out = plain.step(start(plain, obj, frame), frame)
  assert out[0][distractor].min() == pytest.approx(0.9)


def test_a_soft_floor_scales_scores_outside_the_region():
  obj, distractor = square(10, 10), square(60, 100)
  scores = [np.where(obj | distractor, 0.9, 0.05)[None].astype(np.float32)]
  frame = np.zeros((*SIZE, 3), np.uint8)
  wrapped = temporal_prior.wrap(section(method='mask', floor=0.5), Scripted(scores))
  _, out = wrapped.step(start(wrapped, obj, frame), frame)
  np.testing.assert_allclose(out[0][distractor], 0.45, rtol=1e-6)


def test_the_flow_prior_follows_a_moving_object_the_mask_prior_cuts():
  shift, num_frames = 6, 4  # Three steps: the mask prior has not lost it all yet.
  frames = textured_frames(num_frames, shift)
  truth = [square(30, 20 + t * shift) for t in range(num_frames)]
  scores = [np.where(m, 0.9, 0.05)[None].astype(np.float32) for m in truth[1:]]
  kept = {}
  for method in ('mask', 'flow'):
    # No dilation at all: the region is the carried mask itself.
    wrapped = temporal_prior.wrap(section(method=method, radius=0, relative_radius=0),
                                  Scripted(scores))
    state = start(wrapped, truth[0], frames[0])
    for t in range(1, num_frames):
      state, out = wrapped.step(state, frames[t])
    predicted = out[0] > 0.5
    kept[method] = (predicted & truth[-1]).sum() / truth[-1].sum()
  assert kept['flow'] > 0.85, kept
  assert kept['mask'] < 0.2, kept  # Each frame keeps only what overlapped the last.


def test_a_lost_object_gets_no_prior_and_is_found_again():
  obj, elsewhere = square(10, 10), square(60, 100)
  empty = np.full((1, *SIZE), 0.05, np.float32)
  found = np.where(elsewhere, 0.9, 0.05)[None].astype(np.float32)
  frame = np.zeros((*SIZE, 3), np.uint8)
  wrapped = temporal_prior.wrap(section(method='mask'), Scripted([empty, found]))
  state = start(wrapped, obj, frame)
  state, out = wrapped.step(state, frame)
  assert (out[0] > 0.5).sum() == 0  # Lost (occluded, say).
  state, out = wrapped.step(state, frame)
  assert np.array_equal(out[0] > 0.5, elsewhere)


def test_the_runner_adds_a_late_object_to_the_prior():
  first, late = square(10, 10), square(60, 90)
  scores = np.stack([np.where(first, 0.9, 0.05), np.where(late | first, 0.8, 0.05)])
  wrapped = temporal_prior.wrap(section(method='mask'), Scripted([scores.astype(np.float32)] * 3))
  video = segment.VideoInput('v', (), SIZE, {0: (0, first), 1: (1, late)})
  frame = np.zeros((*SIZE, 3), np.uint8)
  state = wrapped.add_objects(wrapped.start(video), frame, [0], first[None])
  state, _ = wrapped.step(state, frame)  # Frame 1: object 1 arrives after it.
  state = wrapped.add_objects(state, frame, [1], late[None])
  state, out = wrapped.step(state, frame)
  labels = segment.merge_scores(out)
  assert np.array_equal(labels == 1, first)
  assert np.array_equal(labels == 2, late)  # Its prior is its own given mask, not object 0's.


@pytest.mark.parametrize('field, value', [
    ('method', 'optical_flow'), ('radius', -1), ('floor', 1.5), ('relative_radius', 'big'),
    ('floor', True)])
def test_bad_values_fail_naming_the_field(field, value):
  with pytest.raises(InputError, match=f'temporal_prior.{field}'):
    temporal_prior.wrap(section(**{field: value}), Scripted([]))


def test_an_unknown_field_fails_listing_the_fields():
  config = section()
  config.radiuss = 3
  with pytest.raises(InputError, match='temporal_prior.radiuss.*floor, method, radius'):
    temporal_prior.wrap(config, Scripted([]))

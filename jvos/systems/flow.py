"""Baseline: propagate each object's mask from frame to frame along DIS optical flow.

Flow is computed from the current frame back to the previous one, so every current pixel
knows where it came from and the previous mask can be pulled (backward-warped) without holes.
It needs no training and proves the whole pipeline end to end; every learned system's result
is printed beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np

from jvos.errors import InputError
from jvos.segment import VideoInput
from jvos.systems import System

PRESETS = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
            'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def backward_warp(maps: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """maps (N, H, W) sampled at x + flow(x): moves the previous frame's maps onto the current."""
  height, width = flow.shape[:2]
  grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                               np.arange(height, dtype=np.float32))
  map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
  return np.stack([cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                   for m in maps])


@dataclasses.dataclass
class _State:
  flow: cv2.DISOpticalFlow
  previous_gray: np.ndarray | None
  masks: np.ndarray  # (objects, H, W) float32, 0/1.


class FlowPropagation:
  """Segmenter: the given masks carried forward by optical flow."""

  def __init__(self, preset: str = 'medium'):
    if preset not in PRESETS:
      raise InputError(f'model.preset={preset!r}; use one of {sorted(PRESETS)}.')
    self.preset = preset

  def start(self, video: VideoInput) -> _State:
    masks = np.zeros((video.num_objects, *video.working_size), np.float32)
    return _State(cv2.DISOpticalFlow_create(PRESETS[self.preset]), None, masks)

  def step(self, state: _State, frame: np.ndarray) -> tuple[_State, np.ndarray]:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if state.previous_gray is not None:
      flow = state.flow.calc(gray, state.previous_gray, None)
      # Re-binarise after each warp: bilinear sampling would otherwise blur the mask a little
      # more on every frame.
      state.masks = (backward_warp(state.masks, flow) > 0.5).astype(np.float32)
    state.previous_gray = gray
    return state, state.masks

  def add_objects(self, state: _State, frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> _State:
    state.masks[list(slots)] = masks
    state.previous_gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return state


SYSTEM = System(name='flow', tasks=('semi-supervised',),
                build_segmenter=lambda config, model, params: FlowPropagation(config.model.preset))

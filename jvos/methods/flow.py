"""Baseline: propagate each object's mask from frame to frame along DIS optical flow.

Flow is computed from the current frame back to the previous one, so every current pixel
knows where it came from and the previous mask can be pulled (backward-warped) without holes.
It needs no training and proves the whole pipeline end to end; every learned method's result is
printed beside it.
"""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from jvos.data.video import Video

_PRESETS = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
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


class FlowPropagation:
  """Segmenter: the given masks carried forward by optical flow."""

  def __init__(self, preset: str = 'medium'):
    if preset not in _PRESETS:
      raise ValueError(f'method.preset={preset!r}; use one of {sorted(_PRESETS)}.')
    self.preset = preset

  def __call__(self, video: Video) -> Iterator[np.ndarray]:
    dis = cv2.DISOpticalFlow_create(_PRESETS[self.preset])
    given = video.given_masks()
    object_ids = video.object_ids
    previous_gray, masks = None, None
    for index in range(len(video)):
      gray = cv2.cvtColor(video.frame(index), cv2.COLOR_RGB2GRAY)
      if masks is None:
        masks = np.zeros((len(object_ids), *gray.shape), np.float32)
      else:
        flow = dis.calc(gray, previous_gray, None)
        # Re-binarise after each warp: bilinear sampling would otherwise blur the mask a little
        # more on every frame.
        masks = (backward_warp(masks, flow) > 0.5).astype(np.float32)
      for k, obj in enumerate(object_ids):
        start, mask = given.get(obj, (-1, None))
        if start == index:
          masks[k] = mask
      previous_gray = gray
      yield masks

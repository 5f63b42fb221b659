"""Test-time augmentation any per-frame scorer can use: mirrored and resized views, averaged.

A system hands `averaged` a function from a batch of views (N, h, w, 3) to their foreground
probabilities (N, h, w); each view's answer is brought back to the frame (mirrored back,
resized back) and the answers are averaged. OSVOS scores each object's network this way and
COSNet its co-attention output (each view against the same reference frames). The section is
`segment.flip` (the mirrored frame scored too) and `segment.scales` (image scales; (1.0,): the
frame as it is); flip=False, scales=(1.0,) is the scorer's own answer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jvos.errors import InputError

Scorer = Callable[[jax.Array], jax.Array]


def settings(segment_config: ml_collections.ConfigDict) -> tuple[bool, tuple[float, ...]]:
  """segment.flip and segment.scales, checked: (flip, scales)."""
  flip, scales = segment_config.flip, segment_config.scales
  if not isinstance(flip, bool):
    raise InputError(f'segment.flip={flip!r}: use True or False.')
  if isinstance(scales, (int, float)):
    scales = (scales,)
  if (not isinstance(scales, (tuple, list)) or not scales
      or not all(isinstance(s, (int, float)) and 0.25 <= s <= 4 for s in scales)):
    raise InputError(f'segment.scales={scales!r}: use a tuple of image scales in [0.25, 4], e.g. '
                     '--config.segment.scales="(1.0, 0.75)" (1.0: the frame as it is).')
  return flip, tuple(float(s) for s in scales)


def averaged(score: Scorer, image: jax.Array, flip: bool, scales: Sequence[float]) -> jax.Array:
  """(H, W) probabilities of one (H, W, 3) image, averaged over its views.

  One `score` call per scale, so a flip costs one more image in the same batch.
  """
  height, width = image.shape[:2]
  total = jnp.zeros((height, width), jnp.float32)
  for scale in scales:
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    scaled = image if size == (height, width) else jax.image.resize(image, (*size, 3), 'linear')
    views = jnp.stack([scaled, scaled[:, ::-1]]) if flip else scaled[None]
    maps = score(views)
    if flip:
      maps = jnp.stack([maps[0], maps[1][:, ::-1]])
    if size != (height, width):
      maps = jax.image.resize(maps, (len(maps), height, width), 'linear')
    total = total + maps.sum(0)
  return total / (len(scales) * (2 if flip else 1))

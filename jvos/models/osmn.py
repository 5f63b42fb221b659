"""OSMN (Yang et al., CVPR 2018): the OSVOS network, modulated by a visual and a spatial guide.

The segmentation network is OSVOS's (backbone, side outputs, fusion; jvos/models/osvos.py). Two
small "modulators" condition it on the object to follow, so no fine-tuning is needed:

  visual modulator: a second backbone looks at the object's crop from an annotated frame
      (`guides`: background filled with the mean colour, stretched to a square), average-pools
      its last stage, and one linear layer gives one scale per channel of every modulated
      layer, as 1 + SCALE_GAIN x its output. The layer starts at 0: every scale is 1, so an
      untrained OSMN is its OSVOS network unchanged.
  spatial modulator: a 2-D Gaussian where the object was in the previous frame (`priors`:
      centre and spread per axis, from `prior_from_mask`), evaluated at each modulated layer's
      resolution, through a 1x1 conv (one weight and bias per channel, both starting at 0,
      times SHIFT_GAIN) to one shift per channel and pixel.

Each modulated layer computes y = scale * relu(conv(x)) + shift (after the activation, as the
official code does); the backbones call a `modulate(name, x)` hook there. The visual scales are
computed once per object per video (`scales`); every frame is then one forward (`segment`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models import backbones
from jvos.models.osvos import OSVOS
from jvos.models.preprocessing import normalize

# The official OSMN modulates VGG-16's conv3_1 .. conv5_3; on MobileNetV2 and ResNets the blocks at
# the same strides (4 to 32): MobileNetV2's depthwise outputs, ResNet's block outputs.
DEFAULT_LAYERS = {
    'vgg16': tuple(f'conv{stage}_{index}' for stage in (3, 4, 5) for index in (1, 2, 3)),
    'mobilenet_v2': tuple(f'block{index}' for index in range(3, 17)),
    'resnet50': tuple(f'layer{layer}_{index}' for layer, blocks in ((2, 4), (3, 6), (4, 3))
                      for index in range(blocks)),
    'resnet101': tuple(f'layer{layer}_{index}' for layer, blocks in ((2, 4), (3, 23), (4, 3))
                       for index in range(blocks)),
}
# The modulators' outputs are their parameters times these gains: Adam moves a parameter by
# about the learning rate a step whatever its gradient, so the gains let the modulators (which
# start at identity) move 10x faster than the pretrained network they modulate. Trained at the
# same rate, they barely moved in 1,500 steps (shifts ~0.05 against activations up to 6) and
# OSMN scored what its OSVOS parent does (experiments/osmn_davis16/README.md).
SCALE_GAIN = 10.0
SHIFT_GAIN = 10.0
# A spread below this (pixels of the segmented frame) would make the prior a dot.
MIN_SIGMA = 5.0
# The robust standard deviation of a normal distribution from its median absolute deviation.
MAD_TO_SIGMA = 1.4826


modulation_channels = backbones.modulation_channels


def _weighted_median(values: jax.Array, weights: jax.Array) -> jax.Array:
  """The smallest value with at least half of the total weight at or below it."""
  order = jnp.argsort(values)
  cumulative = jnp.cumsum(weights[order])
  return values[order][jnp.argmax(cumulative >= cumulative[-1] / 2)]


def prior_from_mask(mask: jax.Array) -> jax.Array:
  """(cy, cx, sy, sx) of a (H, W) mask: per-axis median and 1.4826 x median absolute
  deviation, at least MIN_SIGMA pixels. An empty mask gives zeros, the empty prior."""
  mask = mask.astype(jnp.float32)
  stats = []
  for axis in (1, 0):  # Rows (y), then columns (x).
    weights = mask.sum(axis)
    coords = jnp.arange(weights.shape[0], dtype=jnp.float32)
    centre = _weighted_median(coords, weights)
    spread = MAD_TO_SIGMA * _weighted_median(jnp.abs(coords - centre), weights)
    stats.append((centre, jnp.maximum(spread, MIN_SIGMA)))
  (cy, sy), (cx, sx) = stats
  return jnp.where(mask.sum() > 0, jnp.stack([cy, cx, sy, sx]), 0.0)


def gaussian_map(priors: jax.Array, size: Sequence[int], image_size: Sequence[int]) -> jax.Array:
  """(B, h, w) Gaussians of `priors` (B, 4), given in pixels of an image of `image_size`, on a
  (h, w) grid covering that image (a feature map at stride image_size / size). An empty prior
  (spread 0) is 0 everywhere."""
  (height, width), (image_height, image_width) = size, image_size
  # Centre of feature pixel i in image pixels: (i + 0.5) * stride - 0.5.
  ys = (jnp.arange(height) + 0.5) * (image_height / height) - 0.5
  xs = (jnp.arange(width) + 0.5) * (image_width / width) - 0.5
  cy, cx, sy, sx = (priors[:, k, None] for k in range(4))
  valid = sy > 0
  sy, sx = jnp.where(valid, sy, 1.0), jnp.where(valid, sx, 1.0)
  gy = jnp.exp(-0.5 * ((ys[None] - cy) / sy) ** 2)  # (B, h)
  gx = jnp.exp(-0.5 * ((xs[None] - cx) / sx) ** 2)  # (B, w)
  return jnp.where(valid[..., None], gy[:, :, None] * gx[:, None, :], 0.0)


class VisualModulator(nn.Module):
  """Guide crops (B, S, S, 3), RGB 0..255 -> per-channel scales (B, total channels)."""
  backbone: str
  input_style: str
  width_multiplier: float
  num_scales: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, guides: jax.Array, train: bool = False) -> jax.Array:
    x = normalize(guides, self.input_style).astype(self.dtype)
    stages = backbones.create(self.backbone, self.width_multiplier, dtype=self.dtype)(x)
    pooled = jnp.mean(stages[-1].astype(jnp.float32), axis=(1, 2))
    pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    deviation = nn.Dense(self.num_scales, kernel_init=nn.initializers.zeros_init(),
                         name='scales')(pooled)
    return 1.0 + SCALE_GAIN * deviation


class OSMN(nn.Module):
  """OSMN. `__call__(images, guides, priors)` -> OSVOS's outputs ({'sides', 'fused'} logits).

  images (B, H, W, 3) RGB 0..255; guides (B, S, S, 3) RGB 0..255, the object crops; priors
  (B, 4) the previous mask's Gaussian (cy, cx, sy, sx) in pixels of `images`.

  Attributes:
    segmentation: the OSVOS network that is modulated.
    guide_backbone, guide_input_style, guide_width_multiplier: the visual modulator's backbone.
    modulated_layers: names of the backbone layers modulated (see `modulation_channels`).
    visual, spatial: use that modulator (off: scales 1 / shifts 0, for ablations).
    dropout: on the pooled guide features, in training.
  """
  segmentation: OSVOS
  guide_backbone: str = 'mobilenet_v2'
  guide_input_style: str = 'tflite'
  guide_width_multiplier: float = 1.0
  modulated_layers: tuple[str, ...] = DEFAULT_LAYERS['mobilenet_v2']
  visual: bool = True
  spatial: bool = True
  dropout: float = 0.0

  def setup(self):
    channels = modulation_channels(self.segmentation.backbone,
                                   self.segmentation.width_multiplier)
    self.channels = [channels[name] for name in self.modulated_layers]
    total = sum(self.channels)
    self.visual_modulator = VisualModulator(
        self.guide_backbone, self.guide_input_style, self.guide_width_multiplier, total,
        self.dropout, self.segmentation.dtype)
    self.shift_kernel = self.param('shift_kernel', nn.initializers.zeros_init(), (total,))
    self.shift_bias = self.param('shift_bias', nn.initializers.zeros_init(), (total,))

  def scales(self, guides: jax.Array, train: bool = False) -> jax.Array:
    """(B, total channels) scales of the modulated layers, from the object crops."""
    if not self.visual:
      return jnp.ones((guides.shape[0], sum(self.channels)), jnp.float32)
    return self.visual_modulator(guides, train)

  def segment(self, images: jax.Array, scales: jax.Array, priors: jax.Array) -> dict[str, Any]:
    """One frame per object: OSVOS's outputs, modulated by `scales` and `priors`."""
    offsets = {name: int(sum(self.channels[:i])) for i, name in enumerate(self.modulated_layers)}
    image_size = images.shape[1:3]

    def modulate(name: str, x: jax.Array) -> jax.Array:
      if name not in offsets:
        return x
      part = slice(offsets[name], offsets[name] + x.shape[-1])
      x = x * scales[:, None, None, part].astype(x.dtype)
      if self.spatial:
        heat = gaussian_map(priors, x.shape[1:3], image_size)[..., None]
        shift = SHIFT_GAIN * (heat * self.shift_kernel[part] + self.shift_bias[part])
        x = x + shift.astype(x.dtype)
      return x

    return self.segmentation(images, modulate)

  def __call__(self, images: jax.Array, guides: jax.Array, priors: jax.Array,
               train: bool = False) -> dict[str, Any]:
    return self.segment(images, self.scales(guides, train), priors)

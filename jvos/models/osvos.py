"""OSVOS (Caelles et al., CVPR 2017): a backbone with deep-supervised side outputs, fused.

Foreground branch of the paper: side outputs from backbone stages 2-5 (a 16-channel 3x3 conv
each, learned upsampling to the input size, a 1x1 score per side for deep supervision), the four
upsampled 16-channel maps fused by a 1x1 conv. The parent network is trained on the training
videos; at test time it is fine-tuned on the first frame of each video (jvos/finetune.py).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jvos.models import backbones
from jvos.models.layers import Conv
from jvos.models.preprocessing import normalize

BACKBONES = backbones.NAMES


def bilinear_subpixel_init(factor: int):
  """Initialiser making `LearnedUpsampling` start as bilinear interpolation.

  Output row i of each block of `factor` rows lies at input coordinate y + (i + 0.5)/factor - 0.5,
  between input rows y-1, y, y+1; the kernel holds the three bilinear taps per sub-position.
  """
  offsets = (np.arange(factor) + 0.5) / factor - 0.5
  taps = np.stack([np.maximum(0, -offsets), 1 - np.abs(offsets), np.maximum(0, offsets)])
  kernel = taps[:, None, :, None] * taps[None, :, None, :]  # (3, 3, factor, factor)

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(kernel, dtype).reshape(shape)
  return init


class LearnedUpsampling(nn.Module):
  """Learned upsampling by an integer factor: a transposed conv in sub-pixel form.

  Each output pixel is a learned mix of the 3x3 input neighbourhood it falls in, one kernel per
  sub-pixel position, shared by the channels: the work of a transposed conv with kernel
  3*factor, without the zero-stuffed input that makes XLA's transposed convs slow. Sharing the
  kernel across channels makes it commute with 1x1 convs, which is what lets OSVOS score its
  side outputs before upsampling them.
  """
  factor: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    kernel = self.param('kernel', bilinear_subpixel_init(self.factor),
                        (3, 3, self.factor, self.factor))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
    neighbours = jnp.stack([jnp.stack([padded[:, dy:dy + height, dx:dx + width]
                                       for dx in range(3)], axis=1) for dy in range(3)], axis=1)
    # neighbours: (B, 3, 3, H, W, C) -> (B, H, f, W, f, C)
    out = jnp.einsum('byxhwc,yxij->bhiwjc', neighbours, kernel.astype(x.dtype))
    return out.reshape(batch, height * self.factor, width * self.factor, channels)


def stride(size: int, stage_size: int) -> int:
  """The power-of-two stride that took a side of `size` pixels to `stage_size`."""
  return 2 ** int(round(np.log2(size / stage_size)))


def fit(x: jax.Array, height: int, width: int) -> jax.Array:
  """Crops (or edge-pads) an upsampled map to the input size, anchored at the top-left.

  Strided layers map input pixel 0 to stage pixel 0, so the two grids share their top-left.
  """
  pad_h, pad_w = max(0, height - x.shape[1]), max(0, width - x.shape[2])
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')
  return x[:, :height, :width]


class OSVOS(nn.Module):
  """OSVOS foreground network. Input RGB 0..255 (B, H, W, 3); logits at input size.

  Returns {'sides': [4 x (B, H, W)], 'fused': (B, H, W)} logits; sigmoid('fused') is the mask.
  `modulate` is handed to the backbone (OSMN modulates OSVOS's backbone; see jvos/models/osmn.py).
  """
  backbone: str = 'vgg16'
  input_style: str = 'torch_imagenet'  # Set by the pretrained weights the backbone starts from.
  side_channels: int = 16
  width_multiplier: float = 1.0  # MobileNetV2 only, as its pretrained weights have it.
  output_stride: int = 16  # Dilate the last blocks to keep detail (DeepLab); not VGG16.
  dtype: Any = jnp.float32

  def backbone_module(self) -> nn.Module:
    return backbones.create(self.backbone, self.width_multiplier, self.output_stride,
                            self.dtype)

  @nn.compact
  def __call__(self, images: jax.Array,
               modulate: Callable[[str, jax.Array], jax.Array] | None = None) -> dict[str, Any]:
    height, width = images.shape[1:3]
    x = normalize(images, self.input_style).astype(self.dtype)
    stages = self.backbone_module()(x, modulate)[1:]
    # The fuse conv is a 1x1 conv over the four upsampled 16-channel maps. Upsampling is linear
    # and shared by channels, so fusing (and scoring) each side at its own resolution, then
    # upsampling one channel, computes exactly that, without any 64-channel full-size tensor.
    fuse_kernel = self.param('fuse_kernel', nn.initializers.lecun_normal(),
                             (len(stages) * self.side_channels, 1))
    fuse_parts = jnp.split(fuse_kernel.astype(self.dtype), len(stages))
    side_logits, fused = [], self.param('fuse_bias', nn.initializers.zeros_init(), ())
    for index, (features, fuse_part) in enumerate(zip(stages, fuse_parts), start=2):
      side = Conv(self.side_channels, (3, 3), dtype=self.dtype, name=f'side{index}')(features)
      score = nn.Conv(1, (1, 1), dtype=self.dtype, name=f'score{index}')(side)
      low_resolution = jnp.concatenate([score, side @ fuse_part], -1)
      upsampled = LearnedUpsampling(stride(height, features.shape[1]),
                                    name=f'upsample{index}')(low_resolution)
      upsampled = fit(upsampled, height, width).astype(jnp.float32)
      side_logits.append(upsampled[..., 0])
      fused = fused + upsampled[..., 1]
    return {'sides': side_logits, 'fused': fused}


def class_balanced_bce(logits: jax.Array, labels: jax.Array, valid: jax.Array,
                       hard_weight: float = 0.0) -> jax.Array:
  """OSVOS's class-balanced sigmoid cross-entropy, per pixel, averaged.

  Positives are weighted by the fraction of negatives and vice versa, per image, so a small
  object counts as much as the background around it (the paper's loss divided by the pixel
  count, which keeps the scale independent of resolution). `hard_weight` > 0 weighs each pixel
  up by 1 + hard_weight x its error |p - label| (hard negatives and hard positives, the
  weight itself held out of the gradient), so the pixels still wrong steer the updates.
  """
  valid = valid.astype(jnp.float32)
  positives = jnp.sum(labels * valid, axis=(1, 2), keepdims=True)
  negatives = jnp.sum((1 - labels) * valid, axis=(1, 2), keepdims=True)
  total = jnp.maximum(positives + negatives, 1.0)
  weights = jnp.where(labels > 0.5, negatives / total, positives / total) * valid
  if hard_weight:
    error = jax.lax.stop_gradient(jnp.abs(jax.nn.sigmoid(logits) - labels))
    weights = weights * (1.0 + hard_weight * error)
  bce = optax.sigmoid_binary_cross_entropy(logits, labels)
  return jnp.mean(jnp.sum(weights * bce, axis=(1, 2)) / total[:, 0, 0])


def bce(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
  """Sigmoid cross-entropy averaged over the valid pixels (each image's mean, then the
  batch's): unweighted, so its 0.5 threshold keeps the objects' true extent."""
  valid = valid.astype(jnp.float32)
  total = jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)
  return jnp.mean(jnp.sum(valid * optax.sigmoid_binary_cross_entropy(logits, labels),
                          axis=(1, 2)) / total)


def loss_fn(outputs: dict[str, Any], masks: jax.Array, hard_weight: float = 0.0) -> jax.Array:
  """Deep supervision: the balanced loss on every side output and on the fused output.

  masks: (B, H, W) float, 1 foreground, 0 background, anything else (void) ignored.
  """
  labels = (masks == 1).astype(jnp.float32)
  valid = (masks <= 1)
  return sum(class_balanced_bce(logits, labels, valid, hard_weight)
             for logits in [*outputs['sides'], outputs['fused']])


def probabilities(outputs: dict[str, Any]) -> jax.Array:
  return jax.nn.sigmoid(outputs['fused'])

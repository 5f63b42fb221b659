"""DeepLabV3 (Chen et al., 2017) on MobileNetV2, exactly as in TF's PASCAL TFLite export.

The graph of `deeplabv3_mnv2_pascal_257_float.tflite` (read op by op with the `tflite` parser):
a width-0.5 MobileNetV2 at output stride 8 (blocks 6-12 dilated by 2, 13-16 by 4; 257 -> 33),
then a reduced ASPP without atrous branches, as DeepLab configures it for MobileNetV2:

  image_pooling: global average pool -> 1x1 conv 256 + ReLU -> broadcast back (the export's
      align-corners resize of a 1x1 map to 33x33 is a broadcast);
  aspp0: 1x1 conv 256 + ReLU;
  concat_projection: concat([image_pooling, aspp0]) -> 1x1 conv 256 + ReLU;
  logits/semantic: 1x1 conv to 21 PASCAL classes, then bilinear resize with align_corners=True
      to the input size.

All its convs use TF 'SAME' padding, which Flax's 'SAME' reproduces (see mobilenet_v2.py). The
params do not depend on the output stride: `output_stride=16` runs the same weights ~2.5x
cheaper, at some cost in accuracy.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jvos.models.mobilenet_v2 import MobileNetV2

PASCAL_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
                  'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
                  'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


def align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) linear interpolation weights whose end samples meet the input's."""
  scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
  source = np.arange(out_size) * scale
  lower = np.minimum(np.floor(source).astype(int), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  frac = source - lower
  weights = np.zeros((out_size, in_size), np.float32)
  np.add.at(weights, (np.arange(out_size), lower), 1 - frac)
  np.add.at(weights, (np.arange(out_size), upper), frac)
  return weights


def resize_bilinear_align_corners(x: jax.Array, height: int, width: int) -> jax.Array:
  """TF's `resize_bilinear(align_corners=True)` of (B, h, w, C) maps.

  `jax.image.resize` uses half-pixel centres, which shifts the map by up to half a source pixel
  (4 input pixels at stride 8) against what the DeepLab weights were trained with.
  """
  rows = jnp.asarray(align_corners_matrix(x.shape[1], height), x.dtype)
  cols = jnp.asarray(align_corners_matrix(x.shape[2], width), x.dtype)
  return jnp.einsum('yh,bhwc,xw->byxc', rows, x, cols)


class ASPPHead(nn.Module):
  """DeepLabV3's head for MobileNetV2: image pooling and a 1x1 branch, fused to `features`.

  Input (B, h, w, C) backbone features; returns (B, h, w, features) after the projection.
  """
  features: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = nn.relu(nn.Conv(self.features, (1, 1), dtype=self.dtype, name='image_pooling')(pooled))
    pooled = jnp.broadcast_to(pooled, x.shape[:3] + (self.features,))
    local = nn.relu(nn.Conv(self.features, (1, 1), dtype=self.dtype, name='aspp0')(x))
    fused = jnp.concatenate([pooled, local], axis=-1)
    return nn.relu(nn.Conv(self.features, (1, 1), dtype=self.dtype,
                           name='concat_projection')(fused))


class DeepLabV3(nn.Module):
  """Semantic segmentation. Input (B, H, W, 3) in [-1, 1] ('tflite' style); returns class
  logits (B, H, W, num_classes), float32.

  The defaults are those of the PASCAL TFLite file (257x257 input there; any size works).
  Params: `backbone` (MobileNetV2), `aspp` (ASPPHead), `logits`.
  """
  num_classes: int = len(PASCAL_CLASSES)
  width_multiplier: float = 0.5
  output_stride: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    height, width = x.shape[1:3]
    features = MobileNetV2(self.width_multiplier, self.output_stride, self.dtype,
                           name='backbone')(x)[-1]
    features = ASPPHead(dtype=self.dtype, name='aspp')(features)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='logits')(features)
    return resize_bilinear_align_corners(logits.astype(jnp.float32), height, width)

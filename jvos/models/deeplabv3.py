"""DeepLabV3 (Chen et al., 2017), exactly as TF's PASCAL TFLite export or torchvision builds it.

One module for both layouts, which differ only in configuration (`DeepLabV3`'s attributes):

MobileNetV2, TFLite (the defaults). The graph of `deeplabv3_mnv2_pascal_257_float.tflite`
(read op by op with the `tflite` parser): a width-0.5 MobileNetV2 at output stride 8 (blocks
6-12 dilated by 2, 13-16 by 4; 257 -> 33), then a reduced ASPP without atrous branches, as
DeepLab configures it for MobileNetV2:

  image_pooling: global average pool -> 1x1 conv 256 + ReLU -> broadcast back (the export's
      align-corners resize of a 1x1 map to 33x33 is a broadcast);
  aspp0: 1x1 conv 256 + ReLU;
  concat_projection: concat([image_pooling, aspp0]) -> 1x1 conv 256 + ReLU;
  logits/semantic: 1x1 conv to 21 PASCAL classes, then bilinear resize with align_corners=True
      to the input size.

All its convs use TF 'SAME' padding, which Flax's 'SAME' reproduces (see mobilenet_v2.py). The
params do not depend on the output stride: `output_stride=16` runs the same weights ~2.5x
cheaper, at some cost in accuracy.

ResNet-50/101, torchvision's `deeplabv3_resnet50/101` (`torchvision_deeplabv3`): the ResNet at
output stride 8 (jvos/models/resnet.py; BatchNorm folded into the convs everywhere), the full
ASPP (image pooling, the 1x1 branch `aspp0` and 3x3 branches `aspp1`-`aspp3` at rates 12, 24,
36, each conv 256 + ReLU), the projection, then torchvision's extra 3x3 conv 256 + ReLU
(`head_conv`) before the 1x1 classifier, and bilinear upsampling with align_corners=False
(half-pixel centres, which `jax.image.resize` uses). torchvision's dropout 0.5 after the
projection acts in training only and is left out; its auxiliary FCN head is not built.
Concatenation order is TF's (image pooling first); the importer reorders torchvision's
projection kernel (image pooling last) to match.

`DeepLabV3(...)(x, features_only=True)` returns the ASPP output (the 256-channel projection at
1/output_stride) instead of logits: the features COSNet's co-attention compares.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jvos.errors import InputError
from jvos.models.layers import Conv
from jvos.models.mobilenet_v2 import MobileNetV2
from jvos.models.resnet import ResNet

PASCAL_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
                  'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
                  'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
# Backbone name -> ResNet depth; 'mobilenet_v2' is the other backbone.
RESNET_DEPTHS = {'resnet50': 50, 'resnet101': 101}
BACKBONES = ('mobilenet_v2', *RESNET_DEPTHS)
TORCHVISION_ASPP_RATES = (12, 24, 36)
ASPP_FEATURES = 256


def foreground_logit(class_logits: jax.Array) -> jax.Array:
  """log P(any object class) / P(background) of (..., classes) logits, class 0 the background:
  its sigmoid is 1 - softmax(class_logits)[..., 0]."""
  return jax.nn.logsumexp(class_logits[..., 1:], axis=-1) - class_logits[..., 0]


def classify(features: jax.Array, num_classes: int, head_conv: bool, dtype: Any) -> jax.Array:
  """DeepLabV3's classifier on its ASPP features (B, h, w, C) -> class logits (B, h, w, K).

  Called inside a module's compact method: its params (`head_conv` if set, `logits`) are that
  module's, so DeepLabV3 and COSNet's copy of the classifier load the same pretrained params.
  """
  if head_conv:
    features = nn.relu(Conv(ASPP_FEATURES, (3, 3), dtype=dtype, name='head_conv')(features))
  return Conv(num_classes, (1, 1), dtype=dtype, name='logits')(features)


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
  """DeepLabV3's atrous spatial pyramid pooling, fused to `features` channels.

  Branches, each a conv to `features` + ReLU, concatenated in this order (TF DeepLab's):
  `image_pooling` (global average pool, 1x1 conv, broadcast back), `aspp0` (1x1), and one 3x3
  conv `aspp{i}` at dilation `atrous_rates[i - 1]` per rate (none for the MobileNetV2 export;
  'SAME' is torch's padding=rate for these stride-1 convs); then `concat_projection`, a 1x1
  conv + ReLU. Input (B, h, w, C) backbone features; returns (B, h, w, features).

  The rates are in feature-map pixels and are not rescaled with the output stride: DeepLab
  trains rates (12, 24, 36) at output stride 8 and (6, 12, 18) at 16.
  """
  features: int = ASPP_FEATURES
  atrous_rates: tuple[int, ...] = ()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = nn.relu(Conv(self.features, (1, 1), dtype=self.dtype, name='image_pooling')(pooled))
    branches = [jnp.broadcast_to(pooled, x.shape[:3] + (self.features,)),
                nn.relu(Conv(self.features, (1, 1), dtype=self.dtype, name='aspp0')(x))]
    for index, rate in enumerate(self.atrous_rates, start=1):
      branches.append(nn.relu(Conv(self.features, (3, 3), kernel_dilation=rate, dtype=self.dtype,
                                   name=f'aspp{index}')(x)))
    return nn.relu(Conv(self.features, (1, 1), dtype=self.dtype,
                        name='concat_projection')(jnp.concatenate(branches, axis=-1)))


class DeepLabV3(nn.Module):
  """Semantic segmentation. Input (B, H, W, 3), normalised as the backbone's weights expect
  ('tflite' for the MobileNetV2 export, 'torch_imagenet' for torchvision's); returns class
  logits (B, H, W, num_classes), float32, or with `features_only=True` the ASPP output
  (B, h, w, 256) at 1/output_stride, in `dtype`.

  The defaults are those of the PASCAL TFLite file (257x257 input there; any size works);
  `torchvision_deeplabv3` gives torchvision's configuration.
  Params: `backbone` (MobileNetV2 or ResNet), `aspp` (ASPPHead), `head_conv` (if set),
  `logits`.

  Attributes:
    num_classes: output classes (21: PASCAL VOC's, as both sets of weights have).
    backbone: 'mobilenet_v2', 'resnet50' or 'resnet101'.
    width_multiplier: MobileNetV2's channel multiplier (unused by the ResNets).
    output_stride: 8 or 16 (32 works too); the params do not depend on it.
    aspp_rates: dilations of the ASPP's 3x3 branches; () for none.
    head_conv: a 3x3 conv 256 + ReLU between the ASPP and the classifier (torchvision's).
    align_corners: upsample the logits with align_corners=True (TF's export) or with
      half-pixel centres (False: torchvision's `F.interpolate(align_corners=False)`).
    dtype: compute dtype (e.g. jnp.bfloat16); params stay float32.
  """
  num_classes: int = len(PASCAL_CLASSES)
  backbone: str = 'mobilenet_v2'
  width_multiplier: float = 0.5
  output_stride: int = 8
  aspp_rates: tuple[int, ...] = ()
  head_conv: bool = False
  align_corners: bool = True
  dtype: Any = jnp.float32

  def backbone_module(self) -> nn.Module:
    if self.backbone not in BACKBONES:
      raise InputError(f'DeepLabV3 backbone={self.backbone!r}; use one of {BACKBONES}.')
    if self.backbone == 'mobilenet_v2':
      return MobileNetV2(self.width_multiplier, self.output_stride, self.dtype, name='backbone')
    return ResNet(RESNET_DEPTHS[self.backbone], self.output_stride, self.dtype, name='backbone')

  @nn.compact
  def __call__(self, x: jax.Array, features_only: bool = False) -> jax.Array:
    height, width = x.shape[1:3]
    features = self.backbone_module()(x)[-1]
    features = ASPPHead(atrous_rates=tuple(self.aspp_rates), dtype=self.dtype,
                        name='aspp')(features)
    if features_only:
      return features
    logits = classify(features, self.num_classes, self.head_conv, self.dtype).astype(jnp.float32)
    if self.align_corners:
      return resize_bilinear_align_corners(logits, height, width)
    # Upsampling only (the logits are at 1/output_stride), so the antialiasing of
    # jax.image.resize never applies; its edge weights are renormalised, which is torch's clamp.
    return jax.image.resize(logits, logits.shape[:1] + (height, width) + logits.shape[3:],
                            'bilinear')


def torchvision_deeplabv3(backbone: str = 'resnet50', **attributes: Any) -> DeepLabV3:
  """torchvision's `deeplabv3_resnet50` or `deeplabv3_resnet101` (backbone 'resnet101').

  Output stride 8, ASPP rates 12, 24, 36, the 3x3 head conv, half-pixel upsampling; other
  `DeepLabV3` attributes (num_classes, dtype, output_stride...) can be given.
  """
  config = dict(backbone=backbone, output_stride=8, aspp_rates=TORCHVISION_ASPP_RATES,
                head_conv=True, align_corners=False)
  return DeepLabV3(**{**config, **attributes})

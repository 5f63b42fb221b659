"""MobileNetV2 (Sandler et al., CVPR 2018) as a multi-scale feature extractor.

The layout of TF-slim's `mobilenet_v2`, which both pretrained TFLite files come from: a
stride-2 3x3 stem, then 17 inverted residual blocks (1x1 expand, 3x3 depthwise, linear 1x1
project, identity shortcut where shapes allow). Batch norm is folded into the conv biases in
those files, so every conv here has a bias and there is no BatchNorm. The classifier (the 1x1
conv to 1280 channels, pooling, logits) is left out: segmentation heads start from the blocks.

Param names: `stem`, then `block0` ... `block16`, each with `expand` (absent in block0),
`depthwise` and `project` convs; slim's `Conv`, `expanded_conv_N/{expand,depthwise,project}`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.errors import InputError
from jvos.models.layers import Conv, DepthwiseConv

STEM_CHANNELS = 32
# (expansion, channels, repeats, stride) per group of blocks, as in the paper's Table 2.
BLOCK_GROUPS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
OUTPUT_STRIDES = (8, 16, 32)


def make_divisible(value: float, divisor: int, min_value: int = 8) -> int:
  """Slim's channel rounding: nearest multiple of `divisor`, never 10% below `value`."""
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """Channels at a width multiplier, rounded as DeepLab rounds them.

  DeepLab rounds to multiples of 8 only at full width: its width-0.5 checkpoint (the PASCAL
  TFLite file) has 12 channels where slim's default rounding would give 16.
  """
  return make_divisible(channels * width_multiplier, 8 if width_multiplier == 1.0 else 1)


def block_plan(width_multiplier: float) -> list[tuple[int, int, int]]:
  """(expansion, output channels, nominal stride) of each of the 17 blocks."""
  plan = []
  for expansion, channels, repeats, stride in BLOCK_GROUPS:
    out = scaled_channels(channels, width_multiplier)
    plan += [(expansion, out, stride)] + [(expansion, out, 1)] * (repeats - 1)
  return plan


def modulation_channels(width_multiplier: float) -> dict[str, int]:
  """block name -> channels of its depthwise conv's (post-ReLU6) output, where a `modulate`
  hook may act."""
  channels, in_channels = {}, scaled_channels(STEM_CHANNELS, width_multiplier)
  for index, (expansion, out_channels, _) in enumerate(block_plan(width_multiplier)):
    channels[f'block{index}'] = (make_divisible(in_channels * expansion, 8) if expansion != 1
                                 else in_channels)
    in_channels = out_channels
  return channels


def stage_ends() -> tuple[int, ...]:
  """Index of the last block at each nominal stride 2, 4, 8, 16, 32: (0, 2, 5, 12, 16)."""
  strides = [stride for _, _, stride in block_plan(1.0)]
  return tuple(i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] == 2)


class InvertedResidual(nn.Module):
  """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> project (1x1, linear) [+ input]."""
  expansion: int
  channels: int
  stride: int
  dilation: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               modulate: Callable[[str, jax.Array], jax.Array] | None = None) -> jax.Array:
    in_channels = x.shape[-1]
    y = x
    if self.expansion != 1:
      expanded = make_divisible(in_channels * self.expansion, 8)
      y = nn.relu6(Conv(expanded, (1, 1), dtype=self.dtype, name='expand')(y))
    # Flax 'SAME' pads as TF and TFLite do: for stride 2 on an even size, the extra row and
    # column go at the bottom/right; odd sizes such as 257 are padded symmetrically.
    y = nn.relu6(DepthwiseConv(stride=self.stride, dilation=self.dilation, dtype=self.dtype,
                               name='depthwise')(y))
    if modulate is not None:
      y = modulate(self.name, y)
    y = Conv(self.channels, (1, 1), dtype=self.dtype, name='project')(y)
    if self.stride == 1 and in_channels == self.channels:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 trunk. Input (B, H, W, 3) in [-1, 1] ('tflite' style).

  Returns five stage maps, NHWC, each the output of the last block at nominal stride 2, 4, 8,
  16 and 32 (blocks 0, 2, 5, 12, 16; 16, 24, 32, 96, 320 channels at width 1.0).

  Attributes:
    width_multiplier: channel multiplier (1.0 for the ImageNet file, 0.5 for the DeepLab one).
    output_stride: 32, or 16 / 8 for dense prediction: once the stride reaches it, later
      blocks keep stride 1 and dilate their depthwise convs instead (DeepLab's atrous rule), so
      the deeper stages stay at 1/output_stride.
    dtype: compute dtype (e.g. jnp.bfloat16); params stay float32.

  `modulate(name, x)`, if given, is applied to each block's depthwise output after its ReLU6
  (OSMN's scales and shifts; see `modulation_channels`).
  """
  width_multiplier: float = 1.0
  output_stride: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               modulate: Callable[[str, jax.Array], jax.Array] | None = None,
               ) -> tuple[jax.Array, ...]:
    if self.output_stride not in OUTPUT_STRIDES:
      raise InputError(f'MobileNetV2 output_stride={self.output_stride}; use one of '
                       f'{OUTPUT_STRIDES}.')
    x = nn.relu6(nn.Conv(scaled_channels(STEM_CHANNELS, self.width_multiplier), (3, 3),
                         strides=2, padding='SAME', dtype=self.dtype, name='stem')(x))
    current_stride, dilation = 2, 1
    ends = stage_ends()
    stages = []
    for index, (expansion, channels, stride) in enumerate(block_plan(self.width_multiplier)):
      block_stride, block_dilation = stride, dilation
      if current_stride == self.output_stride:
        # Slim's order: this block keeps the old dilation, the blocks after it get the new one.
        block_stride, dilation = 1, dilation * stride
      else:
        current_stride *= stride
      x = InvertedResidual(expansion, channels, block_stride, block_dilation, self.dtype,
                           name=f'block{index}')(x, modulate)
      if index in ends:
        stages.append(x)
    return tuple(stages)

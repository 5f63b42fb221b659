"""ResNet-50 / ResNet-101 (He et al., CVPR 2016) as a multi-scale feature extractor.

torchvision's layout (v1.5: the stride of a block sits on its 3x3 conv, not the first 1x1),
which RVOS's encoder and DeepLabV3-ResNet start from: a 7x7/2 conv and a 3x3/2 max pool, then
layer1..layer4 of Bottleneck blocks (1x1 -> 3x3 -> 1x1 at 4x the width, plus the input; the
first block of each layer takes the input through a 1x1 conv `downsample`). The classifier
(`avgpool`, `fc`) is left out: segmentation heads start from the stages.

Batch norm is frozen and folded into the convs, so every conv has a bias and there is no
BatchNorm module (as in mobilenet_v2.py, whose files come folded). VOS training runs on batches
of a few frames of one video, whose statistics are far too noisy to train BN on, so RVOS,
COSNet and OSVOS-style fine-tuning all keep the ImageNet (or COCO) statistics fixed; in
inference mode BN is then the affine map gamma * (x - mean) / sqrt(var + eps) + beta, which the
importer (`jvos.weights.resnet`) multiplies into the conv kernel and bias (eps 1e-5, torch's).

Padding is torch's (explicit and symmetric: 3 for the 7x7 conv, the dilation for 3x3 convs,
none for 1x1), not 'SAME', which pads a stride-2 conv on an even size at the bottom/right only.

Param names mirror torchvision's modules, with `layerL_B` for torchvision's `layerL.B`: `conv1`
(the stem), then `layer1_0` ... `layer4_2`, each with `conv1`, `conv2`, `conv3` and, in the
first block of a layer, `downsample`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.errors import InputError
from jvos.models.layers import Conv

# Bottleneck blocks in layer1..layer4.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
LAYER_WIDTHS = (64, 128, 256, 512)  # Width of the 3x3 conv; a block outputs 4x that.
EXPANSION = 4
STEM_CHANNELS = 64
OUTPUT_STRIDES = (8, 16, 32)


def modulation_channels(depth: int) -> dict[str, int]:
  """block name -> channels of its output (after the final ReLU), where `modulate` may act."""
  return {name: width * EXPANSION for name, width, _, _ in block_plan(depth, 32)}


def block_plan(depth: int, output_stride: int) -> list[tuple[str, int, int, int]]:
  """(name, width, stride, dilation) of every Bottleneck block, in forward order.

  torchvision's `replace_stride_with_dilation`: once the stride reaches `output_stride`, a
  layer's first block keeps stride 1 and the dilation so far, and its other blocks dilate by
  the stride it gave up (at 8: layer3 blocks 1.. by 2, layer4 block 0 by 2, the rest by 4).
  """
  plan, current_stride, dilation = [], 4, 1
  for layer, (blocks, width) in enumerate(zip(DEPTHS[depth], LAYER_WIDTHS), start=1):
    stride, first_dilation = (1 if layer == 1 else 2), dilation
    if stride > 1 and current_stride == output_stride:
      stride, dilation = 1, dilation * stride
    current_stride *= stride
    plan.append((f'layer{layer}_0', width, stride, first_dilation))
    plan += [(f'layer{layer}_{index}', width, 1, dilation) for index in range(1, blocks)]
  return plan


class Bottleneck(nn.Module):
  """1x1 (ReLU) -> 3x3 at `stride`, `dilation` (ReLU) -> 1x1 to 4 * width, + shortcut, ReLU."""
  width: int
  stride: int
  dilation: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_channels = self.width * EXPANSION
    y = nn.relu(Conv(self.width, (1, 1), padding=0, dtype=self.dtype, name='conv1')(x))
    y = nn.relu(Conv(self.width, (3, 3), strides=self.stride, padding=self.dilation,
                     kernel_dilation=self.dilation, dtype=self.dtype, name='conv2')(y))
    y = Conv(out_channels, (1, 1), padding=0, dtype=self.dtype, name='conv3')(y)
    if self.stride != 1 or x.shape[-1] != out_channels:
      x = Conv(out_channels, (1, 1), strides=self.stride, padding=0, dtype=self.dtype,
               name='downsample')(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """ResNet trunk. Input (B, H, W, 3) normalised 'torch_imagenet' style.

  Returns five stage maps, NHWC: the stem conv after its ReLU (before the max pool) at stride
  2 with 64 channels, then layer1..layer4 at strides 4, 8, 16, 32 with 256, 512, 1024, 2048
  (at output stride 16 or 8 the last stages stay at 1/16 or 1/8). Sizes are torch's: a side of
  n pixels becomes ceil(n / 2) at each stride 2.

  Attributes:
    depth: 50 or 101.
    output_stride: 32, or 16 / 8 for dense prediction (DeepLab's atrous rule, see
      `block_plan`); the params do not depend on it.
    dtype: compute dtype (e.g. jnp.bfloat16); params stay float32.

  `modulate(name, x)`, if given, is applied to every block's output (OSMN's scales and shifts;
  see `modulation_channels`).
  """
  depth: int = 50
  output_stride: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               modulate: Callable[[str, jax.Array], jax.Array] | None = None,
               ) -> tuple[jax.Array, ...]:
    if self.depth not in DEPTHS:
      raise InputError(f'ResNet depth={self.depth}; use one of {tuple(DEPTHS)}.')
    if self.output_stride not in OUTPUT_STRIDES:
      raise InputError(f'ResNet output_stride={self.output_stride}; use one of '
                       f'{OUTPUT_STRIDES}.')
    x = nn.relu(Conv(STEM_CHANNELS, (7, 7), strides=2, padding=3, dtype=self.dtype,
                     name='conv1')(x))
    stages = [x]
    # Max pooling pads with -inf, as torch's does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    plan = block_plan(self.depth, self.output_stride)
    for index, (name, width, stride, dilation) in enumerate(plan):
      x = Bottleneck(width, stride, dilation, self.dtype, name=name)(x)
      if modulate is not None:
        x = modulate(name, x)
      if index + 1 == len(plan) or plan[index + 1][0].endswith('_0'):
        stages.append(x)
    return tuple(stages)

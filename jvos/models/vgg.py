"""VGG-16 convolutional trunk (Simonyan & Zisserman, 2015), as a multi-scale feature extractor.

Thirteen 3x3 convs with ReLU in five stages, a 2x2 max pool between stages and none after the
last, as OSVOS and OSMN use it. Conv `convS_I` is conv I of stage S, the name the importers in
`jvos.weights.vgg16` map torchvision's `features.N` and Keras's `blockS_convI` onto.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models.layers import Conv

# (convs, channels) per stage.
STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def conv_names() -> tuple[str, ...]:
  """Names of the 13 convs in forward order: conv1_1, conv1_2, conv2_1, ..., conv5_3."""
  return tuple(f'conv{stage}_{index}' for stage, (convs, _) in enumerate(STAGES, start=1)
               for index in range(1, convs + 1))


def modulation_channels() -> dict[str, int]:
  """conv name -> channels of its (post-ReLU) output, where a `modulate` hook may act."""
  return {f'conv{stage}_{index}': channels
          for stage, (convs, channels) in enumerate(STAGES, start=1)
          for index in range(1, convs + 1)}


class VGG16(nn.Module):
  """VGG-16 without the classifier. Input (B, H, W, 3), normalised as the weights expect.

  Returns the five stage outputs (after the ReLU of each stage's last conv), NHWC: stage 1 at
  full resolution with 64 channels, ..., stage 5 at 1/16 with 512.

  `modulate(name, x)`, if given, is applied to the output of every conv after its ReLU (OSMN's
  per-channel scales and per-pixel shifts; see `modulation_channels`).

  Attributes:
    dtype: compute dtype (e.g. jnp.bfloat16); params stay float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               modulate: Callable[[str, jax.Array], jax.Array] | None = None,
               ) -> tuple[jax.Array, ...]:
    stages = []
    for stage, (convs, channels) in enumerate(STAGES, start=1):
      if stage > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for index in range(1, convs + 1):
        name = f'conv{stage}_{index}'
        x = nn.relu(Conv(channels, (3, 3), padding='SAME', dtype=self.dtype, name=name)(x))
        if modulate is not None:
          x = modulate(name, x)
      stages.append(x)
    return tuple(stages)

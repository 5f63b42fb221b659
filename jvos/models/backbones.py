"""The backbones every network can stand on, by name: each returns five stage maps, NHWC, at
nominal strides 2, 4, 8, 16 and 32 (or dilated, see `output_stride`), and takes the
`modulate(name, x)` hook OSMN uses.

    stages = backbones.create('mobilenet_v2', width_multiplier=0.5, name='backbone')(x)

Pretrained weights for each come from `jvos.weights.load_pretrained(path, name)`: a torchvision
.pth or Keras .h5 for vgg16, a .tflite for mobilenet_v2, a torchvision .pth for the ResNets.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jvos.errors import InputError
from jvos.models import mobilenet_v2
from jvos.models import resnet
from jvos.models import vgg

NAMES = ('vgg16', 'mobilenet_v2', 'resnet50', 'resnet101')
# The image normalisation each backbone's usual pretrained weights expect.
INPUT_STYLES = {'vgg16': 'torch_imagenet', 'mobilenet_v2': 'tflite',
                'resnet50': 'torch_imagenet', 'resnet101': 'torch_imagenet'}


def create(backbone: str, width_multiplier: float = 1.0, output_stride: int = 32,
           dtype: Any = jnp.float32, name: str = 'backbone') -> nn.Module:
  """The backbone module `backbone` names (width_multiplier: MobileNetV2 only; output_stride:
  MobileNetV2 and ResNets; VGG16 has no stride-32 stage and ignores it)."""
  if backbone == 'vgg16':
    return vgg.VGG16(dtype=dtype, name=name)
  if backbone == 'mobilenet_v2':
    return mobilenet_v2.MobileNetV2(width_multiplier=width_multiplier,
                                    output_stride=output_stride, dtype=dtype, name=name)
  if backbone in ('resnet50', 'resnet101'):
    return resnet.ResNet(depth=int(backbone[len('resnet'):]), output_stride=output_stride,
                         dtype=dtype, name=name)
  raise InputError(f'Backbone {backbone!r} is not one of {NAMES}.')


def modulation_channels(backbone: str, width_multiplier: float = 1.0) -> dict[str, int]:
  """Every layer of `backbone` a `modulate` hook reaches -> its channels."""
  if backbone == 'vgg16':
    return vgg.modulation_channels()
  if backbone == 'mobilenet_v2':
    return mobilenet_v2.modulation_channels(width_multiplier)
  return resnet.modulation_channels(int(backbone[len('resnet'):]))

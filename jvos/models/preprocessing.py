"""The one place that turns RGB pixels into what a pretrained network was trained on.

Each set of pretrained weights expects its own input convention, and the importers in
`jvos.weights` report which one as a style name:

  'torch_imagenet': RGB in [0, 1], minus the ImageNet mean, over the ImageNet std (torchvision).
  'caffe_bgr': BGR in 0..255 minus the ImageNet mean pixel (Keras VGG16, the original Caffe
      models).
  'tflite': RGB mapped linearly to [-1, 1] (the TF-slim MobileNetV2 and DeepLab exports).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jvos.errors import InputError

STYLES = ('torch_imagenet', 'caffe_bgr', 'tflite')

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def normalize(images: jax.Array | np.ndarray, style: str) -> jax.Array:
  """Network input, float32, from RGB images (..., H, W, 3) with values in 0..255.

  Args:
    images: uint8 or float RGB pixels in 0..255 (not already scaled to [0, 1]).
    style: one of `STYLES`, as returned with the weights by `jvos.weights.load_pretrained`.
  """
  if style not in STYLES:
    raise InputError(f'Unknown input style {style!r}; use one of {STYLES} (the importer of the '
                     'pretrained weights returns the style they need).')
  pixels = jnp.asarray(images, jnp.float32)
  if style == 'torch_imagenet':
    return (pixels / 255.0 - jnp.asarray(IMAGENET_MEAN_RGB)) / jnp.asarray(IMAGENET_STD_RGB)
  if style == 'caffe_bgr':
    return pixels[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR)
  return pixels / 127.5 - 1.0

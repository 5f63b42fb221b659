"""Pretrained weights: one entry point, `load_pretrained`, that picks the reader by suffix.

  .tflite     -> 'mobilenet_v2' or 'deeplabv3' (TF-slim exports; `jvos.weights.tflite`)
  .pth / .pt  -> 'vgg16' (torchvision state_dict; `jvos.weights.vgg16`)
  .pth / .pt  -> 'resnet50', 'resnet101', 'deeplabv3_resnet50', 'deeplabv3_resnet101'
                 (torchvision state_dicts, BatchNorm folded; `jvos.weights.resnet`)
  .h5         -> 'vgg16' (Keras notop weights; `jvos.weights.vgg16`)

Each returns a `Pretrained(module, params, style)`: the module configured as the weights need
(clone it to change e.g. `output_stride` or `dtype`; the params do not depend on those), its
params, and the `jvos.models.preprocessing.normalize` style of the images they were trained on.
"""

import functools
import pathlib
from typing import Any

import jax
import numpy as np

from jvos.errors import InputError
from jvos.weights import resnet, tflite, vgg16
from jvos.weights.mapping import Pretrained

_LOADERS = {
    ('.tflite', 'mobilenet_v2'): tflite.load_mobilenet_v2,
    ('.tflite', 'deeplabv3'): tflite.load_deeplabv3,
    ('.pth', 'vgg16'): vgg16.load_torch,
    ('.pt', 'vgg16'): vgg16.load_torch,
    ('.h5', 'vgg16'): vgg16.load_keras,
    ('.pth', 'resnet50'): functools.partial(resnet.load_resnet, depth=50),
    ('.pth', 'resnet101'): functools.partial(resnet.load_resnet, depth=101),
    ('.pth', 'deeplabv3_resnet50'): functools.partial(resnet.load_deeplabv3, depth=50),
    ('.pth', 'deeplabv3_resnet101'): functools.partial(resnet.load_deeplabv3, depth=101),
    ('.pt', 'resnet50'): functools.partial(resnet.load_resnet, depth=50),
    ('.pt', 'resnet101'): functools.partial(resnet.load_resnet, depth=101),
    ('.pt', 'deeplabv3_resnet50'): functools.partial(resnet.load_deeplabv3, depth=50),
    ('.pt', 'deeplabv3_resnet101'): functools.partial(resnet.load_deeplabv3, depth=101),
}


def load_pretrained(path: str | pathlib.Path, model: str) -> Pretrained:
  """Reads the pretrained weights of `model` ('vgg16', 'mobilenet_v2', 'deeplabv3', 'resnet50',
  'deeplabv3_resnet101'...: see `_LOADERS`) at `path`."""
  path = pathlib.Path(path)
  loader = _LOADERS.get((path.suffix.lower(), model))
  if loader is None:
    accepted = ', '.join(f'{suffix} for {name}' for suffix, name in _LOADERS)
    raise InputError(f'Cannot load {path} as {model!r} weights: jvos reads {accepted}.')
  if not path.is_file():
    raise InputError(f'Pretrained weights {path} do not exist; check the path given as '
                     'model.pretrained (jvos downloads nothing).')
  return loader(path)


def pretrained_params(path: str | pathlib.Path, model: str, input_style: str,
                      expected: Any) -> Any:
  """The params of `model` in `path`, for a network part whose params look like `expected`.

  Checks the input style the network normalises its images with, leaves out what the part
  does not use (a classifier the file holds) and fails, naming the file, if the rest does not
  have `expected`'s shapes (e.g. a MobileNetV2 of another width).
  """
  pretrained = load_pretrained(path, model)
  if pretrained.style != input_style:
    raise InputError(f'{path} expects input style {pretrained.style!r} but the model is '
                     f'configured for {input_style!r}; set --config.model.input_style='
                     f'{pretrained.style}.')
  params = {key: value for key, value in pretrained.params.items() if key in expected}
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  if shapes(params) != shapes(expected):
    raise InputError(f'{path} does not fit the {model} backbone configured (check '
                     'model.width_multiplier: the DeepLabV3 .tflite trunk has width 0.5, the '
                     'ImageNet one 1.0).')
  return params

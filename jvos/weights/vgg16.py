"""ImageNet VGG-16 weights from a torchvision state_dict (.pth) or a Keras notop file (.h5).

torchvision: `features.{0,2,5,...,28}.{weight,bias}`, kernels OIHW, trained on RGB in [0, 1]
normalised by the ImageNet mean/std ('torch_imagenet'); its classifier (`classifier.*`) is
dropped. Keras: layer groups `block1_conv1` ... `block5_conv3` listed in the `layer_names`
attribute, each with its `weight_names` (kernel HWIO, then bias), trained on caffe-style BGR
0..255 input minus the mean pixel ('caffe_bgr'); the kernels keep their BGR input order,
which is why the two files need different preprocessing. A top file's fc1/fc2/predictions
are dropped.
"""

import pathlib

import h5py
import numpy as np

from jvos.errors import InputError
from jvos.models.vgg import VGG16, conv_names
from jvos.weights.mapping import ParamPath, Pretrained, fill_params
from jvos.weights.torch_state import flax_layout, read_torch_state_dict

TORCH_STYLE = 'torch_imagenet'
KERAS_STYLE = 'caffe_bgr'
# Position of each conv in torchvision's `features` Sequential (ReLUs and pools in between).
TORCH_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TORCH_NAMES = dict(zip(conv_names(), TORCH_FEATURE_INDICES))
_TORCH_LEAVES = {'kernel': 'weight', 'bias': 'bias'}
_KERAS_LEAVES = ('kernel', 'bias')  # The order Keras lists a conv's weights in.
_TORCH_HEAD = ('classifier.',)
_KERAS_HEAD = ('fc1/', 'fc2/', 'predictions/')


def read_keras_h5(path: pathlib.Path) -> dict[str, np.ndarray]:
  """'{layer}/kernel' and '{layer}/bias' of every layer with weights in a Keras .h5 file."""
  try:
    file = h5py.File(path, 'r')
  except OSError as e:
    raise InputError(f'{path} is not a readable HDF5 file ({e}).') from None
  with file:
    # A whole-model save keeps the weights one group down.
    group = file['model_weights'] if 'model_weights' in file else file
    if 'layer_names' not in group.attrs:
      raise InputError(f'{path} has no `layer_names` attribute: it is not a Keras (TF 2.x style) '
                       'weights file such as vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5.')
    tensors = {}
    for layer in group.attrs['layer_names']:
      layer = layer.decode() if isinstance(layer, bytes) else str(layer)
      weight_names = [n.decode() if isinstance(n, bytes) else str(n)
                      for n in group[layer].attrs.get('weight_names', ())]
      if weight_names and len(weight_names) != len(_KERAS_LEAVES):
        raise InputError(f'{path}: layer {layer} has {len(weight_names)} weights '
                         f'({weight_names}); VGG16 layers have a kernel and a bias.')
      for leaf, weight_name in zip(_KERAS_LEAVES, weight_names):
        tensors[f'{layer}/{leaf}'] = np.asarray(group[layer][weight_name], np.float32)
  return tensors


def _torch_source(param_path: ParamPath) -> str:
  """('conv2_1', 'kernel') -> 'features.5.weight'."""
  conv, leaf = param_path
  return f'features.{_TORCH_NAMES[conv]}.{_TORCH_LEAVES[leaf]}'


def _keras_source(param_path: ParamPath) -> str:
  """('conv2_1', 'kernel') -> 'block2_conv1/kernel'."""
  conv, leaf = param_path
  stage, index = conv.removeprefix('conv').split('_')
  return f'block{stage}_conv{index}/{leaf}'


def load_torch(path: pathlib.Path) -> Pretrained:
  """VGG16 from torchvision's state_dict (e.g. vgg16-397923af.pth); 'torch_imagenet' input."""
  module = VGG16()
  tensors = flax_layout(read_torch_state_dict(path))
  params = fill_params(module, tensors, _torch_source, path, dropped=_TORCH_HEAD,
                       fix='Pass torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict() '
                           'saved with torch.save.')
  return Pretrained(module, params, TORCH_STYLE)


def load_keras(path: pathlib.Path) -> Pretrained:
  """VGG16 from Keras's vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5; 'caffe_bgr' input."""
  module = VGG16()
  params = fill_params(module, read_keras_h5(path), _keras_source, path, dropped=_KERAS_HEAD,
                       fix='Pass the Keras VGG16 weights file '
                           '(vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5).')
  return Pretrained(module, params, KERAS_STYLE)

"""torchvision ResNet-50/101 and DeepLabV3-ResNet-50/101 state_dicts (.pth) -> Flax params.

ResNet (`torchvision.models.resnet50/101`): `conv1.weight` + `bn1.*`, then per block
`layerL.B.convN.weight` + `layerL.B.bnN.*` (N = 1..3) and, in block 0 of each layer,
`layerL.0.downsample.0.weight` + `downsample.1.*`; the classifier `fc.*` is dropped.

DeepLabV3 (`torchvision.models.segmentation.deeplabv3_resnet50/101`): the same ResNet under
`backbone.` (no fc), and `classifier` = [ASPP, 3x3 conv, BN, ReLU, 1x1 conv]:
`classifier.0.convs.0.{0,1}` (1x1 branch: conv, BN), `classifier.0.convs.{1,2,3}.{0,1}` (the
atrous branches), `classifier.0.convs.4.{1,2}` (image pooling: conv, BN after the pool),
`classifier.0.project.{0,1}`, `classifier.1` + `classifier.2` (head conv, BN) and
`classifier.4.{weight,bias}` (the classifier); the auxiliary head `aux_classifier.*` is dropped.

Every BatchNorm is folded into its conv (`torch_state.fold_batch_norms`, eps 1e-5): the models
keep BN frozen (see jvos/models/resnet.py). Both were trained on 'torch_imagenet' input.
"""

import pathlib

import numpy as np

from jvos.errors import InputError
from jvos.models.deeplabv3 import torchvision_deeplabv3
from jvos.models.resnet import DEPTHS, ResNet
from jvos.weights.mapping import ParamPath, Pretrained, fill_params
from jvos.weights.torch_state import batch_norm_of, fold_batch_norms, read_torch_state_dict

STYLE = 'torch_imagenet'
_RESNET_HEAD = ('fc.',)
_DEEPLAB_HEAD = ('aux_classifier.',)
_DEEPLAB_PREFIX = 'backbone.'
# The depths differ only in layer3: 6 blocks in ResNet-50, 23 in ResNet-101.
_DEPTH_BY_LAYER3 = {blocks[2]: depth for depth, blocks in DEPTHS.items()}
# Flax ASPP branch -> its conv in torchvision's `classifier.0` (the ASPP module).
_ASPP_CONVS = {'aspp0': 'convs.0.0', 'aspp1': 'convs.1.0', 'aspp2': 'convs.2.0',
               'aspp3': 'convs.3.0', 'image_pooling': 'convs.4.1', 'concat_projection': 'project.0'}
_PROJECTION = 'classifier.0.project.0.weight'
_CLASSIFIER = 'classifier.4'


def _conv_source(conv: str, leaf: str, batch_norm: bool = True) -> str:
  """The tensor of a Flax conv param: the torch conv's weight, or its bias, which for a conv
  followed by BN is the folded BN (named after the BN, see `fold_batch_norms`)."""
  if leaf == 'kernel':
    return f'{conv}.weight'
  return batch_norm_of(conv) if batch_norm else f'{conv}.bias'


def _resnet_source(param_path: ParamPath, prefix: str = '') -> str:
  """('conv1', 'kernel') -> 'conv1.weight'; ('layer2_0', 'conv3', 'bias') -> 'layer2.0.bn3';
  ('layer2_0', 'downsample', 'bias') -> 'layer2.0.downsample.1'."""
  *modules, leaf = param_path
  if len(modules) == 1:
    return _conv_source(prefix + modules[0], leaf)
  block, conv = modules
  layer, index = block.split('_')
  conv = 'downsample.0' if conv == 'downsample' else conv
  return _conv_source(f'{prefix}{layer}.{index}.{conv}', leaf)


def _deeplab_source(param_path: ParamPath) -> str:
  """('backbone', ...) as `_resnet_source` under 'backbone.'; ('aspp', 'aspp2', 'bias') ->
  'classifier.0.convs.2.1'; head_conv -> 'classifier.1'/'.2'; logits -> 'classifier.4'."""
  part, *rest = param_path
  if part == 'backbone':
    return _resnet_source(tuple(rest), _DEEPLAB_PREFIX)
  if part == 'aspp':
    branch, leaf = rest
    return _conv_source(f'classifier.0.{_ASPP_CONVS[branch]}', leaf)
  if part == 'head_conv':
    return _conv_source('classifier.1', rest[-1])
  return _conv_source(_CLASSIFIER, rest[-1], batch_norm=False)


def _check_depth(tensors: dict[str, np.ndarray], depth: int, path: pathlib.Path,
                model: str = 'resnet', prefix: str = '') -> None:
  """Fails, naming the loader that fits, when the file holds the other ResNet depth.

  `fill_params` would reject the file too, but only as a list of missing or unexpected blocks.
  `model` is the loader name without its depth ('resnet', 'deeplabv3_resnet').
  """
  blocks = {name.removeprefix(prefix).split('.')[1] for name in tensors
            if name.startswith(f'{prefix}layer3.')}
  file_depth = _DEPTH_BY_LAYER3.get(len(blocks))
  if file_depth is not None and file_depth != depth:
    loader = f'{model}{file_depth}'
    raise InputError(f'{path} holds a ResNet-{file_depth} ({len(blocks)} blocks in layer3), '
                     f'not a ResNet-{depth}: load it as {loader!r}.')


def load_resnet(path: pathlib.Path, depth: int) -> Pretrained:
  """ResNet-`depth` from torchvision's state_dict (e.g. resnet50-0676ba61.pth), output stride
  32 (clone the module for 16 or 8); 'torch_imagenet' input."""
  tensors = read_torch_state_dict(path)
  _check_depth(tensors, depth, path)
  module = ResNet(depth)
  params = fill_params(module, fold_batch_norms(tensors, path), _resnet_source, path,
                       dropped=_RESNET_HEAD,
                       fix=f'Pass torchvision.models.resnet{depth}(weights=...).state_dict() saved '
                           f'with torch.save (a deeplabv3_resnet{depth} file loads as '
                           f"'deeplabv3_resnet{depth}').")
  return Pretrained(module, params, STYLE)


def load_deeplabv3(path: pathlib.Path, depth: int) -> Pretrained:
  """torchvision's DeepLabV3-ResNet-`depth` (e.g. deeplabv3_resnet50_coco-cd0a2569.pth) as
  `torchvision_deeplabv3`, with as many classes as its classifier has; 'torch_imagenet' input."""
  tensors = read_torch_state_dict(path)
  _check_depth(tensors, depth, path, 'deeplabv3_resnet', _DEEPLAB_PREFIX)
  classifier = tensors.get(f'{_CLASSIFIER}.weight')
  module = torchvision_deeplabv3(f'resnet{depth}', **(
      {'num_classes': classifier.shape[0]} if classifier is not None else {}))
  tensors = fold_batch_norms(tensors, path)
  if _PROJECTION in tensors and tensors[_PROJECTION].ndim == 4:  # Else fill_params says why.
    # torchvision concatenates the image pooling branch last, DeepLabV3 (TF's order) first: its
    # input channels, the last `features` of the projection kernel (HWIO), move to the front.
    projection = tensors[_PROJECTION]
    tensors[_PROJECTION] = np.roll(projection, projection.shape[-1], axis=2)
  params = fill_params(module, tensors, _deeplab_source, path, dropped=_DEEPLAB_HEAD,
                       fix=f'Pass torchvision.models.segmentation.deeplabv3_resnet{depth}'
                           '(weights=...).state_dict() saved with torch.save (an ImageNet '
                           f"resnet{depth} file loads as 'resnet{depth}').")
  return Pretrained(module, params, STYLE)

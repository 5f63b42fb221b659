"""ResNet and DeepLabV3-ResNet: the torchvision importers against torch's own forward.

No ResNet weights exist on this machine and torchvision is not installed, so the test builds
torch modules with torchvision's structure (hence its state_dict keys, `num_batches_tracked`
included; their parameter counts equal torchvision's published ones), fills them with random
weights and random BatchNorm statistics, saves their state_dicts, imports them, and compares
the Flax forward with the torch one in eval mode (BN on its running statistics, unfolded).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvos.errors import InputError
from jvos.models.deeplabv3 import ASPPHead, DeepLabV3, TORCHVISION_ASPP_RATES
from jvos.models.resnet import ResNet
from jvos.weights import load_pretrained
from jvos.weights.mapping import param_shapes

torch = pytest.importorskip('torch')
nn, functional = torch.nn, torch.nn.functional

RESNET50, RESNET101 = (3, 4, 6, 3), (3, 4, 23, 3)
# torchvision's `num_params` of ResNet50/101_Weights.IMAGENET1K_V1 and of
# DeepLabV3_ResNet50/101_Weights.COCO_WITH_VOC_LABELS_V1 (with the auxiliary head).
TORCHVISION_PARAMS = {('resnet', RESNET50): 25_557_032, ('resnet', RESNET101): 44_549_160,
                      ('deeplab', RESNET50): 42_004_074, ('deeplab', RESNET101): 60_996_202}
STAGE_CHANNELS = [64, 256, 512, 1024, 2048]


class TorchBottleneck(nn.Module):
  """torchvision's Bottleneck (v1.5: stride on the 3x3 conv), same module names."""

  def __init__(self, in_channels, width, stride, dilation, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation,
                           bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(4 * width)
    self.downsample = nn.Sequential(nn.Conv2d(in_channels, 4 * width, 1, stride, bias=False),
                                    nn.BatchNorm2d(4 * width)) if downsample else None

  def forward(self, x):
    y = functional.relu(self.bn1(self.conv1(x)))
    y = functional.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return functional.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TorchResNet(nn.Module):
  """torchvision's ResNet with Bottleneck blocks, `replace_stride_with_dilation` included."""

  def __init__(self, blocks, dilate=(False, False, False)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    in_channels, dilation = 64, 1
    for index, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
      stride, first_dilation = (2, dilation) if index else (1, dilation)
      if index and dilate[index - 1]:
        dilation, stride = dilation * stride, 1
      # In ResNet-50/101 every layer's first block changes the channels, so has a downsample.
      layer = [TorchBottleneck(in_channels, width, stride, first_dilation, True)]
      layer += [TorchBottleneck(4 * width, width, 1, dilation, False) for _ in range(count - 1)]
      setattr(self, f'layer{index + 1}', nn.Sequential(*layer))
      in_channels = 4 * width
    self.fc = nn.Linear(2048, 1000)

  def stages(self, x):
    x = functional.relu(self.bn1(self.conv1(x)))
    stages = [x]
    x = self.maxpool(x)
    for index in range(1, 5):
      x = getattr(self, f'layer{index}')(x)
      stages.append(x)
    return stages


def _conv_bn_relu(conv):
  return [conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()]


class TorchASPPPooling(nn.Sequential):

  def forward(self, x):
    return functional.interpolate(super().forward(x), size=x.shape[-2:], mode='bilinear',
                                  align_corners=False)


class TorchASPP(nn.Module):
  """torchvision's ASPP: 1x1, atrous 3x3s, image pooling (last), projection + dropout."""

  def __init__(self, in_channels, rates):
    super().__init__()
    branches = [nn.Sequential(*_conv_bn_relu(nn.Conv2d(in_channels, 256, 1, bias=False)))]
    branches += [nn.Sequential(*_conv_bn_relu(nn.Conv2d(in_channels, 256, 3, padding=rate,
                                                        dilation=rate, bias=False)))
                 for rate in rates]
    branches.append(TorchASPPPooling(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(
        nn.Conv2d(in_channels, 256, 1, bias=False))))
    self.convs = nn.ModuleList(branches)
    self.project = nn.Sequential(
        *_conv_bn_relu(nn.Conv2d(256 * len(branches), 256, 1, bias=False)), nn.Dropout(0.5))

  def forward(self, x):
    return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class TorchDeepLabV3(nn.Module):
  """torchvision's deeplabv3_resnet50/101: backbone at output stride 8, DeepLabHead, FCN aux."""

  def __init__(self, blocks, num_classes=21):
    super().__init__()
    self.backbone = TorchResNet(blocks, dilate=(False, True, True))
    del self.backbone.fc  # torchvision's IntermediateLayerGetter stops at layer4.
    self.classifier = nn.Sequential(
        TorchASPP(2048, TORCHVISION_ASPP_RATES),
        *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1, bias=False)),
        nn.Conv2d(256, num_classes, 1))
    self.aux_classifier = nn.Sequential(
        *_conv_bn_relu(nn.Conv2d(1024, 256, 3, padding=1, bias=False)), nn.Dropout(0.1),
        nn.Conv2d(256, num_classes, 1))

  def forward(self, x):
    logits = self.classifier(self.backbone.stages(x)[-1])
    return functional.interpolate(logits, size=x.shape[-2:], mode='bilinear',
                                  align_corners=False)


def randomize(model, seed):
  """He-normal convs and random non-trivial BN statistics; eval mode."""
  generator = torch.Generator().manual_seed(seed)

  def uniform(tensor, low, high):
    tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))

  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                            * math.sqrt(2 / fan_in))
        if module.bias is not None:
          uniform(module.bias, -0.1, 0.1)
      elif isinstance(module, nn.BatchNorm2d):
        uniform(module.weight, 0.5, 1.5)
        uniform(module.bias, -0.2, 0.2)
        uniform(module.running_mean, -0.3, 0.3)
        uniform(module.running_var, 0.5, 2.0)
        module.num_batches_tracked.fill_(1000)
  return model.eval()


def zeros_like_state(model):
  """The model's state_dict as zeros: the real keys and shapes, cheaply (built on 'meta')."""
  return {name: torch.zeros(value.shape, dtype=value.dtype)
          for name, value in model.state_dict().items()}


def save(path, state):
  torch.save(state, path)
  return path


def to_nchw(image):
  return torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))


def to_nhwc(tensor):
  return tensor.detach().numpy().transpose(0, 2, 3, 1)


def assert_close(actual, expected):
  assert actual.shape == expected.shape
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def param_count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def batch_norm_channels(model) -> int:
  return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.fixture(scope='module')
def torch_resnet50():
  return randomize(TorchResNet(RESNET50), seed=0)


@pytest.fixture(scope='module')
def resnet50_file(tmp_path_factory, torch_resnet50):
  return save(tmp_path_factory.mktemp('resnet') / 'resnet50.pth', torch_resnet50.state_dict())


def test_resnet50_matches_torch(resnet50_file, torch_resnet50):
  module, params, style = load_pretrained(resnet50_file, 'resnet50')
  assert style == 'torch_imagenet' and isinstance(module, ResNet) and module.depth == 50
  assert module.output_stride == 32
  assert set(params['layer1_0']) == {'conv1', 'conv2', 'conv3', 'downsample'}
  assert set(params['layer1_1']) == {'conv1', 'conv2', 'conv3'}
  # Odd and even sides, so every stride-2 layer meets both (torch's padding, not 'SAME').
  image = np.random.default_rng(1).normal(size=(1, 61, 90, 3)).astype(np.float32)
  stages = jax.jit(module.apply)({'params': params}, image)
  with torch.no_grad():
    expected = [to_nhwc(stage) for stage in torch_resnet50.stages(to_nchw(image))]
  assert [s.shape[1:] for s in stages] == [(31, 45, 64), (16, 23, 256), (8, 12, 512),
                                           (4, 6, 1024), (2, 3, 2048)]
  for stage, reference in zip(stages, expected):
    assert_close(np.asarray(stage), reference)


def test_resnet_stage_strides():
  image = jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32)
  for output_stride, heights in ((32, [32, 16, 8, 4, 2]), (16, [32, 16, 8, 4, 4]),
                                 (8, [32, 16, 8, 8, 8])):
    module = ResNet(50, output_stride=output_stride)
    stages = jax.eval_shape(lambda x, m=module: m.init_with_output(jax.random.key(0), x)[0],
                            image)
    assert [s.shape[1] for s in stages] == heights
    assert [s.shape[2] for s in stages] == [h * 3 // 2 for h in heights]
    assert [s.shape[3] for s in stages] == STAGE_CHANNELS
  with pytest.raises(InputError, match='output_stride=4'):
    jax.eval_shape(ResNet(50, output_stride=4).init, jax.random.key(0), image)


def test_torch_replicas_have_torchvision_param_counts():
  with torch.device('meta'):
    for blocks in (RESNET50, RESNET101):
      for kind, model in (('resnet', TorchResNet(blocks)), ('deeplab', TorchDeepLabV3(blocks))):
        assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[kind, blocks]


def test_resnet101_structure_and_import(tmp_path):
  """The full ResNet-101 import (zero tensors of the real shapes); folding leaves one bias per
  BN where torch has two vectors, and the fc is dropped."""
  with torch.device('meta'):
    model = TorchResNet(RESNET101)
  expected = (TORCHVISION_PARAMS['resnet', RESNET101] - 2048 * 1000 - 1000
              - batch_norm_channels(model))
  assert sum(math.prod(shape) for shape in param_shapes(ResNet(101)).values()) == expected
  assert expected == 42_447_488
  module, params, _ = load_pretrained(save(tmp_path / 'resnet101.pt', zeros_like_state(model)),
                                      'resnet101')
  assert module.depth == 101 and set(params) == {'conv1'} | {
      f'layer{layer}_{block}' for layer, count in enumerate(RESNET101, 1)
      for block in range(count)}
  assert param_count(params) == expected


def test_resnet_depth_mismatch(tmp_path, resnet50_file):
  with torch.device('meta'):
    resnet101, deeplab101 = TorchResNet(RESNET101), TorchDeepLabV3(RESNET101)
  def names_only(model):  # The depth is checked before anything else: only names matter.
    return {name: torch.zeros(1) for name in model.state_dict()}

  path = save(tmp_path / 'resnet101.pth', names_only(resnet101))
  with pytest.raises(InputError, match=rf"{path} holds a ResNet-101 \(23 blocks in layer3\), "
                                       r"not a ResNet-50: load it as 'resnet101'"):
    load_pretrained(path, 'resnet50')
  with pytest.raises(InputError, match=rf"{resnet50_file} holds a ResNet-50 .* load it as "
                                       r"'resnet50'"):
    load_pretrained(resnet50_file, 'resnet101')
  path = save(tmp_path / 'deeplab101.pth', names_only(deeplab101))
  with pytest.raises(InputError, match=r"ResNet-101 .* load it as 'deeplabv3_resnet101'"):
    load_pretrained(path, 'deeplabv3_resnet50')


def test_resnet_import_errors(tmp_path, torch_resnet50):
  state = torch_resnet50.state_dict()
  partial_bn = {name: value for name, value in state.items()
                if name != 'layer4.2.bn3.running_var'}
  path = save(tmp_path / 'partial_bn.pth', partial_bn)
  with pytest.raises(InputError, match=rf'{path}: BatchNorm layer4.2.bn3 \(after conv '
                                       r'layer4.2.conv3\) lacks layer4.2.bn3.running_var'):
    load_pretrained(path, 'resnet50')
  broken = {name: value for name, value in state.items() if not name.startswith('layer1.0.bn2.')}
  broken['layer4.2.conv4.weight'] = state['layer4.2.conv3.weight']
  broken['layer3.1.conv2.weight'] = state['layer3.1.conv2.weight'].transpose(0, 1)[:, :128]
  path = save(tmp_path / 'broken.pth', broken)
  with pytest.raises(InputError) as error:
    load_pretrained(path, 'resnet50')
  message = str(error.value)
  assert message.startswith(f'{path} does not hold weights for ResNet')
  # A conv's bias is its folded BN, so a missing BN is named as the BN.
  assert 'missing tensors (1): layer1.0.bn2\n' in message
  assert ('wrong shapes (1): layer3.1.conv2.weight is (3, 3, 128, 256), '
          'layer3_1/conv2/kernel needs (3, 3, 256, 256)') in message
  assert 'unexpected tensors (1): layer4.2.conv4.weight' in message
  assert 'torchvision.models.resnet50' in message
  not_a_state_dict = tmp_path / 'resnet50.pth'
  not_a_state_dict.write_bytes(b'not a zip')
  with pytest.raises(InputError, match='not a readable torch state_dict'):
    load_pretrained(not_a_state_dict, 'resnet50')


@pytest.fixture(scope='module')
def torch_deeplab50():
  return randomize(TorchDeepLabV3(RESNET50), seed=2)


@pytest.fixture(scope='module')
def deeplab50(tmp_path_factory, torch_deeplab50):
  path = tmp_path_factory.mktemp('deeplab') / 'deeplabv3_resnet50.pth'
  return load_pretrained(save(path, torch_deeplab50.state_dict()), 'deeplabv3_resnet50')


def test_deeplabv3_resnet50_matches_torch(deeplab50, torch_deeplab50):
  module, params, style = deeplab50
  assert style == 'torch_imagenet' and isinstance(module, DeepLabV3)
  assert (module.backbone, module.output_stride, module.aspp_rates, module.head_conv,
          module.align_corners, module.num_classes) == ('resnet50', 8, (12, 24, 36), True,
                                                        False, 21)
  assert set(params) == {'backbone', 'aspp', 'head_conv', 'logits'}
  assert set(params['aspp']) == {'image_pooling', 'aspp0', 'aspp1', 'aspp2', 'aspp3',
                                 'concat_projection'}
  assert param_count(params) == (TORCHVISION_PARAMS['deeplab', RESNET50]
                                 - param_count(list(torch_deeplab50.aux_classifier.parameters()))
                                 - batch_norm_channels(torch_deeplab50)
                                 + batch_norm_channels(torch_deeplab50.aux_classifier))
  image = np.random.default_rng(3).normal(size=(1, 57, 83, 3)).astype(np.float32)
  logits = jax.jit(module.apply)({'params': params}, image)
  features = jax.jit(lambda p, x: module.apply({'params': p}, x, features_only=True))(
      params, image)
  with torch.no_grad():
    expected_logits = to_nhwc(torch_deeplab50(to_nchw(image)))
    backbone = torch_deeplab50.backbone.stages(to_nchw(image))[-1]
    expected_features = to_nhwc(torch_deeplab50.classifier[0](backbone))
  assert logits.dtype == jnp.float32 and features.shape == (1, 8, 11, 256)
  assert_close(np.asarray(features), expected_features)
  assert_close(np.asarray(logits), expected_logits)


def test_aspp_atrous_branches_match_torch(deeplab50, torch_deeplab50):
  """At output stride 8 a 57x83 input gives an 8x11 map, where the taps of rates 12-36 fall in
  the padding; small rates check the dilated branches with the same weights."""
  _, params, _ = deeplab50
  rates = (1, 2, 3)
  aspp = TorchASPP(2048, rates)
  aspp.load_state_dict(torch_deeplab50.classifier[0].state_dict())
  aspp.eval()
  x = np.random.default_rng(4).normal(size=(2, 9, 11, 2048)).astype(np.float32)
  features = ASPPHead(atrous_rates=rates).apply({'params': params['aspp']}, x)
  with torch.no_grad():
    expected = to_nhwc(aspp(to_nchw(x)))
  assert_close(np.asarray(features), expected)


def test_deeplabv3_resnet101_import(tmp_path):
  """Structure only (zero tensors of the real shapes), with a 2-class classifier: the module
  takes the file's class count."""
  with torch.device('meta'):
    model = TorchDeepLabV3(RESNET101, num_classes=2)
  module, params, _ = load_pretrained(save(tmp_path / 'deeplab101.pth', zeros_like_state(model)),
                                      'deeplabv3_resnet101')
  assert module.backbone == 'resnet101' and module.num_classes == 2
  assert params['logits']['kernel'].shape == (1, 1, 256, 2)
  expected = (sum(p.numel() for name, p in model.named_parameters()
                  if not name.startswith('aux_classifier.'))
              - batch_norm_channels(model) + batch_norm_channels(model.aux_classifier))
  assert param_count(params) == expected
  with pytest.raises(InputError, match=r"(?s)missing tensors .* unexpected tensors .*"
                                       r"a deeplabv3_resnet101 file loads as "
                                       r"'deeplabv3_resnet101'"):
    load_pretrained(tmp_path / 'deeplab101.pth', 'resnet101')

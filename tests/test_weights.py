"""Pretrained-weight import.

The two real TFLite files are checked on real DAVIS frames: the imported DeepLabV3 must segment
the annotated objects, and the imported ImageNet MobileNetV2 must name them; both are checked
against the TFLite interpreter itself (ai-edge-litert, a test-only requirement) running the same
files. VGG16 weights do not exist on this machine, so files with the exact torchvision / Keras
layouts are written here from random tensors of the real shapes, and their import is checked
through a forward pass against torch's own convs.
"""

import sys

from ai_edge_litert.interpreter import Interpreter

import cv2
from flax import traverse_util
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvos.data.davis import load_davis
from jvos.errors import InputError
from jvos.models.deeplabv3 import PASCAL_CLASSES
from jvos.models.mobilenet_v2 import MobileNetV2
from jvos.models.preprocessing import normalize
from jvos.models.vgg import STAGES, VGG16, conv_names
from jvos.weights import load_pretrained
from jvos.weights.mapping import param_shapes
from jvos.weights.tflite import read_conv_layers, read_tensors
from jvos.weights.vgg16 import TORCH_FEATURE_INDICES

DEEPLAB_FILE = 'deeplabv3_mnv2_pascal_257_float.tflite'
IMAGENET_FILE = 'mobilenet_v2_1.0_224_imagenet_uint8.tflite'
DEEPLAB_SIZE = 257
# Sequence -> PASCAL class of its annotated object. PASCAL has no camel; the model calls the
# camel a horse, consistently (measured over all its frames, see experiments/pretrained_import.md).
SEQUENCE_CLASSES = {'dog': 'dog', 'car-roundabout': 'car', 'drift-straight': 'car',
                    'camel': 'horse'}
FRAMES_PER_SEQUENCE = 3


def letterbox(frame: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """DeepLab's eval input: longer side resized to `size`, padded at the bottom/right with the
  mean pixel (0 after normalisation). Squashing 854x480 frames to a square instead turns the
  DAVIS dog into a horse. Returns the image and the (height, width) of its valid part."""
  scale = size / max(frame.shape[:2])
  height, width = round(frame.shape[0] * scale), round(frame.shape[1] * scale)
  image = np.full((size, size, 3), 127.5, np.float32)
  image[:height, :width] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
  return image, (height, width)


def iou(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.sum(a & b) / max(np.sum(a | b), 1))


@pytest.fixture(scope='module')
def deeplab(weights_dir):
  return load_pretrained(weights_dir / DEEPLAB_FILE, 'deeplabv3')


@pytest.fixture(scope='module')
def davis_samples(davis2016_root):
  """(sequence, frame, ground-truth mask) for the frames with the largest objects.

  The model sees 854x480 frames at 257x144, where e.g. the far car at the start of
  drift-straight is a few pixels wide; each sequence is judged on its 3 frames with the largest
  annotated object (IoU over all frames: experiments/pretrained_import.md).
  """
  samples = []
  for video in load_davis(davis2016_root, sequences=tuple(SEQUENCE_CLASSES)):
    masks = [video.annotation(name) > 0 for name in video.frame_names]
    largest = np.argsort([-mask.sum() for mask in masks], kind='stable')[:FRAMES_PER_SEQUENCE]
    samples += [(video.name, video.frame(i), masks[i]) for i in sorted(largest)]
  return samples


@pytest.fixture(scope='module')
def deeplab_inputs(davis_samples):
  return np.stack([letterbox(frame, DEEPLAB_SIZE)[0] for _, frame, _ in davis_samples])


@pytest.fixture(scope='module')
def deeplab_logits(deeplab, deeplab_inputs):
  apply = jax.jit(lambda params, images: deeplab.module.apply(
      {'params': params}, normalize(images, deeplab.style)))
  return np.asarray(apply(deeplab.params, deeplab_inputs))


def test_deeplabv3_segments_davis_objects(davis_samples, deeplab_logits):
  assert deeplab_logits.shape == (len(davis_samples), DEEPLAB_SIZE, DEEPLAB_SIZE, 21)
  ious = {}
  for (name, frame, mask), logits in zip(davis_samples, deeplab_logits):
    height, width = letterbox(frame, DEEPLAB_SIZE)[1]
    classes = cv2.resize(logits[:height, :width].argmax(-1).astype(np.uint8),
                         frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    ious.setdefault(name, []).append(
        iou(classes == PASCAL_CLASSES.index(SEQUENCE_CLASSES[name]), mask))
  print({name: np.round(values, 3).tolist() for name, values in ious.items()})
  assert len(ious) == len(SEQUENCE_CLASSES)
  for name, values in ious.items():
    assert min(values) > 0.5, (name, values)


def test_deeplabv3_matches_tflite_interpreter(weights_dir, deeplab, deeplab_inputs,
                                              deeplab_logits):
  # The float file: the interpreter's logits on the same normalised input. Seen: at most 1.3e-4
  # (logits span -5..39) over the 12 frames.
  interpreter = Interpreter(model_path=str(weights_dir / DEEPLAB_FILE))
  interpreter.allocate_tensors()
  for image, logits in zip(deeplab_inputs, deeplab_logits):
    interpreter.set_tensor(interpreter.get_input_details()[0]['index'],
                           np.asarray(normalize(image[None], deeplab.style)))
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])[0]
    np.testing.assert_allclose(logits, expected, atol=5e-4)


def test_deeplabv3_bfloat16_keeps_the_segmentation(davis_samples, deeplab, deeplab_inputs,
                                                   deeplab_logits):
  """bf16 segments each sequence's object as float32 does, judged on that object's class.

  Pixel agreement would be dominated by padding and background: a bf16 model that shrank every
  object (background logit +2) still agrees on 95% of the pixels, but its dog is 0.61 IoU of
  the float32 one. Seen here: class IoU bf16 vs float32 0.77 (camel, whose 'horse' bf16 draws
  larger) to 0.99 per frame, 0.81 to 0.97 per sequence; IoU with the truth >= 0.59.
  """
  module = deeplab.module.clone(dtype=jnp.bfloat16)
  logits = np.asarray(jax.jit(module.apply)({'params': deeplab.params},
                                            normalize(deeplab_inputs, deeplab.style)))
  assert logits.dtype == np.float32
  # It did compute in bf16: 8 mantissa bits move the logits (range -5..39) by up to 9-15.
  assert np.abs(logits - deeplab_logits).max() > 1.0
  ious = {}
  for (name, frame, mask), bf16, f32 in zip(davis_samples, logits, deeplab_logits):
    height, width = letterbox(frame, DEEPLAB_SIZE)[1]
    cls = PASCAL_CLASSES.index(SEQUENCE_CLASSES[name])
    bf16_object = bf16[:height, :width].argmax(-1) == cls
    f32_object = f32[:height, :width].argmax(-1) == cls
    truth = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    assert iou(bf16_object, truth > 0) > 0.5, name  # As float32 is required to.
    ious.setdefault(name, []).append(iou(bf16_object, f32_object))
  print({name: np.round(values, 3).tolist() for name, values in ious.items()})
  for name, values in ious.items():
    assert min(values) > 0.7 and np.mean(values) > 0.78, (name, values)


def test_deeplab_backbone_loads_alone(weights_dir, deeplab):
  backbone = load_pretrained(weights_dir / DEEPLAB_FILE, 'mobilenet_v2')
  assert backbone.module.width_multiplier == 0.5 and backbone.style == 'tflite'
  assert jax.tree.all(jax.tree.map(np.array_equal, backbone.params, deeplab.params['backbone']))


def test_mobilenet_v2_stage_strides():
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  for output_stride, sizes in ((32, (112, 56, 28, 14, 7)), (16, (112, 56, 28, 14, 14)),
                               (8, (112, 56, 28, 28, 28))):
    module = MobileNetV2(output_stride=output_stride)
    stages = jax.eval_shape(lambda x, m=module: m.init_with_output(jax.random.key(0), x)[0],
                            image)
    assert [s.shape[1] for s in stages] == list(sizes)
    assert [s.shape[3] for s in stages] == [16, 24, 32, 96, 320]


@pytest.fixture(scope='module')
def imagenet_mobilenet(weights_dir):
  return load_pretrained(weights_dir / IMAGENET_FILE, 'mobilenet_v2')


def test_imagenet_mobilenet_v2_fills_every_param(weights_dir, imagenet_mobilenet):
  module, params, style = imagenet_mobilenet
  assert style == 'tflite' and module.width_multiplier == 1.0
  loaded = traverse_util.flatten_dict(params)
  assert {path: value.shape for path, value in loaded.items()} == param_shapes(module)
  for path, value in loaded.items():
    value = np.asarray(value)
    assert np.all(np.isfinite(value)), path
    # Dequantized uint8: a few hundred steps of a small scale, never all zero.
    assert 1e-3 < value.std() < 20 and np.abs(value).max() < 100, (path, value.std())
  tensors = read_tensors(weights_dir / IMAGENET_FILE)
  stem = tensors['MobilenetV2/Conv/Conv2D_Fold;MobilenetV2/Conv/weights_quant/'
                 'FakeQuantWithMinMaxVars']
  assert stem.dtype == np.float32 and stem.shape == (32, 3, 3, 3)  # OHWI, as stored.
  np.testing.assert_array_equal(np.asarray(params['stem']['kernel']), stem.transpose(1, 2, 3, 0))


def _center_crop(frame: np.ndarray, size: int) -> np.ndarray:
  side = min(frame.shape[:2])
  top, left = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
  return cv2.resize(frame[top:top + side, left:left + side], (size, size),
                    interpolation=cv2.INTER_AREA)


@pytest.fixture(scope='module')
def imagenet_classifier(weights_dir, imagenet_mobilenet):
  """normalised images -> (stage-5 features, logits): the backbone plus the file's own
  classifier (kept out of the params, applied here); logit k is ImageNet class k - 1 (0 is
  'background')."""
  module, params, _ = imagenet_mobilenet
  head = read_conv_layers(weights_dir / IMAGENET_FILE)

  @jax.jit
  def classify(images):
    features = module.apply({'params': params}, images)[-1]
    hidden = jax.nn.relu6(features @ head['MobilenetV2/Conv_1/kernel'][0, 0]
                          + head['MobilenetV2/Conv_1/bias'])
    return features, (hidden.mean(axis=(1, 2))
                      @ head['MobilenetV2/Logits/Conv2d_1c_1x1/kernel'][0, 0]
                      + head['MobilenetV2/Logits/Conv2d_1c_1x1/bias'])

  return classify


IMAGENET_FRAMES = (('dog', 0), ('dog', 30), ('dog', 59), ('paragliding-launch', 0),
                   ('paragliding-launch', 40), ('paragliding-launch', 79), ('camel', 0))


@pytest.fixture(scope='module')
def imagenet_images(davis2016_root) -> np.ndarray:
  """IMAGENET_FRAMES centre-cropped to 224x224, uint8."""
  videos = {v.name: v for v in load_davis(davis2016_root, sequences=('dog', 'paragliding-launch',
                                                                      'camel'))}
  return np.stack([_center_crop(videos[name].frame(i), 224) for name, i in IMAGENET_FRAMES])


def test_imagenet_mobilenet_v2_recognises_davis_objects(imagenet_mobilenet, imagenet_classifier,
                                                        imagenet_images):
  """What is in real frames is named; ImageNet class = logit index - 1."""
  style = imagenet_mobilenet.style
  top1 = np.asarray(imagenet_classifier(normalize(imagenet_images, style))[1]).argmax(-1) - 1
  assert all(151 <= label <= 268 for label in top1[:3]), top1  # The dog breeds.
  assert list(top1[3:6]) == [701] * 3, top1  # 'parachute'
  assert top1[6] == 354, top1  # 'Arabian camel'


def _dequantized(interpreter, name: str) -> np.ndarray:
  (detail,) = [d for d in interpreter.get_tensor_details() if d['name'] == name]
  scale, zero_point = detail['quantization']
  return (interpreter.get_tensor(detail['index']).astype(np.float32) - zero_point) * scale


# Reading intermediate tensors needs them kept; the runtime warns that this is for debugging.
@pytest.mark.filterwarnings('ignore:Warning. Enabling `experimental_preserve_all_tensors`')
def test_imagenet_mobilenet_v2_matches_tflite_interpreter(weights_dir, imagenet_classifier,
                                                          imagenet_images):
  """The dequantised float import against the interpreter running the uint8 model itself.

  The interpreter computes in integers, rounding every activation to its uint8 grid (logits in
  steps of 0.099, stage-5 features in steps of 0.117), so the two differ by rounding, never by
  a wrong weight. Both see the same input: the interpreter's uint8 frame dequantised,
  (q - 128) / 128. Seen over the 7 frames: top-1 identical, top-5 sharing 4 or 5 classes;
  logits (range -4..13) within 0.46, correlation >= 0.998; stage-5 features (range 0..12)
  within 1.08, correlation >= 0.996, RMS error <= 0.18.
  """
  interpreter = Interpreter(model_path=str(weights_dir / IMAGENET_FILE),
                            experimental_preserve_all_tensors=True)
  interpreter.allocate_tensors()
  (input_detail,) = interpreter.get_input_details()
  assert input_detail['dtype'] == np.uint8 and input_detail['quantization'] == (1 / 128, 128)
  features, logits = map(np.asarray, imagenet_classifier(
      (imagenet_images.astype(np.float32) - 128) / 128))
  for image, our_features, our_logits in zip(imagenet_images, features, logits):
    interpreter.set_tensor(input_detail['index'], image[None])
    interpreter.invoke()
    their_logits = _dequantized(interpreter, 'MobilenetV2/Logits/Squeeze1')[0]
    their_features = _dequantized(
        interpreter, 'MobilenetV2/expanded_conv_16/project/add_fold;MobilenetV2/'
        'expanded_conv_16/project/Conv2D_Fold;MobilenetV2/expanded_conv_16/project/'
        'BatchNorm_Fold/bias1')[0]
    assert our_logits.argmax() == their_logits.argmax()
    # Near-ties may swap: the 5th class of the first dog frame differs.
    assert len(set(np.argsort(-our_logits)[:5]) & set(np.argsort(-their_logits)[:5])) >= 4
    assert np.abs(our_logits - their_logits).max() < 0.6
    assert np.corrcoef(our_logits, their_logits)[0, 1] > 0.995
    assert our_features.shape == their_features.shape == (7, 7, 320)
    assert np.abs(our_features - their_features).max() < 1.3
    assert np.corrcoef(our_features.ravel(), their_features.ravel())[0, 1] > 0.99
    assert np.sqrt(np.mean((our_features - their_features) ** 2)) < 0.25


def test_imagenet_mobilenet_v2_features_differ_from_random_init(davis2016_root,
                                                                 imagenet_mobilenet):
  module, params, style = imagenet_mobilenet
  video = load_davis(davis2016_root, sequences=('dog',)).videos[0]
  image = normalize(_center_crop(video.frame(0), 224)[None], style)
  random_params = jax.jit(module.init)(jax.random.key(0), image)['params']
  stage5 = jax.jit(lambda params, image: module.apply({'params': params}, image)[-1])
  pretrained, random = (np.asarray(stage5(p, image)) for p in (params, random_params))
  assert np.linalg.norm(pretrained - random) > 0.5 * np.linalg.norm(random)


def test_tflite_errors(weights_dir, tmp_path):
  with pytest.raises(InputError, match='aspp0/kernel'):
    load_pretrained(weights_dir / IMAGENET_FILE, 'deeplabv3')
  not_tflite = tmp_path / 'model.tflite'
  not_tflite.write_bytes(b'\0' * 64)
  with pytest.raises(InputError, match='not a TFLite flatbuffer'):
    load_pretrained(not_tflite, 'deeplabv3')
  with pytest.raises(InputError, match='do not exist'):
    load_pretrained(tmp_path / 'absent.tflite', 'mobilenet_v2')
  with pytest.raises(InputError, match='.pth for vgg16'):
    load_pretrained(weights_dir / DEEPLAB_FILE, 'vgg16')


def vgg16_torch_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """torchvision's VGG16 `features` tensors (OIHW), He-scaled so 13 layers keep their scale,
  plus classifier biases, which the importer must drop."""
  state, in_channels = {}, 3
  channels = [c for convs, c in STAGES for _ in range(convs)]
  for index, out_channels in zip(TORCH_FEATURE_INDICES, channels):
    state[f'features.{index}.weight'] = rng.normal(
        0, np.sqrt(2 / (9 * in_channels)), (out_channels, in_channels, 3, 3)).astype(np.float32)
    state[f'features.{index}.bias'] = rng.normal(0, 0.1, out_channels).astype(np.float32)
    in_channels = out_channels
  state['classifier.0.bias'] = rng.normal(0, 0.1, 4096).astype(np.float32)
  return state


def save_torch(path, state):
  torch = pytest.importorskip('torch')
  torch.save({name: torch.from_numpy(value) for name, value in state.items()}, path)
  return path


def torch_vgg16_stages(state: dict[str, np.ndarray], image: np.ndarray) -> list[np.ndarray]:
  """torchvision's VGG16 forward (conv, ReLU, 2x2 max pool between stages), NHWC out."""
  torch = pytest.importorskip('torch')
  functional = torch.nn.functional
  x = torch.from_numpy(image).permute(0, 3, 1, 2)
  stages, indices = [], iter(TORCH_FEATURE_INDICES)
  for stage, (convs, _) in enumerate(STAGES):
    if stage:
      x = functional.max_pool2d(x, 2)
    for _ in range(convs):
      index = next(indices)
      x = functional.relu(functional.conv2d(x, torch.from_numpy(state[f'features.{index}.weight']),
                                            torch.from_numpy(state[f'features.{index}.bias']),
                                            padding=1))
    stages.append(x.permute(0, 2, 3, 1).numpy())
  return stages


def test_vgg16_from_torch_state_dict(tmp_path):
  state = vgg16_torch_state(np.random.default_rng(0))
  module, params, style = load_pretrained(save_torch(tmp_path / 'vgg16.pth', state), 'vgg16')
  assert style == 'torch_imagenet' and isinstance(module, VGG16)
  assert set(params) == set(conv_names())
  image = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
  stages = jax.jit(module.apply)({'params': params}, image)
  for stage, expected in zip(stages, torch_vgg16_stages(state, image)):
    assert stage.shape == expected.shape
    np.testing.assert_allclose(stage, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_vgg16_torch_errors(tmp_path, monkeypatch):
  state = vgg16_torch_state(np.random.default_rng(0))
  missing = dict(state)
  del missing['features.28.bias']
  with pytest.raises(InputError, match=r'missing tensors \(1\): features\.28\.bias'):
    load_pretrained(save_torch(tmp_path / 'missing.pth', missing), 'vgg16')
  wrong = dict(state, **{'features.5.weight': state['features.5.weight'].transpose(1, 0, 2, 3)})
  with pytest.raises(InputError, match=r'features\.5\.weight is \(3, 3, 128, 64\)'):
    load_pretrained(save_torch(tmp_path / 'wrong.pt', wrong), 'vgg16')
  extra = dict(state, **{'features.30.weight': state['features.28.weight']})
  with pytest.raises(InputError, match=r'unexpected tensors \(1\): features\.30\.weight'):
    load_pretrained(save_torch(tmp_path / 'extra.pth', extra), 'vgg16')
  monkeypatch.setitem(sys.modules, 'torch', None)  # As if torch were not installed.
  with pytest.raises(InputError, match='pip install torch'):
    load_pretrained(tmp_path / 'extra.pth', 'vgg16')


def write_keras_h5(path, state: dict[str, np.ndarray], drop: str = ''):
  """A Keras notop VGG16 weights file, from torch-layout tensors (OIHW -> HWIO)."""
  layers, weights = ['input_1'], {}
  for name, index in zip(conv_names(), TORCH_FEATURE_INDICES):
    stage, conv = name.removeprefix('conv').split('_')
    layer = f'block{stage}_conv{conv}'
    weights[layer] = (state[f'features.{index}.weight'].transpose(2, 3, 1, 0),
                      state[f'features.{index}.bias'])
    layers.append(layer)
    if conv == str(STAGES[int(stage) - 1][0]):
      layers.append(f'block{stage}_pool')
  with h5py.File(path, 'w') as file:
    file.attrs['layer_names'] = [layer.encode() for layer in layers if layer != drop]
    for layer in layers:
      group = file.create_group(layer)
      names = [f'{layer}/kernel:0', f'{layer}/bias:0'] if layer in weights else []
      group.attrs['weight_names'] = [n.encode() for n in names]
      for weight_name, value in zip(names, weights.get(layer, ())):
        group.create_dataset(weight_name, data=value)
  return path


def keras_vgg16_stages(path, image: np.ndarray) -> list[np.ndarray]:
  """What Keras's VGG16 computes from an RGB uint8 image, from the .h5 file alone.

  Its preprocessing (`keras.applications.vgg16.preprocess_input`, 'caffe' mode): RGB -> BGR,
  minus the ImageNet mean in BGR order; then its convs (HWIO kernels, here turned OIHW for
  torch's cross-correlation, which is Keras's too) with ReLU and 2x2 max pools.
  """
  state = {}
  with h5py.File(path, 'r') as file:
    for index, name in zip(TORCH_FEATURE_INDICES, conv_names()):
      stage, conv = name.removeprefix('conv').split('_')
      layer = file[f'block{stage}_conv{conv}']
      state[f'features.{index}.weight'] = layer[f'block{stage}_conv{conv}/kernel:0'][()].transpose(
          3, 2, 0, 1).copy()
      state[f'features.{index}.bias'] = layer[f'block{stage}_conv{conv}/bias:0'][()]
  bgr = image[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
  return torch_vgg16_stages(state, np.ascontiguousarray(bgr))


def test_vgg16_from_keras_h5(tmp_path, davis2016_root):
  state = vgg16_torch_state(np.random.default_rng(2))
  path = write_keras_h5(tmp_path / 'vgg16_notop.h5', state)
  module, params, style = load_pretrained(path, 'vgg16')
  assert style == 'caffe_bgr' and isinstance(module, VGG16)
  # A real frame, shrunk to 48x48 (asymmetric content, so a kernel flipped or transposed shows).
  frame = load_davis(davis2016_root, sequences=('dog',)).videos[0].frame(0)
  image = cv2.resize(frame, (48, 48), interpolation=cv2.INTER_AREA)[None]
  stages = jax.jit(module.apply)({'params': params}, normalize(image, style))
  expected_stages = keras_vgg16_stages(path, image)
  assert [s.shape[1] for s in stages] == [48, 24, 12, 6, 3]
  for stage, expected in zip(stages, expected_stages):
    assert stage.shape == expected.shape and np.abs(expected).max() > 1
    np.testing.assert_allclose(stage, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  with pytest.raises(InputError, match='missing tensors.*block5_conv3/kernel'):
    load_pretrained(write_keras_h5(tmp_path / 'short.h5', state, drop='block5_conv3'), 'vgg16')


def test_normalize_styles():
  pixel = np.array([[[255, 0, 128]]], np.uint8)
  np.testing.assert_allclose(normalize(pixel, 'tflite')[0, 0], [1, -1, 128 / 127.5 - 1],
                             atol=1e-6)
  np.testing.assert_allclose(normalize(pixel, 'caffe_bgr')[0, 0],
                             [128 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)
  np.testing.assert_allclose(normalize(pixel, 'torch_imagenet')[0, 0],
                             [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225],
                             rtol=1e-6)
  with pytest.raises(InputError, match='torch_imagenet'):
    normalize(pixel, 'imagenet')

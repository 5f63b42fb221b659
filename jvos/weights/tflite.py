"""TFLite flatbuffers -> numpy (with the `tflite` parser, no TF runtime) -> Flax params.

Imports TensorFlow's two official TF-slim exports, deeplabv3_mnv2_pascal_257_float.tflite and
mobilenet_v2_1.0_224_imagenet_uint8.tflite: the PASCAL DeepLabV3 (float32, width-0.5
MobileNetV2) and the ImageNet MobileNetV2 1.0 (uint8, dequantized here; its classifier, the
1x1 conv `Conv_1` and `Logits`, is dropped). Both were trained on 'tflite'-style input.

Layers are found through the graph, not by tensor name alone: in the quantized file a weight is
named e.g. 'MobilenetV2/Conv/Conv2D_Fold;MobilenetV2/Conv/weights_quant/FakeQuantWithMinMaxVars'
and some biases carry the name of another layer. So each CONV_2D / DEPTHWISE_CONV_2D op gives
one layer, its scope being the weight name's first ';' part less the last component
('MobilenetV2/Conv'), and its bias whatever tensor the op adds.
"""

import pathlib

import numpy as np
import tflite

from jvos.errors import InputError
from jvos.models.deeplabv3 import DeepLabV3
from jvos.models.mobilenet_v2 import MobileNetV2, STEM_CHANNELS
from jvos.weights.mapping import ParamPath, Pretrained, fill_params

STYLE = 'tflite'
# The ImageNet classifier and the DeepLab head: what a bare MobileNetV2 import leaves out.
CLASSIFIER_SCOPES = ('MobilenetV2/Conv_1/', 'MobilenetV2/Logits/')
DEEPLAB_HEAD_SCOPES = ('aspp0/', 'image_pooling/', 'concat_projection/', 'logits/semantic/')

_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64,
    tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT8: np.int8,
}
_CONV_OPS = {tflite.BuiltinOperator.CONV_2D: (1, 2, 3, 0),  # OHWI -> HWIO
             tflite.BuiltinOperator.DEPTHWISE_CONV_2D: (1, 2, 0, 3)}  # 1HWC -> HW1C


def _read_model(path: pathlib.Path) -> tuple[tflite.Model, bytes]:
  try:
    data = pathlib.Path(path).read_bytes()
  except OSError as e:
    raise InputError(f'Cannot read TFLite file {path} ({e}); check the path.') from None
  if data[4:8] != b'TFL3':
    raise InputError(f'{path} is not a TFLite flatbuffer (no TFL3 identifier); pass a .tflite '
                     'model exported by the TFLite converter.')
  return tflite.Model.GetRootAsModel(data, 0), data


def _dequantize(values: np.ndarray, quantization) -> np.ndarray:
  """float32 = (q - zero_point) * scale, per tensor or per channel along the quantized axis."""
  shape = [1] * values.ndim
  if quantization.ScaleLength() > 1:
    shape[quantization.QuantizedDimension()] = -1
  scale = quantization.ScaleAsNumpy().astype(np.float32).reshape(shape)
  zero_point = (quantization.ZeroPointAsNumpy().astype(np.float32).reshape(shape)
                if quantization.ZeroPointLength() else np.float32(0))
  return (values.astype(np.float32) - zero_point) * scale


def _constant_tensors(path: pathlib.Path) -> tuple[tflite.Model, dict[int, tuple[str, np.ndarray]]]:
  """The model and {tensor index: (name, values)} of every tensor that has data."""
  model, data = _read_model(path)
  graph = model.Subgraphs(0)
  tensors = {}
  for index in range(graph.TensorsLength()):
    tensor = graph.Tensors(index)
    buffer = model.Buffers(tensor.Buffer())
    name = tensor.Name().decode()
    if buffer.Offset() > 1:  # Large models keep buffers after the flatbuffer.
      raw = data[buffer.Offset():buffer.Offset() + buffer.Size()]
    elif buffer.DataLength():
      raw = buffer.DataAsNumpy().tobytes()
    else:
      continue  # An activation: no data.
    if tensor.Type() not in _NUMPY_TYPES:
      raise InputError(f'{path}: tensor {name} has TFLite type {tensor.Type()}, which jvos does '
                       f'not read; use a float32 or uint8/int8-quantized export.')
    values = np.frombuffer(raw, _NUMPY_TYPES[tensor.Type()]).reshape(tensor.ShapeAsNumpy())
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength():
      values = _dequantize(values, quantization)
    tensors[index] = (name, values)
  return model, tensors


def read_tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Every tensor with data in the file, by name, in TFLite layout, quantized ones as float32."""
  return dict(_constant_tensors(path)[1].values())


def _layer_scope(weight_name: str) -> str:
  return weight_name.split(';')[0].rsplit('/', 1)[0]


def read_conv_layers(path: pathlib.Path) -> dict[str, np.ndarray]:
  """'{scope}/kernel' (HWIO; depthwise HW1C) and '{scope}/bias' of every conv op, float32."""
  model, tensors = _constant_tensors(path)
  graph = model.Subgraphs(0)
  layers = {}
  for index in range(graph.OperatorsLength()):
    op = graph.Operators(index)
    code = model.OperatorCodes(op.OpcodeIndex())
    # Schema v3a moved op codes to a new field; old files only fill the deprecated one.
    kind = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if kind not in _CONV_OPS:
      continue
    inputs = op.InputsAsNumpy()
    weight_name, weights = tensors[inputs[1]]
    scope = _layer_scope(weight_name)
    if f'{scope}/kernel' in layers:
      raise InputError(f'{path}: two conv ops have weights named {scope}; not a TF-slim export '
                       'that jvos can map.')
    layers[f'{scope}/kernel'] = weights.astype(np.float32).transpose(_CONV_OPS[kind])
    if len(inputs) > 2 and inputs[2] in tensors:
      layers[f'{scope}/bias'] = tensors[inputs[2]][1].astype(np.float32)
  return layers


def _backbone_source(param_path: ParamPath) -> str:
  """('block3', 'depthwise', 'kernel') -> 'MobilenetV2/expanded_conv_3/depthwise/kernel'."""
  layer, *conv, leaf = param_path
  if layer == 'stem':
    return f'MobilenetV2/Conv/{leaf}'
  index = int(layer.removeprefix('block'))
  block = 'expanded_conv' if index == 0 else f'expanded_conv_{index}'
  return f'MobilenetV2/{block}/{conv[0]}/{leaf}'


def _deeplab_source(param_path: ParamPath) -> str:
  """Backbone as above; ('aspp', 'aspp0', 'bias') -> 'aspp0/bias'; logits -> 'logits/semantic'."""
  part, *rest = param_path
  if part == 'backbone':
    return _backbone_source(tuple(rest))
  if part == 'aspp':
    return '/'.join(rest)
  return 'logits/semantic/' + rest[-1]


def _width_multiplier(path: pathlib.Path, layers: dict[str, np.ndarray]) -> float:
  """Read off the stem conv (32 channels at width 1.0)."""
  stem = layers.get('MobilenetV2/Conv/kernel')
  if stem is None:
    raise InputError(f'{path} has no MobilenetV2/Conv layer: it is not a TF-slim MobileNetV2 '
                     'export. Use mobilenet_v2_1.0_224_imagenet_uint8.tflite or '
                     'deeplabv3_mnv2_pascal_257_float.tflite.')
  return stem.shape[-1] / STEM_CHANNELS


def load_mobilenet_v2(path: pathlib.Path) -> Pretrained:
  """The MobileNetV2 trunk from either file (width read from the file), output stride 32."""
  layers = read_conv_layers(path)
  module = MobileNetV2(width_multiplier=_width_multiplier(path, layers))
  params = fill_params(module, layers, _backbone_source, path,
                       dropped=CLASSIFIER_SCOPES + DEEPLAB_HEAD_SCOPES,
                       fix='Pass a TF-slim MobileNetV2 export (ImageNet or DeepLab .tflite).')
  return Pretrained(module, params, STYLE)


def load_deeplabv3(path: pathlib.Path) -> Pretrained:
  """DeepLabV3 at the configuration of the file (output stride 8, as the PASCAL export)."""
  layers = read_conv_layers(path)
  module = DeepLabV3(width_multiplier=_width_multiplier(path, layers))
  params = fill_params(module, layers, _deeplab_source, path,
                       fix='Pass a DeepLabV3 MobileNetV2 export such as '
                           'deeplabv3_mnv2_pascal_257_float.tflite; an ImageNet classifier file '
                           'has no segmentation head (load it as mobilenet_v2).')
  return Pretrained(module, params, STYLE)

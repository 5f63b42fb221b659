"""Baseline: DeepLabV3's PASCAL object classes as the foreground, zero-shot, on DAVIS-2016.

    python launch.py --config configs/deeplab_davis16.py --config.data.root=/data/DAVIS2016 \
        --config.model.pretrained=/weights/deeplabv3_mnv2_pascal_257_float.tflite

The encoder COSNet stands on, alone: configs/cosnet_davis16.py shows what co-attention adds.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.task = 'unsupervised'
  config.data.mask_format = 'binary'
  config.model = ml_collections.ConfigDict(dict(
      name='deeplab', backbone='mobilenet_v2',  # resnet50 / resnet101 for torchvision files.
      pretrained='',  # The DeepLabV3 weights: .tflite (MobileNetV2) or torchvision .pth.
      output_stride=8))
  return config

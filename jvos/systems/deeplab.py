"""Baseline: DeepLabV3's object classes as the foreground of every frame, alone.

A zero-shot system with nothing learned on video: each frame is segmented by the pretrained
semantic segmentation network (`model.pretrained`, e.g. the PASCAL DeepLabV3-MobileNetV2
TFLite file), and a pixel's foreground score is the probability of any class but background.
It is the row that shows what COSNet's co-attention adds to the same encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvos import weights
from jvos.errors import InputError
from jvos.models import deeplabv3
from jvos.models.preprocessing import normalize
from jvos.segment import VideoInput
from jvos.systems import System


class SemanticSegmenter:
  """Segmenter: P(not background) of a pretrained DeepLabV3 on each frame, one proposal."""

  def __init__(self, config: ml_collections.ConfigDict):
    if not config.model.get('pretrained'):
      raise InputError('model.pretrained is empty: the deeplab baseline needs the DeepLabV3 '
                       'weights; pass --config.model.pretrained=<deeplabv3_mnv2_pascal_257_'
                       'float.tflite or a torchvision deeplabv3_resnet*.pth>.')
    path = config.model.pretrained
    kind = 'deeplabv3' if str(path).endswith('.tflite') else f'deeplabv3_{config.model.backbone}'
    pretrained = weights.load_pretrained(path, kind)
    module = pretrained.module.clone(output_stride=config.model.output_stride)
    params = jax.device_put(pretrained.params)
    style = pretrained.style

    def foreground(frame):
      logits = module.apply({'params': params}, normalize(frame[None], style))
      return jax.nn.sigmoid(deeplabv3.foreground_logit(logits))
    self._foreground = jax.jit(foreground)

  def start(self, video: VideoInput) -> None:
    del video

  def step(self, state: None, frame: np.ndarray) -> tuple[None, np.ndarray]:
    return state, np.asarray(self._foreground(jnp.asarray(frame, jnp.float32)))

  def add_objects(self, state, frame, slots, masks):
    raise AssertionError('The deeplab baseline is zero-shot: the runner gives it no masks.')


SYSTEM = System(name='deeplab', tasks=('unsupervised',),
                build_segmenter=lambda config, model, params: SemanticSegmenter(config))

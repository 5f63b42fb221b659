"""COSNet (Lu et al., CVPR 2019): zero-shot primary-object segmentation by co-attention.

  training   pairs of annotated frames of one video ('pair' sampler), every object as the
             foreground; BCE on both frames' outputs (`train.loss`: 'bce', or OSVOS's
             class-balanced BCE, the official code's, which on DAVIS alone over-segments).
             The paper also interleaves saliency images (an image paired with itself); no saliency data set is
             on these machines, so training sees DAVIS video pairs only.
  segmenting N reference frames spread evenly over the video (`segment.references`, default 5;
             fewer if the video is shorter; a one-frame video attends to itself) are encoded
             once when the video starts; each frame is then one encoder pass and N
             co-attention heads, whose probabilities are averaged (as the official code). A
             video costs about (frames + N) encoder passes; `segment.flip` scores the
             mirrored frame too (jvos/test_time_augmentation.py), twice the frames' cost.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvos import test_time_augmentation
from jvos import weights
from jvos.data.video import VOID
from jvos.errors import InputError
from jvos.input_pipeline import ClipSpec
from jvos.models import cosnet
from jvos.models import osvos
from jvos.models.deeplabv3 import RESNET_DEPTHS, DeepLabV3
from jvos.segment import VideoInput
from jvos.systems import System

DEEPLAB_BACKBONES = {'mobilenet_v2': 'deeplabv3', 'resnet50': 'deeplabv3_resnet50',
                     'resnet101': 'deeplabv3_resnet101'}


def create(model_config: ml_collections.ConfigDict) -> cosnet.COSNet:
  if model_config.backbone not in DEEPLAB_BACKBONES:
    raise InputError(f'model.backbone={model_config.backbone!r}; COSNet stands on DeepLabV3 '
                     f'with one of {tuple(DEEPLAB_BACKBONES)}.')
  deeplab = DeepLabV3(backbone=model_config.backbone,
                      width_multiplier=model_config.width_multiplier,
                      output_stride=model_config.output_stride,
                      aspp_rates=tuple(model_config.aspp_rates),
                      # torchvision's classifier has a 3x3 conv before its 1x1 (the prior's).
                      head_conv=model_config.backbone in RESNET_DEPTHS,
                      dtype=jnp.dtype(model_config.dtype), name='deeplab')
  return cosnet.COSNet(deeplab=deeplab, input_style=model_config.input_style,
                       classifier_prior=model_config.classifier_prior,
                       attention_pool=model_config.attention_pool)


def initial_params(model: cosnet.COSNet, model_config: ml_collections.ConfigDict,
                   seed: int) -> Any:
  """A random co-attention head on the DeepLabV3 read from `model.pretrained` (if set), and
  with `model.classifier_prior` that file's classifier."""
  images = jnp.zeros((1, 64, 64, 3))
  params = jax.tree.map(np.asarray, jax.jit(model.init)(jax.random.PRNGKey(seed), images,
                                                        images)['params'])
  if model_config.pretrained:
    # The encoder's and the classifier's params are disjoint parts of one DeepLabV3 file.
    parts = ('deeplab', 'classifier') if model_config.classifier_prior else ('deeplab',)
    pretrained = weights.pretrained_params(
        model_config.pretrained, DEEPLAB_BACKBONES[model_config.backbone],
        model_config.input_style, {k: v for part in parts for k, v in params[part].items()})
    for part in parts:
      params[part] = {key: pretrained[key] for key in params[part]}
  return params


def clip(config: ml_collections.ConfigDict) -> ClipSpec:
  del config
  return ClipSpec('pair', max_objects=VOID - 1)  # Every object is foreground.


# train.loss -> a per-pixel loss (logits, labels, valid) -> scalar.
LOSSES = {'balanced_bce': osvos.class_balanced_bce, 'bce': osvos.bce}


def loss(model: cosnet.COSNet, pixel_loss: Any, params: Any, batch: dict[str, jax.Array],
         rng: jax.Array) -> jax.Array:
  """`pixel_loss` of both frames of each pair, every object as foreground."""
  del rng
  images = batch['image'].astype(jnp.float32)
  logits = model.apply({'params': params}, images[:, 0], images[:, 1])
  total = 0.0
  for t, frame_logits in enumerate(logits):
    labels = batch['labels'][:, t]
    total += pixel_loss(frame_logits, (labels > 0) & (labels != VOID), labels != VOID)
  return total / 2


def make_loss(config: ml_collections.ConfigDict, model: cosnet.COSNet):
  if config.train.loss not in LOSSES:
    raise InputError(f'train.loss={config.train.loss!r}; use one of {tuple(LOSSES)}.')
  return functools.partial(loss, model, LOSSES[config.train.loss])


def reference_indices(num_frames: int, count: int) -> list[int]:
  """`count` frames spread evenly from the first to the last (all of them if fewer)."""
  count = min(count, num_frames)
  return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, count)})


class CoAttentionSegmenter:
  """Segmenter: each frame against the video's reference frames, their outputs averaged.

  State (on the device): the references' features (N, h, w, C).
  """

  def __init__(self, model: cosnet.COSNet, params: Any,
               segment_config: ml_collections.ConfigDict):
    references = segment_config.references
    if references < 1:
      raise InputError(f'segment.references={references}: COSNet compares each frame with at '
                       'least one reference frame; use e.g. 5.')
    flip, scales = test_time_augmentation.settings(segment_config)
    self.params, self.references = jax.device_put(params), references
    self._features = jax.jit(lambda p, frames: model.apply({'params': p}, frames,
                                                           method=cosnet.COSNet.features))

    def probabilities(p, frame, references):
      def score(views):  # Each view against every reference, the answers averaged.
        features = model.apply({'params': p}, views, method=cosnet.COSNet.features)
        logits = jax.vmap(lambda reference: model.apply(
            {'params': p}, features, jnp.broadcast_to(reference, (len(views), *reference.shape)),
            views.shape[1:3], method=cosnet.COSNet.attend))(references)
        return jnp.mean(jax.nn.sigmoid(logits), axis=0)
      return test_time_augmentation.averaged(score, frame, flip, scales)[None]
    self._probabilities = jax.jit(probabilities)

  def start(self, video: VideoInput) -> jax.Array:
    indices = reference_indices(len(video), self.references)
    return jnp.concatenate([self._features(self.params, jnp.asarray(video.frame(i)[None],
                                                                    jnp.float32))
                            for i in indices])

  def step(self, state: jax.Array, frame: np.ndarray) -> tuple[jax.Array, np.ndarray]:
    return state, np.asarray(self._probabilities(self.params, jnp.asarray(frame, jnp.float32),
                                                 state))

  def add_objects(self, state, frame, slots, masks):
    raise AssertionError('COSNet is zero-shot: the runner gives it no masks.')


SYSTEM = System(
    name='cosnet', tasks=('unsupervised',), create=create, initial_params=initial_params,
    make_loss=make_loss, clip=clip,
    build_segmenter=lambda config, model, params: CoAttentionSegmenter(
        model, params, config.segment))

"""OSVOS (Caelles et al., CVPR 2017): a parent network fine-tuned on each object's first mask.

Training (`--mode train`) makes the parent: the network of jvos/models/osvos.py on single
annotated frames, every object as foreground, with its deep-supervised balanced loss. To
segment a video, the parent is fine-tuned on the frame that introduces each object (frame 0 in
DAVIS, any frame in YouTube-VOS) with the compiled loop of jvos/finetune.py, then every later
frame is scored by each object's own network; the runner merges the objects by argmax. With
`online.every` > 0, each object's network keeps adapting during the video (OnAVOS, see
jvos/online_adaptation.py), through the same compiled loop.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvos import finetune
from jvos import test_time_augmentation
from jvos import weights
from jvos.data.video import VOID
from jvos.errors import InputError
from jvos.input_pipeline import ClipSpec
from jvos.models import osvos
from jvos.segment import VideoInput
from jvos.systems import System


def create(model_config: ml_collections.ConfigDict) -> osvos.OSVOS:
  """The OSVOS module a config's `model` field describes."""
  if model_config.backbone not in osvos.BACKBONES:
    raise InputError(f'model.backbone={model_config.backbone!r}; use one of {osvos.BACKBONES}.')
  return osvos.OSVOS(backbone=model_config.backbone, input_style=model_config.input_style,
                     width_multiplier=model_config.width_multiplier,
                     output_stride=model_config.output_stride,
                     dtype=jnp.dtype(model_config.dtype))


def initial_params(model: osvos.OSVOS, model_config: ml_collections.ConfigDict,
                   seed: int) -> Any:
  """Random side outputs on a backbone read from `model.pretrained` (if set): a parent's start.

  The file is read as the backbone's weights: .pth/.h5 for vgg16, either .tflite for
  mobilenet_v2 (the DeepLabV3 file's trunk is MobileNetV2 at width 0.5). It is checked against
  the parameter shapes before the initialisation, which takes most of a minute on 2 CPU cores,
  so a file of the wrong style or width fails at once. The initialisation is jitted: one
  compile instead of one per initializer shape (the same values, 20% sooner).
  """
  init = functools.partial(jax.jit(model.init), jax.random.PRNGKey(seed),
                           jnp.zeros((1, 64, 64, 3)))
  backbone = None
  if model_config.pretrained:
    backbone = weights.pretrained_params(model_config.pretrained, model.backbone,
                                         model.input_style,
                                         jax.eval_shape(init)['params']['backbone'])
  params = init()['params']
  return params if backbone is None else {**params, 'backbone': backbone}


def foreground(labels: jax.Array) -> jax.Array:
  """Label maps -> OSVOS targets: 1 on any object, 0 background, VOID where no loss goes."""
  return jnp.where(labels == VOID, VOID, labels > 0).astype(jnp.float32)


def loss(model: osvos.OSVOS, params: Any, batch: dict[str, jax.Array],
         rng: jax.Array, hard_weight: float = 0.0) -> jax.Array:
  """The deep-supervised balanced loss on one-frame clips, every object as foreground
  (`hard_weight`: see `osvos.class_balanced_bce`)."""
  del rng  # OSVOS has no dropout.
  outputs = model.apply({'params': params}, batch['image'][:, 0].astype(jnp.float32))
  return osvos.loss_fn(outputs, foreground(batch['labels'][:, 0]), hard_weight)


def make_loss(config: ml_collections.ConfigDict, model: osvos.OSVOS):
  del config
  return functools.partial(loss, model)


def clip(config: ml_collections.ConfigDict) -> ClipSpec:
  del config
  return ClipSpec('frame', max_objects=VOID - 1)  # Every object is foreground.


def finetune_batch(inputs: dict[str, jax.Array], rng: jax.Array,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Augmented copies of one of two frames (a coin flip per step), as the one-frame clips
  `loss` trains on. inputs: 'image' (2, H, W, 3) and 'mask' (2, H, W): the given frame twice
  to fine-tune on it, the given frame and the current one to adapt online. One batch for both
  keeps them one compiled loop."""
  pick_rng, rng = jax.random.split(rng)
  pick = jax.random.bernoulli(pick_rng).astype(jnp.int32)
  images, masks = finetune.augmented_batch(inputs['image'][pick], inputs['mask'][pick], rng,
                                           config)
  return {'image': images[:, None], 'labels': masks[:, None]}


class FinetuneSegmenter:
  """Segmenter: fine-tune the parent on each object's given mask, then score every frame.

  State: `finetune.ObjectTuning`'s: 'params', the objects' networks (stacked, one per object,
  so one jitted call scores every object of a frame; an object not fine-tuned yet holds the
  parent; only the parent when nothing is tuned, `finetune.steps=0` and `online.every=0`), and
  what online adaptation keeps.
  """

  def __init__(self, model: osvos.OSVOS, parent_params: Any,
               config: ml_collections.ConfigDict):
    # On the device once: loaded params are numpy, and every jitted call would copy them again.
    self.parent_params = jax.device_put(parent_params)
    self._tuning = finetune.ObjectTuning(
        functools.partial(loss, model, hard_weight=config.finetune.get('hard_weight', 0.0)),
        finetune_batch, config, self.parent_params)
    flip, scales = test_time_augmentation.settings(config.segment)

    def predict(params, image):
      return test_time_augmentation.averaged(
          lambda views: osvos.probabilities(model.apply({'params': params}, views)), image,
          flip, scales)
    # One network for all objects scores the frame once (vmap leaves it unbatched) and gives
    # every object that answer: `objects` sets the object axis then.
    self._predict = jax.jit(
        lambda params, image, objects: jax.vmap(
            predict, in_axes=(self._tuning.objects.axis, None), axis_size=objects)(params, image),
        static_argnums=2)

  def start(self, video: VideoInput) -> dict[str, Any]:
    return self._tuning.start(self.parent_params, max(video.num_objects, 1))

  def step(self, state: dict[str, Any], frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    scores = np.asarray(self._predict(state['params'], jnp.asarray(frame, jnp.float32),
                                      len(state['given'])))
    self._tuning.adapt(state, frame, scores)
    return state, scores

  def add_objects(self, state: dict[str, Any], frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> dict[str, Any]:
    for slot, mask in zip(slots, masks):
      self._tuning.fit(state, self.parent_params, slot, frame, mask)
    return state


SYSTEM = System(
    name='osvos', tasks=('semi-supervised',), create=create, initial_params=initial_params,
    make_loss=make_loss, clip=clip,
    build_segmenter=lambda config, model, params: FinetuneSegmenter(model, params, config))

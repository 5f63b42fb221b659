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
from jvos import online_adaptation
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

  State: 'params', the objects' networks (`finetune.ObjectParams`: stacked, one per object,
  so one jitted call scores every object of a frame; an object not fine-tuned yet holds the
  parent; only the parent when nothing is fine-tuned, `finetune.steps=0`); for
  online adaptation also each object's given frame and mask ('given') and its last mask
  ('previous'), and the frames scored so far ('frames').
  """

  def __init__(self, model: osvos.OSVOS, parent_params: Any,
               config: ml_collections.ConfigDict):
    # On the device once: loaded params are numpy, and every jitted call would copy them again.
    self.parent_params = jax.device_put(parent_params)
    self._finetuner = finetune.ObjectFinetuner(
        functools.partial(loss, model, hard_weight=config.finetune.get('hard_weight', 0.0)),
        finetune_batch, config, self.parent_params)
    self.online = online_adaptation.settings(config.get('online'))
    if self.online.every and not config.finetune.learning_rate:
      raise InputError('finetune.learning_rate=0 leaves online adaptation (which rescales it to '
                       f'online.learning_rate={self.online.learning_rate}) no rate; give it a '
                       'positive value, or turn adaptation off with online.every=0.')
    self._objects = finetune.ObjectParams(
        per_object=self._finetuner.tunes or bool(self.online.every))
    flip, scales = test_time_augmentation.settings(config.segment)

    def predict(params, image):
      return test_time_augmentation.averaged(
          lambda views: osvos.probabilities(model.apply({'params': params}, views)), image,
          flip, scales)
    # One network for all objects scores the frame once (vmap leaves it unbatched) and gives
    # every object that answer: `objects` sets the object axis then.
    self._predict = jax.jit(
        lambda params, image, objects: jax.vmap(
            predict, in_axes=(self._objects.axis, None), axis_size=objects)(params, image),
        static_argnums=2)

  def start(self, video: VideoInput) -> dict[str, Any]:
    objects = max(video.num_objects, 1)
    return {'params': self._objects.start(self.parent_params, objects),
            'given': [None] * objects, 'previous': [None] * objects, 'frames': 0}

  def step(self, state: dict[str, Any], frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    image = jnp.asarray(frame, jnp.float32)
    scores = np.asarray(self._predict(state['params'], image, len(state['given'])))
    state['frames'] += 1
    if self.online.every:
      if state['frames'] % self.online.every == 0:
        self._adapt(state, image, scores)
      state['previous'] = [None if given is None else scores[slot] > 0.5
                           for slot, given in enumerate(state['given'])]
    return state, scores

  def _adapt(self, state: dict[str, Any], image: jax.Array, scores: np.ndarray) -> None:
    """Fine-tunes each object's network on this frame's pseudo-labels and its given frame."""
    for slot, (given, previous) in enumerate(zip(state['given'], state['previous'])):
      labels = None if given is None else online_adaptation.pseudo_labels(
          scores[slot], previous, self.online.positive, self.online.negative_distance)
      if labels is not None:
        inputs = {'image': jnp.stack([given['image'], image]),
                  'mask': jnp.stack([given['mask'], jnp.asarray(labels)])}
        params = self._objects.get(state['params'], slot)
        # A new random stream per object and adaptation, none of them an object's slot (the
        # stream of its first fine-tuning): fold in the frame count too.
        tuned = self._finetuner.tune(params, inputs, state['frames'] * len(scores) + slot,
                                     self.online.steps, self.online.learning_rate)
        state['params'] = self._objects.set(state['params'], slot, tuned)

  def add_objects(self, state: dict[str, Any], frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> dict[str, Any]:
    image = jnp.asarray(frame, jnp.float32)
    for slot, mask in zip(slots, masks):
      given = {'image': image, 'mask': jnp.asarray(mask, jnp.float32)}
      twice = jax.tree.map(lambda x: jnp.stack([x, x]), given)
      state['params'] = self._objects.set(
          state['params'], slot, self._finetuner.tune(self.parent_params, twice, slot))
      if self.online.every:
        state['given'][slot] = given
        state['previous'][slot] = np.asarray(mask, bool)
    return state


SYSTEM = System(
    name='osvos', tasks=('semi-supervised',), create=create, initial_params=initial_params,
    make_loss=make_loss, clip=clip,
    build_segmenter=lambda config, model, params: FinetuneSegmenter(model, params, config))

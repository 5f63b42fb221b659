"""YouTube-VOS seq2seq (Xu et al., ECCV 2018): one ConvLSTM per object, started from the frame
and mask that introduce it.

  training   clips of T consecutive frames with one object of the first frame ('consecutive'
             sampler): the initializer sees frame 0 and its mask, the recurrence steps through
             frames 1..T-1, and the loss is OSVOS's class-balanced BCE on each frame that has a
             mask (frames without one, YouTube-VOS train's 4 of every 5, step the ConvLSTM and
             add no loss), averaged over the clip.
  segmenting an object's state is initialised on the frame that introduces it (frame 0 in
             DAVIS, any frame in YouTube-VOS); each later frame is one encoder pass for all
             objects and one ConvLSTM step and decoder per object, in one jitted call.
  online     `finetune.steps` > 0 is the paper's OL: initializer, encoder and decoder are
             fine-tuned on the augmented given frame (a two-frame clip: the frame itself, then
             its augmented copy), through the shared compiled loop, with the parameters
             `finetune.frozen` names left as they are: the ConvLSTM in the paper ('lstm'),
             the pretrained backbone too by default ('lstm,backbone'). With `online.every`
             > 0 each object's network is tuned again during the video (OnAVOS, as OSVOS's
             online adaptation): clips of the given frame, then the current frame with its
             confident pixels as targets.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvos import finetune
from jvos import weights
from jvos.data.video import VOID
from jvos.errors import InputError
from jvos.input_pipeline import ClipSpec
from jvos.models import backbones
from jvos.models import osvos
from jvos.models import s2s
from jvos.segment import VideoInput
from jvos.systems import System

LSTM_ACTIVATIONS = ('relu', 'tanh')


def create(model_config: ml_collections.ConfigDict) -> s2s.S2S:
  if model_config.backbone not in backbones.NAMES:
    raise InputError(f'model.backbone={model_config.backbone!r}; use one of {backbones.NAMES}.')
  if model_config.lstm_activation not in LSTM_ACTIVATIONS:
    raise InputError(f'model.lstm_activation={model_config.lstm_activation!r}; use one of '
                     f'{LSTM_ACTIVATIONS}.')
  if model_config.hidden < 16 or model_config.hidden % 16:
    raise InputError(f'model.hidden={model_config.hidden}: use a positive multiple of 16 (the '
                     'last decoder stages have hidden / 16 channels), e.g. 256.')
  return s2s.S2S(backbone=model_config.backbone, width_multiplier=model_config.width_multiplier,
                 input_style=model_config.input_style, hidden=model_config.hidden,
                 lstm_activation=model_config.lstm_activation, skips=model_config.skips,
                 initializer=model_config.initializer, dtype=jnp.dtype(model_config.dtype))


def initial_params(model: s2s.S2S, model_config: ml_collections.ConfigDict, seed: int) -> Any:
  """A random ConvLSTM and decoder on backbones read from `model.pretrained` (if set)."""
  frames = jnp.zeros((1, 64, 64, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), frames, frames[..., 0],
                               frames)['params']
  params = jax.tree.map(np.asarray, params)
  if model_config.pretrained:
    params['backbone'] = weights.pretrained_params(
        model_config.pretrained, model_config.backbone, model_config.input_style,
        params['backbone'])
  return params


def clip(config: ml_collections.ConfigDict) -> ClipSpec:
  if config.train.clip_length < 2:
    raise InputError(f'train.clip_length={config.train.clip_length}: S2S needs at least 2 '
                     'frames, the one it starts from and one to predict.')
  return ClipSpec('consecutive', length=config.train.clip_length, max_objects=1)


def loss(model: s2s.S2S, params: Any, batch: dict[str, jax.Array],
         rng: jax.Array) -> jax.Array:
  """The class-balanced BCE of every predicted frame with a mask, averaged over the clip."""
  del rng
  variables = {'params': params}
  images = batch['image'].astype(jnp.float32)
  labels = batch['labels']
  targets = (labels == 1).astype(jnp.float32)
  size = labels.shape[2:]
  state = model.apply(variables, images[:, 0], targets[:, 0], method=s2s.S2S.initialize)
  previous, total = targets[:, 0], 0.0
  for t in range(1, labels.shape[1]):
    stages = model.apply(variables, images[:, t], previous, method=s2s.S2S.encode)
    logits, state = model.apply(variables, stages, state, size, method=s2s.S2S.step)
    # Frames without a mask are all VOID: no loss, as class_balanced_bce leaves void out.
    total += osvos.class_balanced_bce(logits, targets[:, t], labels[:, t] != VOID)
    previous = jax.lax.stop_gradient(jax.nn.sigmoid(logits))
  return total / (labels.shape[1] - 1)


def make_loss(config: ml_collections.ConfigDict, model: s2s.S2S):
  del config
  return functools.partial(loss, model)


def finetune_batch(inputs: dict[str, jax.Array], rng: jax.Array,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Clips of the given frame, then an augmented copy to predict: of the given frame (OL), or
  of the given or the current frame, a coin flip per step (online adaptation). inputs: 'image'
  (2, H, W, 3) and 'mask' (2, H, W), as `finetune.ObjectTuning` gives them."""
  # Its own stream: with the given frame twice, the copies of before adaptation existed.
  pick = jax.random.bernoulli(jax.random.fold_in(rng, 3)).astype(jnp.int32)
  images, labels = finetune.two_frame_clips(inputs['image'][0], inputs['mask'][0], rng, config,
                                            then=(inputs['image'][pick], inputs['mask'][pick]))
  return {'image': images, 'labels': labels}


class SequenceSegmenter:
  """Segmenter: a ConvLSTM state per object, one jitted step for all objects per frame.

  State (on the device): `finetune.ObjectTuning`'s ('params' the objects' networks: one for all
  unless OL or online adaptation tunes each; what adaptation keeps), 'h' and 'c' (objects, 1,
  h, w, hidden), 'masks' each object's previous soft mask (used without an initializer only).
  """

  def __init__(self, model: s2s.S2S, params: Any, config: ml_collections.ConfigDict):
    self.model, self.params = model, jax.device_put(params)
    self._tuning = finetune.ObjectTuning(functools.partial(loss, model), finetune_batch,
                                         config, self.params)
    self._initialize = jax.jit(lambda p, frame, mask: model.apply(
        {'params': p}, frame[None], mask[None], method=s2s.S2S.initialize))

    def encode(p, frame, mask):
      return model.apply({'params': p}, frame[None], mask, method=s2s.S2S.encode)

    def decode(p, stages, h, c, size):
      logits, (h, c) = model.apply({'params': p}, stages, (h, c), size, method=s2s.S2S.step)
      return jax.nn.sigmoid(logits), h, c

    def step(params, frame, h, c, masks):
      # With one network for all objects and an initializer (the encoder then ignores the
      # masks), vmap leaves the encoder unbatched: each frame is encoded once.
      probabilities, h, c = jax.vmap(
          lambda p, h, c, mask: decode(p, encode(p, frame, mask), h, c, frame.shape[:2]),
          in_axes=(self._tuning.objects.axis, 0, 0, 0))(params, h, c, masks)
      return probabilities[:, 0], h, c
    self._step = jax.jit(step)

  def start(self, video: VideoInput) -> dict[str, Any]:
    objects = max(video.num_objects, 1)
    frame = jnp.zeros((*video.working_size, 3))
    h, c = jax.eval_shape(self._initialize, self.params, frame, frame[..., 0])
    zeros = lambda x: jnp.zeros((objects, *x.shape), x.dtype)
    return {**self._tuning.start(self.params, objects), 'h': zeros(h), 'c': zeros(c),
            'masks': jnp.zeros((objects, 1, *video.working_size))}

  def step(self, state: dict[str, Any], frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    probabilities, h, c = self._step(state['params'], jnp.asarray(frame, jnp.float32),
                                     state['h'], state['c'], state['masks'])
    state = {**state, 'h': h, 'c': c, 'masks': probabilities[:, None]}
    probabilities = np.asarray(probabilities)
    self._tuning.adapt(state, frame, probabilities)
    return state, probabilities

  def add_objects(self, state: dict[str, Any], frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> dict[str, Any]:
    image = jnp.asarray(frame, jnp.float32)
    for slot, mask in zip(slots, masks):
      params = self._tuning.fit(state, self.params, slot, frame, mask)
      mask = jnp.asarray(mask, jnp.float32)
      h, c = self._initialize(params, image, mask)
      state = {**state, 'h': state['h'].at[slot].set(h), 'c': state['c'].at[slot].set(c),
               'masks': state['masks'].at[slot, 0].set(mask)}
    return state


SYSTEM = System(
    name='s2s', tasks=('semi-supervised',), create=create, initial_params=initial_params,
    make_loss=make_loss, clip=clip,
    build_segmenter=lambda config, model, params: SequenceSegmenter(model, params, config))

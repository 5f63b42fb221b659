"""RVOS (Ventura et al., CVPR 2019): every object of a frame in one recurrent decoder pass, one
frame at a time; one-shot (RVOS-Mask: previous masks in) or zero-shot (no mask at all).

  training   clips of T consecutive frames with up to K objects of the first frame
             ('consecutive' sampler); frames without a mask (YouTube-VOS train labels every
             5th) step the recurrence but add no loss. The loss is the soft IoU of each slot
             with its object, averaged over the slots that hold one and the frames annotated,
             and summed over the clip (back-propagated through all of it). One-shot, slot k is
             object k and its previous mask is the ground truth (teacher forcing, probability
             `train.teacher_forcing`) or the model's own soft prediction, detached; the first
             frame gets its own mask, as the official code. Zero-shot, slots are matched to
             objects on the clip's first frame by Hungarian assignment on soft IoU, kept for the
             clip; slots left without an object are pushed towards empty masks
             (`train.empty_slot_weight`), which the official loss does not do: without it every
             spare slot proposes something, and an honest zero-shot benchmark (DAVIS's
             unsupervised protocol, which sees every proposal) pays for those.
  segmenting one encoder pass and one decoder pass per slot a frame; the temporal states (and,
             one-shot, each slot's soft previous mask) stay on the device. An object that
             appears late enters its slot on the frame that introduces it.
  online     one-shot, `finetune.steps` > 0 fine-tunes the video's one network on the frame
             that gives objects (frozen: `finetune.frozen`, the encoder by default), all its
             objects at once, through the shared compiled loop: two-frame clips, the frame with
             its own masks, then an augmented copy of it to predict from them. Not in the
             paper; what it is worth: experiments/rvos_davis17/README.md.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import optimize

from jvos import finetune
from jvos import weights
from jvos.data.video import VOID
from jvos.errors import InputError
from jvos.input_pipeline import ClipSpec
from jvos.models import backbones
from jvos.models import rvos
from jvos.segment import VideoInput
from jvos.systems import System

TASKS = ('semi-supervised', 'unsupervised')


def create(model_config: ml_collections.ConfigDict) -> rvos.RVOS:
  if model_config.backbone not in backbones.NAMES:
    raise InputError(f'model.backbone={model_config.backbone!r}; use one of {backbones.NAMES}.')
  if model_config.hidden < 8 or model_config.hidden % 8:
    raise InputError(f'model.hidden={model_config.hidden}: use a positive multiple of 8 (the '
                     'finest decoder layer has hidden / 8 channels), e.g. 128.')
  if not 1 <= model_config.max_objects < VOID:
    raise InputError(f'model.max_objects={model_config.max_objects}: use 1..254 slots.')
  return rvos.RVOS(backbone=model_config.backbone,
                   width_multiplier=model_config.width_multiplier,
                   input_style=model_config.input_style, hidden=model_config.hidden,
                   one_shot=model_config.one_shot, spatial=model_config.spatial,
                   temporal=model_config.temporal, dtype=jnp.dtype(model_config.dtype))


def _inputs(model: rvos.RVOS, slots: int, batch: int, size: Sequence[int]):
  return (rvos.initial_temporal(model, slots, batch, size),
          jnp.zeros((slots, batch, *size), jnp.float32))


def initial_params(model: rvos.RVOS, model_config: ml_collections.ConfigDict, seed: int) -> Any:
  """A random decoder on the backbone read from `model.pretrained` (if set)."""
  size = (64, 64)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, *size, 3)),
                               *_inputs(model, 1, 1, size))['params']
  params = jax.tree.map(np.asarray, params)
  if model_config.pretrained:
    params['encoder'] = weights.pretrained_params(
        model_config.pretrained, model_config.backbone, model_config.input_style,
        params['encoder'])
  return params


def clip(config: ml_collections.ConfigDict) -> ClipSpec:
  # Slots decoded per training clip: train.max_objects (the objects a clip of the training set
  # can hold; each slot is a decoder pass per frame, the cost of a step) or else the model's.
  return ClipSpec('consecutive', length=config.train.clip_length,
                  max_objects=config.train.get('max_objects') or config.model.max_objects)


def soft_iou(probabilities: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """Soft IoU of (..., H, W) maps over the valid pixels."""
  intersection = jnp.sum(probabilities * targets * valid, axis=(-2, -1))
  union = jnp.sum((probabilities + targets - probabilities * targets) * valid, axis=(-2, -1))
  return intersection / (union + 1e-6)


def _assignment(cost: np.ndarray) -> np.ndarray:
  """For each batch element, the object each slot is matched to (optimal assignment)."""
  return np.stack([optimize.linear_sum_assignment(c)[1] for c in cost]).astype(np.int32)


def match_slots(probabilities: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """(B, slots) object index of each slot: Hungarian assignment on 1 - soft IoU, where an
  object that is not there costs nothing to any slot.

  probabilities, targets: (slots, B, H, W); valid: (B, objects) bools. The assignment is
  computed on the host (scipy), outside differentiation: it only permutes the targets.
  """
  iou = jax.vmap(lambda p: soft_iou(p[None], targets, 1.0), in_axes=0)(probabilities)
  cost = jnp.where(valid.T[None], 1.0 - iou, 0.0)  # (slots, objects, B)
  cost = jax.lax.stop_gradient(jnp.transpose(cost, (2, 0, 1)))
  return jax.pure_callback(_assignment, jax.ShapeDtypeStruct(cost.shape[:2], jnp.int32), cost,
                           vmap_method='sequential')


def loss(model: rvos.RVOS, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
         teacher_forcing: float, empty_slot_weight: float) -> jax.Array:
  """The clip's soft-IoU loss (see the module docstring), summed over its frames."""
  labels, annotated, valid = batch['labels'], batch['annotated'], batch['objects']
  batch_size, length, height, width = labels.shape
  slots = valid.shape[1]
  images = batch['image'].reshape(batch_size * length, height, width, 3).astype(jnp.float32)
  skips = model.apply({'params': params}, images, method=rvos.RVOS.encode)
  skips = [s.reshape(batch_size, length, *s.shape[1:]) for s in skips]
  ids = jnp.arange(1, slots + 1)[:, None, None, None]
  pixels = 1.0 - (labels == VOID)  # (B, T, H, W)
  temporal, masks = _inputs(model, slots, batch_size, (height, width))
  use_truth = jax.random.bernoulli(rng, teacher_forcing, (batch_size,))
  order = jnp.broadcast_to(jnp.arange(slots), (batch_size, slots))
  total = 0.0
  for t in range(length):
    targets = (labels[:, t][None] == ids).astype(jnp.float32)  # (slots, B, H, W)
    if t == 0 and model.one_shot:
      masks = targets  # The first frame is given its own mask.
    logits, temporal = model.apply({'params': params}, [s[:, t] for s in skips], temporal,
                                   masks, (height, width), method=rvos.RVOS.decode)
    probabilities = jax.nn.sigmoid(logits)
    if t == 0 and not model.one_shot:
      order = match_slots(probabilities, targets, valid)
    targets = jnp.take_along_axis(targets, order.T[:, :, None, None], axis=0)
    slot_valid = jnp.take_along_axis(valid, order, axis=1).T  # (slots, B)
    weight = slot_valid * annotated[:, t][None]
    iou = soft_iou(probabilities, targets, pixels[:, t][None])
    total += jnp.sum(weight * (1.0 - iou)) / jnp.maximum(jnp.sum(weight), 1.0)
    if empty_slot_weight:
      spare = (1.0 - slot_valid) * annotated[:, t][None]
      mean_probability = jnp.sum(probabilities * pixels[:, t][None], axis=(-2, -1)) / (
          jnp.sum(pixels[:, t], axis=(-2, -1))[None] + 1.0)
      total += empty_slot_weight * jnp.sum(spare * mean_probability) / jnp.maximum(
          jnp.sum(spare), 1.0)
    if model.one_shot:
      truth = use_truth[None, :, None, None] & annotated[None, :, t, None, None]
      masks = jnp.where(truth, targets, jax.lax.stop_gradient(probabilities))
  return total


def make_loss(config: ml_collections.ConfigDict, model: rvos.RVOS):
  return functools.partial(loss, model, teacher_forcing=config.train.teacher_forcing,
                           empty_slot_weight=config.train.empty_slot_weight)


def finetune_batch(inputs: dict[str, jax.Array], rng: jax.Array,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """OL: clips of the given frame with its labels, then an augmented copy of both to predict;
  `inputs['objects']` says which slots hold an object."""
  images, labels = finetune.two_frame_clips(inputs['image'], inputs['labels'], rng, config)
  batch_size = images.shape[0]
  return {'image': images, 'labels': labels, 'annotated': jnp.ones((batch_size, 2), bool),
          'objects': jnp.broadcast_to(inputs['objects'], (batch_size, *inputs['objects'].shape))}


class RecurrentSegmenter:
  """Segmenter: per frame, one encoder pass and the decoder over every slot.

  State (on the device): 'params' the video's network (fine-tuned on the frames that give
  objects when `finetune.steps` > 0); 'temporal', each decoder layer's h per slot; 'masks',
  each slot's previous soft mask (one-shot).
  """

  def __init__(self, model: rvos.RVOS, params: Any, config: ml_collections.ConfigDict):
    self.model, self.params = model, jax.device_put(params)
    self.max_objects = config.model.max_objects
    self._finetuner = finetune.ObjectFinetuner(make_loss(config, model), finetune_batch, config,
                                               self.params)

    def step(params, frame, temporal, masks):
      logits, temporal = model.apply({'params': params}, frame[None], temporal, masks)
      return temporal, jax.nn.sigmoid(logits[:, 0])
    self._step = jax.jit(step)

  def start(self, video: VideoInput) -> dict[str, Any]:
    slots = video.num_objects if self.model.one_shot else self.max_objects
    if slots > self.max_objects:
      raise InputError(
          f'Video {video.name} has {slots} objects in its first masks, more than the '
          f'{self.max_objects} slots these RVOS weights were trained with (model.max_objects); '
          f'drop objects from its masks, or train with --config.model.max_objects={slots}.')
    temporal, masks = _inputs(self.model, slots, 1, video.working_size)
    return {'params': self.params, 'temporal': temporal, 'masks': masks}

  def step(self, state: dict[str, Any], frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    temporal, probabilities = self._step(state['params'], jnp.asarray(frame, jnp.float32),
                                         state['temporal'], state['masks'])
    return ({**state, 'temporal': temporal, 'masks': probabilities[:, None]},
            np.asarray(probabilities))

  def add_objects(self, state: dict[str, Any], frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> dict[str, Any]:
    params = state['params']
    if self._finetuner.tunes:
      # The given objects as one label map (slot k is label k + 1), the other slots empty.
      labels = np.zeros(masks.shape[1:], np.float32)
      for slot, mask in zip(slots, masks):
        labels[mask > 0.5] = slot + 1
      objects = np.zeros(state['masks'].shape[0], bool)
      objects[list(slots)] = True
      params = self._finetuner.tune(
          params, {'image': jnp.asarray(frame, jnp.float32), 'labels': jnp.asarray(labels),
                   'objects': jnp.asarray(objects)}, min(slots))
    new = state['masks'].at[jnp.asarray(slots), 0].set(jnp.asarray(masks, jnp.float32))
    return {**state, 'params': params, 'masks': new}


def build_segmenter(config: ml_collections.ConfigDict, model: rvos.RVOS,
                    params: Any) -> RecurrentSegmenter:
  """RVOS's segmenter, after checking that its weights were trained for the config's task."""
  one_shot_task = config.task == 'semi-supervised'
  if model.one_shot != one_shot_task:
    trained, asked = ('one-shot', 'zero-shot') if model.one_shot else ('zero-shot', 'one-shot')
    raise InputError(
        f'{config.weights} holds {trained} RVOS weights (model.one_shot={model.one_shot} in '
        f'its model_config.json) but task={config.task!r} asks for {asked}; use '
        f'{"configs/rvos_davis17.py" if model.one_shot else "configs/rvos_zeroshot_davis16.py"}'
        ' for those weights, or pass --config.weights=<weights trained for that task>.')
  if not model.one_shot and config.finetune.steps:
    raise InputError(f'finetune.steps={config.finetune.steps}: online fine-tuning learns the '
                     'given first masks, and zero-shot RVOS is given none; pass '
                     '--config.finetune.steps=0.')
  return RecurrentSegmenter(model, params, config)


SYSTEM = System(name='rvos', tasks=TASKS, create=create, initial_params=initial_params,
                make_loss=make_loss, clip=clip, build_segmenter=build_segmenter)

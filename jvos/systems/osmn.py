"""OSMN (Yang et al., CVPR 2018): one modulated forward pass per frame, no fine-tuning needed.

The network is jvos/models/osmn.py: OSVOS's, conditioned on a crop of the object (visual
guide) and on a Gaussian where it was in the previous frame (spatial prior). Here:

  training   clips of the 'guided_pair' sampler: a random annotated frame of the video gives
             the guide crop of one of its objects (`visual_guide`, jittered as the official
             code's randomize_guide); the previous annotated frame's mask gives the prior,
             perturbed (centre +-0.2 sigma, spread x / 1.4) so the network survives its own
             imperfect masks at test time; the loss is OSVOS's balanced deep supervision on the
             current frame's mask of that object.
  segmenting each object's guide is cropped from the frame that introduces it and its scales
             computed once; every frame is then one batched forward of all objects, each object's
             prior coming from its own previous prediction (sigmoid > 0.5). An object that
             disappears keeps its last prior, so it can be found again where it was last seen.
             Optionally (`finetune.steps` > 0) each object first fine-tunes the network on its
             given frame, with the compiled loop OSVOS uses (the paper's online variant).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jvos import finetune
from jvos import systems
from jvos import weights
from jvos.data.video import VOID
from jvos.errors import InputError
from jvos.input_pipeline import Clip, ClipSpec
from jvos.models import osmn
from jvos.models import osvos
from jvos.segment import VideoInput
from jvos.systems import System
from jvos.systems import osvos as osvos_system

# Guide pixels outside the object: the ImageNet mean colour, which every input style maps to
# (about) zero, as the official code zeroes them after subtracting the mean.
GUIDE_FILL = (124, 116, 104)
# The official crop: +3% per side at test time, each side moved by up to +-10% in training.
GUIDE_PAD = 0.03
MIN_GUIDE_SIZE = 32  # The guide backbone's stride: a smaller crop has no last stage.


def modulated_layers(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`model.modulated_layers` (comma-separated; empty: the backbone's default), checked."""
  names = model_config.modulated_layers
  names = tuple(n.strip() for n in names.split(',') if n.strip()) if isinstance(
      names, str) else tuple(names)
  names = names or osmn.DEFAULT_LAYERS[model_config.backbone]
  available = osmn.modulation_channels(model_config.backbone, model_config.width_multiplier)
  unknown = [n for n in names if n not in available]
  if unknown:
    raise InputError(f'model.modulated_layers names {unknown}, which the {model_config.backbone} '
                     f'backbone does not have; use names from {list(available)}.')
  return names


def create(model_config: ml_collections.ConfigDict) -> osmn.OSMN:
  """The OSMN module a config's `model` field describes."""
  if model_config.guide_backbone not in osvos.BACKBONES:
    raise InputError(f'model.guide_backbone={model_config.guide_backbone!r}; use one of '
                     f'{osvos.BACKBONES}.')
  if model_config.guide_size < MIN_GUIDE_SIZE:
    raise InputError(f'model.guide_size={model_config.guide_size} is too small for the guide '
                     f'backbone (stride 32); use at least {MIN_GUIDE_SIZE}, e.g. 224.')
  return osmn.OSMN(
      segmentation=osvos_system.create(model_config),
      guide_backbone=model_config.guide_backbone,
      guide_input_style=model_config.guide_input_style,
      guide_width_multiplier=model_config.guide_width_multiplier,
      modulated_layers=modulated_layers(model_config), visual=model_config.visual,
      spatial=model_config.spatial, dropout=model_config.dropout)


def _dummy_inputs(guide_size: int) -> tuple[jax.Array, ...]:
  return (jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, guide_size, guide_size, 3)),
          jnp.zeros((1, 4)))


def initial_params(model: osmn.OSMN, model_config: ml_collections.ConfigDict,
                   seed: int) -> Any:
  """OSMN's start: modulators at identity on a segmentation network and a guide backbone.

  The segmentation network comes from `model.segmentation_weights` (an OSVOS parent's
  params.msgpack: OSMN then starts as that parent) or its backbone from `model.pretrained`;
  the guide backbone from `model.guide_pretrained`. Each may be empty (random init).
  """
  # Compiled: eager initialisation runs op by op, which takes minutes for two backbones.
  params = jax.jit(model.init)(jax.random.PRNGKey(seed),
                               *_dummy_inputs(model_config.guide_size))['params']
  params = jax.tree.map(np.asarray, params)
  if model_config.segmentation_weights:
    parent, parent_params, _ = systems.load_weights(model_config.segmentation_weights,
                                                 systems.get('osvos'))
    shapes = lambda tree: jax.tree.map(np.shape, tree)
    if shapes(parent_params) != shapes(params['segmentation']):
      raise InputError(
          f'{model_config.segmentation_weights} is an OSVOS {parent.backbone} of width '
          f'{parent.width_multiplier}, which does not fit model.backbone='
          f'{model_config.backbone!r}, model.width_multiplier={model_config.width_multiplier}.')
    params['segmentation'] = parent_params
  elif model_config.pretrained:
    params['segmentation']['backbone'] = weights.pretrained_params(
        model_config.pretrained, model_config.backbone, model_config.input_style,
        params['segmentation']['backbone'])
  if model_config.guide_pretrained:
    guide = params['visual_modulator']
    guide['backbone'] = weights.pretrained_params(
        model_config.guide_pretrained, model_config.guide_backbone,
        model_config.guide_input_style, guide['backbone'])
  return params


def visual_guide(image: np.ndarray, mask: np.ndarray, size: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """The object's crop (size, size, 3) uint8: its bounding box (padded by GUIDE_PAD, or each
  side jittered by +-10% when `rng` is given, with a random flip), background filled with
  GUIDE_FILL, stretched to a square. An empty mask gives a crop of GUIDE_FILL alone."""
  ys, xs = np.nonzero(mask)
  if not len(ys):
    return np.broadcast_to(np.asarray(GUIDE_FILL, np.uint8), (size, size, 3)).copy()
  top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
  height, width = bottom - top, right - left
  if rng is None:
    moves = np.array([-GUIDE_PAD, GUIDE_PAD, -GUIDE_PAD, GUIDE_PAD])
  else:
    moves = rng.uniform(-0.1, 0.1, 4)
  top, bottom = top + moves[0] * height, bottom + moves[1] * height
  left, right = left + moves[2] * width, right + moves[3] * width
  # At least a few pixels, whatever the jitter: a tiny object still gives a usable crop.
  if bottom - top < 4:
    top, bottom = (top + bottom) / 2 - 2, (top + bottom) / 2 + 2
  if right - left < 4:
    left, right = (left + right) / 2 - 2, (left + right) / 2 + 2
  filled = np.where(mask[..., None], image, np.asarray(GUIDE_FILL, np.uint8))
  # One affine map from the box to the square (pixel i spans i - 0.5 .. i + 0.5, in the
  # frame and in the crop); sides beyond the frame read GUIDE_FILL.
  scale_x, scale_y = size / (right - left), size / (bottom - top)
  affine = np.array([[scale_x, 0, -(left - 0.5) * scale_x - 0.5],
                     [0, scale_y, -(top - 0.5) * scale_y - 0.5]], np.float32)
  crop = cv2.warpAffine(filled, affine, (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=GUIDE_FILL)
  if rng is not None and rng.random() < 0.5:
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def prepare(clip: Clip, rng: np.random.Generator, *, guide_size: int) -> Clip:
  """Training clip (guide, previous, current) -> the guide's crop of object 1, and the pair."""
  guide = visual_guide(clip['image'][0], clip['labels'][0] == 1, guide_size, rng)
  return {**clip, 'guide': guide, 'image': clip['image'][1:], 'labels': clip['labels'][1:],
          'annotated': clip['annotated'][1:]}


def clip(config: ml_collections.ConfigDict) -> ClipSpec:
  return ClipSpec('guided_pair', max_objects=1,
                  prepare=functools.partial(prepare, guide_size=config.model.guide_size))


def perturb_priors(priors: jax.Array, rng: jax.Array, shift: float,
                   spread: float) -> jax.Array:
  """Centres moved by up to +-shift sigma, spreads scaled by up to x/ spread, per axis."""
  shift_rng, spread_rng = jax.random.split(rng)
  sigma = priors[:, 2:]
  centre = priors[:, :2] + jax.random.uniform(shift_rng, sigma.shape, minval=-shift,
                                              maxval=shift) * sigma
  sigma = sigma * jnp.exp(jax.random.uniform(spread_rng, sigma.shape, minval=-1, maxval=1) *
                          jnp.log(spread))
  return jnp.concatenate([centre, sigma], axis=1)


def loss(model: osmn.OSMN, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
         prior_shift: float, prior_spread: float) -> jax.Array:
  """Balanced deep supervision on the current frame, given the guide and the previous mask."""
  prior_rng, dropout_rng = jax.random.split(rng)
  priors = jax.vmap(osmn.prior_from_mask)(batch['labels'][:, 0] == 1)
  priors = perturb_priors(priors, prior_rng, prior_shift, prior_spread)
  outputs = model.apply({'params': params}, batch['image'][:, 1].astype(jnp.float32),
                        batch['guide'].astype(jnp.float32), priors, train=True,
                        rngs={'dropout': dropout_rng})
  current = batch['labels'][:, 1]
  return osvos.loss_fn(outputs, jnp.where(current == VOID, VOID, current == 1))


def make_loss(config: ml_collections.ConfigDict, model: osmn.OSMN):
  """`loss` with the config's prior perturbation, as the trainer and fine-tuning call it."""
  return functools.partial(loss, model, prior_shift=config.train.prior_shift,
                           prior_spread=config.train.prior_spread)


def finetune_batch(inputs: dict[str, jax.Array], rng: jax.Array,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """The official online variant: the given frame, augmented, is the previous and the current
  frame (its prior is perturbed by the loss); the guide stays the given one."""
  images, masks = finetune.augmented_batch(inputs['image'], inputs['mask'], rng, config)
  return {'image': jnp.stack([images, images], axis=1), 'labels': jnp.stack([masks, masks], 1),
          'guide': jnp.broadcast_to(inputs['guide'], (config.batch_size, *inputs['guide'].shape))}


class ModulatedSegmenter:
  """Segmenter: per object a guide's scales and a prior; one batched forward per frame.

  State (on the device): 'params' the objects' networks (`finetune.ObjectParams`: one for
  all unless fine-tuned), 'scales' (objects, channels), 'priors' (objects, 4).
  """

  def __init__(self, model: osmn.OSMN, params: Any, config: ml_collections.ConfigDict):
    self.model, self.params = model, jax.device_put(params)
    self.guide_size = config.model.guide_size
    self._finetuner = finetune.ObjectFinetuner(make_loss(config, model), finetune_batch, config,
                                               self.params)
    self._scales = jax.jit(lambda p, guide: model.apply(
        {'params': p}, guide[None], method=osmn.OSMN.scales)[0])
    self._objects = finetune.ObjectParams(per_object=self._finetuner.tunes)
    self._step = jax.jit(functools.partial(_step, model, self._objects.axis))

  def start(self, video: VideoInput) -> dict[str, Any]:
    objects = max(video.num_objects, 1)
    segmentation = self.model.segmentation
    channels = osmn.modulation_channels(segmentation.backbone, segmentation.width_multiplier)
    total = sum(channels[name] for name in self.model.modulated_layers)
    return {'params': self._objects.start(self.params, objects),
            'scales': jnp.ones((objects, total)), 'priors': jnp.zeros((objects, 4))}

  def step(self, state: dict[str, Any], frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    priors, probabilities = self._step(state['params'], state['scales'], state['priors'],
                                       jnp.asarray(frame, jnp.float32))
    return {**state, 'priors': priors}, np.asarray(probabilities)

  def add_objects(self, state: dict[str, Any], frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> dict[str, Any]:
    image = jnp.asarray(frame, jnp.float32)
    for slot, mask in zip(slots, masks):
      guide = jnp.asarray(visual_guide(frame, mask, self.guide_size), jnp.float32)
      inputs = {'image': image, 'mask': jnp.asarray(mask, jnp.float32), 'guide': guide}
      params = self._finetuner.tune(self.params, inputs, slot)
      state = {
          'params': self._objects.set(state['params'], slot, params),
          'scales': state['scales'].at[slot].set(self._scales(params, guide)),
          'priors': state['priors'].at[slot].set(osmn.prior_from_mask(jnp.asarray(mask))),
      }
    return state


def _step(model: osmn.OSMN, params_axis: int | None, params: Any, scales: jax.Array,
          priors: jax.Array, frame: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Every object on one frame: (new priors, probabilities (objects, H, W)); `params` as
  `finetune.ObjectParams` holds them, `params_axis` its axis."""
  def one(p, s, prior):
    outputs = model.apply({'params': p}, frame[None], s[None], prior[None],
                          method=osmn.OSMN.segment)
    return osvos.probabilities(outputs)[0]

  probabilities = jax.vmap(one, in_axes=(params_axis, 0, 0))(params, scales, priors)
  new = jax.vmap(osmn.prior_from_mask)(probabilities > 0.5)
  # An object not found keeps the prior where it was last seen.
  return jnp.where(new[:, 2:3] > 0, new, priors), probabilities


SYSTEM = System(
    name='osmn', tasks=('semi-supervised',), create=create, initial_params=initial_params,
    make_loss=make_loss, clip=clip,
    build_segmenter=lambda config, model, params: ModulatedSegmenter(model, params, config))

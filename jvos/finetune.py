"""Online fine-tuning: adapt a trained network to one object of one video, as one compiled loop.

All fine-tuning steps are ONE compiled function: a `lax.fori_loop` over steps whose body builds a
batch from the given frame on device (the system's `make_batch`, typically `augment`: random
scale, shift and flip, resampled with map_coordinates), takes a gradient of the system's own
training loss and applies the optax update. Nothing returns to Python between steps, so the
loop costs what its arithmetic costs, on CPU, GPU or TPU alike. OSVOS fine-tunes every object
this way; OSMN and S2S can fine-tune too (their papers' online variants), and RVOS (not in its
paper). OSVOS and S2S can also adapt each object during the video with the same compiled loop
(online adaptation, `ObjectTuning`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jvos import errors
from jvos import input_pipeline
from jvos import online_adaptation
from jvos import train


def augment(image: jax.Array, mask: jax.Array, rng: jax.Array, max_scale: float,
            max_shift: float, max_rotation: float = 0.0, colour_jitter: float = 0.0,
            crop_size: int = 0) -> tuple[jax.Array, jax.Array]:
  """A random similarity transform (scale, shift, rotation, horizontal flip) of one image and
  its mask, and a random colour jitter of the image, optionally cropped.

  image: (H, W, 3) float; mask: (H, W) float labels. Output has the input's size, or with
  `crop_size` > 0 at most crop_size x crop_size, centred on the object (the mask's 1s) moved by
  up to half the crop either way and kept inside the frame; pixels coming from outside the
  frame repeat the border (image) or are background (mask). Scale in
  [1 / max_scale, max_scale], shift up to max_shift of the frame's size, rotation up to
  max_rotation degrees either way, brightness, contrast and saturation factors in
  [1 - colour_jitter, 1 + colour_jitter] (as training's `train.colour_jitter`).
  """
  height, width = mask.shape
  out_height, out_width = ((min(crop_size, height), min(crop_size, width)) if crop_size
                           else (height, width))
  scale_rng, shift_rng, flip_rng = jax.random.split(rng, 3)
  # Their own streams: with no rotation, jitter or crop, the same copies as before they existed.
  angle_rng, colour_rng = jax.random.split(jax.random.fold_in(rng, 1))
  crop_rng = jax.random.fold_in(rng, 2)
  scale = jnp.exp(jax.random.uniform(scale_rng, (), minval=-1, maxval=1) * jnp.log(max_scale))
  shift = jax.random.uniform(shift_rng, (2,), minval=-max_shift, maxval=max_shift)
  shift = shift * jnp.array([height, width])
  flip = jax.random.bernoulli(flip_rng)
  angle = jnp.deg2rad(jax.random.uniform(angle_rng, (), minval=-1, maxval=1) * max_rotation)
  rows, cols = jnp.meshgrid(jnp.arange(out_height, dtype=jnp.float32),
                            jnp.arange(out_width, dtype=jnp.float32), indexing='ij')
  center = jnp.array([(height - 1) / 2, (width - 1) / 2])
  # Where the output's centre comes from: the frame's centre, or the crop's.
  source_center = center if not crop_size else _crop_center(mask, crop_rng, out_height,
                                                             out_width, center)
  cols = jnp.where(flip, out_width - 1 - cols, cols)
  # Inverse map: output pixel -> where it comes from in the input (rotated about the centre).
  rows = rows - (out_height - 1) / 2 - shift[0]
  cols = cols - (out_width - 1) / 2 - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_rows = (cos * rows - sin * cols) / scale + source_center[0]
  src_cols = (sin * rows + cos * cols) / scale + source_center[1]
  sample = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=[src_rows, src_cols])
  image = jnp.stack([sample(image[..., c], order=1, mode='nearest') for c in range(3)], -1)
  mask = sample(mask, order=0, mode='constant', cval=0.0)
  if colour_jitter:
    factors = jax.random.uniform(colour_rng, (3,), minval=1 - colour_jitter,
                                 maxval=1 + colour_jitter)
    image = input_pipeline.adjust_colour(image, *factors)
  return image, mask


def _crop_center(mask: jax.Array, rng: jax.Array, out_height: int, out_width: int,
                 frame_center: jax.Array) -> jax.Array:
  """A crop's centre: the object's centroid (`frame_center` without one) moved by up to half
  the crop either way, then kept where the crop fits in the frame."""
  height, width = mask.shape
  weight = (mask == 1).astype(jnp.float32)
  row_sums = weight.sum(1)
  total = row_sums.sum()
  centroid = jnp.array([row_sums @ jnp.arange(height, dtype=jnp.float32),
                        weight.sum(0) @ jnp.arange(width, dtype=jnp.float32)])
  centroid = jnp.where(total > 0, centroid / jnp.maximum(total, 1), frame_center)
  half = jnp.array([out_height, out_width], jnp.float32) / 2
  centre = centroid + jax.random.uniform(rng, (2,), minval=-1, maxval=1) * half
  low, high = half - 0.5, jnp.array([height, width], jnp.float32) - half - 0.5
  return jnp.clip(centre, low, high)


def augmented_batch(image: jax.Array, mask: jax.Array, rng: jax.Array,
                    config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """`config.batch_size` augmented copies of one frame and its mask, (B, h, w, 3) and
  (B, h, w), as the `finetune` section's max_scale, max_shift, max_rotation, colour_jitter
  and crop_size (absent: 0, the whole frame) say."""
  one = functools.partial(augment, max_scale=config.max_scale, max_shift=config.max_shift,
                          max_rotation=config.max_rotation, colour_jitter=config.colour_jitter,
                          crop_size=config.get('crop_size', 0))
  return jax.vmap(one, in_axes=(None, None, 0))(image, mask,
                                                jax.random.split(rng, config.batch_size))


def two_frame_clips(image: jax.Array, labels: jax.Array, rng: jax.Array,
                    config: ml_collections.ConfigDict,
                    then: tuple[jax.Array, jax.Array] | None = None
                    ) -> tuple[jax.Array, jax.Array]:
  """OL batches of the recurrent systems (S2S, RVOS): `config.batch_size` clips of the given
  frame and its labels, then an augmented copy of both to predict from them (the motion made
  up), (B, 2, h, w, 3) and (B, 2, h, w). `then`: the frame and labels to copy instead (online
  adaptation's current frame and its pseudo-labels)."""
  images, augmented = augmented_batch(*(then or (image, labels)), rng, config)
  first = jnp.broadcast_to(image, images.shape)
  first_labels = jnp.broadcast_to(labels, augmented.shape)
  return jnp.stack([first, images], 1), jnp.stack([first_labels, augmented], 1)


def make_finetune(loss_fn: Callable[[Any, dict, jax.Array], jax.Array],
                  optimizer: optax.GradientTransformation,
                  make_batch: Callable[[Any, jax.Array], dict]):
  """Builds the compiled fine-tuning loop.

  The number of steps and a factor on every update are arguments of the compiled function, not
  constants in it: a segmenter that fine-tunes on the first frame (hundreds of steps) and adapts
  during the video (a few steps at a smaller rate, jvos/online_adaptation.py) compiles one loop
  for both, which on 2 CPU cores saves a compile of ~17 s per process.

  Args:
    loss_fn: the system's training loss, (params, batch, rng) -> scalar.
    optimizer: e.g. `jvos.train.make_optimizer(config.finetune, ...)`; an optax mask in it
      freezes parameters (S2S keeps its ConvLSTM fixed).
    make_batch: (inputs, rng) -> a training batch, built on device from `inputs`, what
      `finetune` is called with (e.g. the given frame and its mask).

  Returns:
    finetune(params, inputs, rng, steps, update_scale) -> (params, last step's loss),
    jit-compiled: `steps` updates from a fresh optimizer state, each multiplied by
    `update_scale` (1: as the optimizer says; else the same as scaling its learning rate, weight
    decay included).
    Step i draws its randomness from fold_in(rng, i).
  """
  @jax.jit
  def finetune(params, inputs, rng, steps, update_scale):
    scaled = optax.chain(optimizer, optax.scale(update_scale))

    def body(step, carry):
      params, opt_state, _ = carry
      batch_rng, loss_rng = jax.random.split(jax.random.fold_in(rng, step))
      batch = make_batch(inputs, batch_rng)
      loss, grads = jax.value_and_grad(loss_fn)(params, batch, loss_rng)
      updates, opt_state = scaled.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    params, _, loss = jax.lax.fori_loop(0, steps, body,
                                        (params, scaled.init(params), jnp.zeros(())))
    return params, loss

  return finetune


class ObjectParams:
  """Each object's network, as segmenters hold it: one network for all objects while none is
  fine-tuned for itself (`per_object` False), else one copy per object stacked on a leading
  axis. Segmenters vmap their frame step over objects with `axis` as the parameters' in_axes:
  with one shared network, whatever depends only on the frame (a backbone before its first
  modulated or per-object input) is computed once, and the rest runs as one batched
  convolution; vmapping over stacked identical copies runs one convolution per copy (3.6x a
  frame's time for 2 objects, experiments/objects_speed.md).
  """

  def __init__(self, per_object: bool):
    self.per_object = per_object
    self.axis = 0 if per_object else None

  def start(self, params: Any, num_objects: int) -> Any:
    """What a video starts with: `num_objects` stacked copies of `params`, or `params`."""
    return _stack_copies(params, num_objects) if self.per_object else params

  def get(self, held: Any, slot: int) -> Any:
    """Object `slot`'s network."""
    return _get_slot(held, slot) if self.per_object else held

  def set(self, held: Any, slot: int, params: Any) -> Any:
    """`held` with object `slot`'s network replaced by `params`."""
    if not self.per_object:
      if params is not held:
        raise ValueError('objects share one network here: hold them with '
                         'ObjectParams(per_object=True) to give one its own.')
      return held
    return _set_slot(held, slot, params)


# Jitted over the whole tree (the slot traced): one dispatch and one compile per network,
# where eager per-leaf ops compiled one op for each of its ~100 leaf shapes (~9 s on 2 CPU
# cores for the first object of a video; ~3 s to stack the copies of every video) and
# dispatched one op per leaf.
_stack_copies = jax.jit(
    lambda params, num_objects: jax.tree.map(
        lambda x: jnp.repeat(x[None], num_objects, axis=0), params),
    static_argnums=1)
_get_slot = jax.jit(lambda held, slot: jax.tree.map(lambda x: x[slot], held))
_set_slot = jax.jit(
    lambda held, slot, params: jax.tree.map(lambda s, x: s.at[slot].set(x), held, params))


class ObjectFinetuner:
  """Online fine-tuning of one network per object, as segmenters use it (OSVOS always; OSMN,
  S2S and RVOS, which tunes one network per video on all its objects, when `finetune.steps`
  > 0): `tune(params, inputs, stream)` runs the compiled loop on the object's given frame and
  returns its own parameters; with 0 steps, the given ones.

  Args:
    loss_fn: the system's training loss, (params, batch, rng) -> scalar.
    make_batch: (inputs, rng, config) -> a training batch, built on device from `inputs` as
      the `finetune` section (`config`) says.
    config: the run's config: its `finetune` section (steps, batch_size, the optimizer's fields
      as `train`'s and, optionally, frozen: param path prefixes left as they are, e.g. S2S's
      'lstm') and its seed (stream s fine-tunes with key fold_in(seed, s)).
    params: a tree like the parameters (for `finetune.frozen`).
  """

  def __init__(self, loss_fn, make_batch, config: ml_collections.ConfigDict, params: Any):
    section = config.finetune
    errors.check_counts(section, 'finetune')
    self.seed = config.seed
    self.steps, self.learning_rate = section.steps, section.learning_rate
    frozen = train.frozen_mask(params, section.get('frozen', ''))
    optimizer = train.make_optimizer(section, train.make_schedule(section, section.steps), frozen)
    self._run = make_finetune(train.freeze(loss_fn, frozen), optimizer,
                              functools.partial(make_batch, config=section))

  @property
  def tunes(self) -> bool:
    """Whether `tune` changes anything by default (`finetune.steps` > 0): objects then need
    their own networks (`ObjectParams(per_object=True)`)."""
    return self.steps > 0

  def tune(self, params: Any, inputs: Any, stream: int, steps: int | None = None,
           learning_rate: float | None = None) -> Any:
    """`params` fine-tuned on `inputs`, with random stream `stream` of the seed (the object's
    slot; a segmenter that tunes an object again passes a new one). `steps` and
    `learning_rate` default to the `finetune` section's; others (online adaptation's) run the
    same compiled loop, from the start of the section's schedule with its peak rescaled."""
    steps = self.steps if steps is None else steps
    if not steps:
      return params
    scale = 1.0 if learning_rate is None else learning_rate / self.learning_rate
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), stream)
    tuned, _ = self._run(params, inputs, key, steps, scale)
    return tuned


class ObjectTuning:
  """Each object's own network, as the segmenters that fine-tune one per object hold it (OSVOS,
  S2S): fine-tuned on the frame and mask that give the object (`fit`), and with `online.every`
  > 0 tuned again during the video, after every `every`-th frame, on that frame's confident
  pixels and its given frame (`adapt`: OnAVOS, jvos/online_adaptation.py).

  make_batch (as `ObjectFinetuner`'s) gets inputs 'image' (2, H, W, 3) and 'mask' (2, H, W):
  the given frame twice to fine-tune on it, the given frame and the current one with its
  pseudo-labels to adapt. One shape for both keeps them one compiled loop.

  A video's state (`start`): 'params', the networks (`objects`, an `ObjectParams`: one for all
  while nothing is tuned); 'given', each object's given frame and mask; 'previous', its last
  mask; 'frames', the frames scored so far. The segmenter adds its own fields.
  """

  def __init__(self, loss_fn, make_batch, config: ml_collections.ConfigDict, params: Any):
    self.finetuner = ObjectFinetuner(loss_fn, make_batch, config, params)
    self.online = online_adaptation.settings(config.get('online'))
    if self.online.every and not config.finetune.learning_rate:
      raise errors.InputError(
          'finetune.learning_rate=0 leaves online adaptation (which rescales it to '
          f'online.learning_rate={self.online.learning_rate}) no rate; give it a positive '
          'value, or turn adaptation off with online.every=0.')
    self.objects = ObjectParams(per_object=self.finetuner.tunes or bool(self.online.every))

  def start(self, params: Any, num_objects: int) -> dict[str, Any]:
    return {'params': self.objects.start(params, num_objects), 'given': [None] * num_objects,
            'previous': [None] * num_objects, 'frames': 0}

  def fit(self, state: dict[str, Any], params: Any, slot: int, image: np.ndarray,
          mask: np.ndarray) -> Any:
    """Object `slot`'s network: `params` fine-tuned on its given frame, kept in `state`, which
    remembers that frame for adapting."""
    image, mask = np.asarray(image, np.float32), np.asarray(mask, np.float32)
    tuned = self.finetuner.tune(
        params, {'image': np.stack([image, image]), 'mask': np.stack([mask, mask])}, slot)
    state['params'] = self.objects.set(state['params'], slot, tuned)
    if self.online.every:
      state['given'][slot] = {'image': image, 'mask': mask}
      state['previous'][slot] = mask > 0.5
    return tuned

  def adapt(self, state: dict[str, Any], image: np.ndarray, scores: np.ndarray) -> None:
    """After a frame was scored (`scores`: each object's probabilities): every `every`-th
    frame, each object's network tuned on that frame's pseudo-labels and its given frame."""
    state['frames'] += 1
    if not self.online.every:
      return
    if state['frames'] % self.online.every == 0:
      current = np.asarray(image, np.float32)
      for slot, (given, previous) in enumerate(zip(state['given'], state['previous'])):
        labels = None if given is None else online_adaptation.pseudo_labels(
            scores[slot], previous, self.online.positive, self.online.negative_distance)
        if labels is not None:
          inputs = {'image': np.stack([given['image'], current]),
                    'mask': np.stack([given['mask'], labels])}
          # A new random stream per object and adaptation, none of them an object's slot (the
          # stream of its first fine-tuning): fold in the frame count too.
          tuned = self.finetuner.tune(self.objects.get(state['params'], slot), inputs,
                                      state['frames'] * len(scores) + slot,
                                      self.online.steps, self.online.learning_rate)
          state['params'] = self.objects.set(state['params'], slot, tuned)
    state['previous'] = [None if given is None else scores[slot] > 0.5
                         for slot, given in enumerate(state['given'])]

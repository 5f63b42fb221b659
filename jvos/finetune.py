"""Online fine-tuning (OSVOS): adapt a parent network to one object, then segment every frame.

All fine-tuning steps are ONE compiled function: a `lax.scan` over steps whose body augments the
first frame on device (random scale, shift and flip, resampled with map_coordinates), takes a
gradient and applies the optax update. Nothing returns to Python between steps, so the loop
costs what its arithmetic costs, on CPU, GPU or TPU alike. Frames are then segmented in
fixed-size jit-compiled batches (one compilation per video size).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jvos.data.video import Video


def augment(image: jax.Array, mask: jax.Array, rng: jax.Array, max_scale: float,
            max_shift: float) -> tuple[jax.Array, jax.Array]:
  """A random similarity transform (scale, shift, horizontal flip) of one image and its mask.

  image: (H, W, 3) float; mask: (H, W) float labels. Output has the input's size; pixels coming
  from outside the frame repeat the border (image) or are background (mask).
  """
  height, width = mask.shape
  scale_rng, shift_rng, flip_rng = jax.random.split(rng, 3)
  scale = jnp.exp(jax.random.uniform(scale_rng, (), minval=-1, maxval=1) * jnp.log(max_scale))
  shift = jax.random.uniform(shift_rng, (2,), minval=-max_shift, maxval=max_shift)
  shift = shift * jnp.array([height, width])
  flip = jax.random.bernoulli(flip_rng)
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing='ij')
  center = jnp.array([(height - 1) / 2, (width - 1) / 2])
  cols = jnp.where(flip, width - 1 - cols, cols)
  # Inverse map: output pixel -> where it comes from in the input.
  src_rows = (rows - center[0] - shift[0]) / scale + center[0]
  src_cols = (cols - center[1] - shift[1]) / scale + center[1]
  sample = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=[src_rows, src_cols])
  image = jnp.stack([sample(image[..., c], order=1, mode='nearest') for c in range(3)], -1)
  mask = sample(mask, order=0, mode='constant', cval=0.0)
  return image, mask


def make_finetune(apply_fn: Callable[..., Any], loss_fn: Callable[..., jax.Array],
                  optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict):
  """Builds the compiled fine-tuning loop.

  Returns finetune(params, image (H, W, 3) float 0..255, mask (H, W) float, rng) ->
  (params, per-step losses). `config` gives steps, batch_size, max_scale, max_shift.
  """
  def step_loss(params, images, masks):
    return loss_fn(apply_fn({'params': params}, images), masks)

  @jax.jit
  def finetune(params, image, mask, rng):
    def body(carry, step_rng):
      params, opt_state = carry
      batch_rngs = jax.random.split(step_rng, config.batch_size)
      images, masks = jax.vmap(augment, in_axes=(None, None, 0, None, None))(
          image, mask, batch_rngs, config.max_scale, config.max_shift)
      loss, grads = jax.value_and_grad(step_loss)(params, images, masks)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(body, (params, optimizer.init(params)),
                                       jax.random.split(rng, config.steps))
    return params, losses

  return finetune


def resize_frame(frame: np.ndarray, scale: float) -> np.ndarray:
  if scale == 1.0:
    return frame
  height, width = frame.shape[:2]
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class FinetuneSegmenter:
  """Segmenter: fine-tune the parent on each object's given mask, then predict every frame.

  One fine-tune per object; the runner (jvos/segment.py) merges the objects' probabilities by
  argmax, so multi-object videos need nothing more here.
  """

  def __init__(self, apply_fn, loss_fn, probabilities_fn, parent_params, optimizer,
               config: ml_collections.ConfigDict, seed: int = 0):
    # On the device once: loaded params are numpy, and every jitted call would copy them again.
    self.parent_params = jax.device_put(parent_params)
    self.config = config
    self.seed = seed
    self._finetune = make_finetune(apply_fn, loss_fn, optimizer, config) if config.steps else None
    self._predict = jax.jit(lambda params, images: probabilities_fn(
        apply_fn({'params': params}, images)))

  def finetuned_params(self, video: Video) -> list[Any]:
    """One set of params per object of the video (the parent itself when steps == 0)."""
    given = video.given_masks()
    all_params = []
    for obj in video.object_ids:
      frame_index, mask = given[obj]
      if self._finetune is None:
        all_params.append(self.parent_params)
        continue
      image = resize_frame(video.frame(frame_index), self.config.input_scale)
      mask = resize_frame(mask.astype(np.uint8), self.config.input_scale)
      rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), obj)
      params, _ = self._finetune(self.parent_params, jnp.asarray(image, jnp.float32),
                                 jnp.asarray(mask, jnp.float32), rng)
      all_params.append(params)
    return all_params

  def __call__(self, video: Video) -> Iterator[np.ndarray]:
    all_params = self.finetuned_params(video)
    batch_size = self.config.inference_batch_size
    for start in range(0, len(video), batch_size):
      indices = range(start, min(start + batch_size, len(video)))
      frames = [video.frame(i) for i in indices]
      height, width = frames[0].shape[:2]
      batch = np.stack([resize_frame(f, self.config.input_scale) for f in frames])
      # Pad the last batch to the full size so every batch reuses one compiled function.
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(frames), 0)])
      probabilities = np.stack([np.asarray(self._predict(p, jnp.asarray(batch, jnp.float32)))
                                for p in all_params], axis=1)[:len(frames)]
      for scores in probabilities:
        yield np.stack([cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR)
                        for s in scores])

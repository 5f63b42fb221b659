"""RVOS (Ventura et al., CVPR 2019): an encoder and a ConvLSTM decoder recurrent over the object
slots of a frame (spatial) and over frames (temporal).

Per frame the encoder runs once: a backbone's stages at 1/32, 1/16, 1/8 and 1/4, each through a
3x3 conv to the decoder's sizes (hidden, hidden, hidden/2, hidden/4 channels). The decoder then
runs once per slot, in order, each run giving one mask at 1/2 of the input, upsampled to it.
Its four ConvLSTM layers go coarse to fine; layer l takes as input the skip features at its
scale, the previous layer's output upsampled to that scale, and (as the official code):

  spatial recurrence   the (h, c) state of layer l for the previous slot of this frame: the
                       LSTM state proper, so slot k knows what slots 0..k-1 took;
  temporal recurrence  the h of layer l for this slot in the previous frame, as extra input
                       channels, so a slot follows the same object through the video;
  one-shot (RVOS-Mask) the slot's mask in the previous frame, max-pooled to the layer's scale,
                       as one more input channel.

A frame's cost is one encoder pass plus one small decoder pass per slot, so an extra object
costs the decoder's share only. `spatial=False` / `temporal=False` drop that recurrence (the
paper's T and S ablations; zeros in its place).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models import backbones
from jvos.models.layers import Conv, ConvLSTMCell
from jvos.models.preprocessing import normalize

# Decoder layers coarse to fine: (skip channels, hidden channels) as multiples of `hidden`.
SKIP_FRACTIONS = (1, 1, 1 / 2, 1 / 4)
HIDDEN_FRACTIONS = (1, 1 / 2, 1 / 4, 1 / 8)

State = list[tuple[jax.Array, jax.Array]]


def resize(x: jax.Array, size: Sequence[int], method: str = 'bilinear') -> jax.Array:
  """(B, H, W, C) -> (B, *size, C); a no-op at that size."""
  if tuple(x.shape[1:3]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method)


def mask_pyramid(masks: jax.Array, sizes: Sequence[Sequence[int]]) -> list[jax.Array]:
  """Masks (B, H, W) max-pooled by 2 (ceil, as the backbones halve sizes) down to each of
  `sizes`, as (B, h, w, 1): an object of a few pixels still shows at 1/32."""
  x, pooled = masks[..., None], {}
  for index in sorted(range(len(sizes)), key=lambda i: -sizes[i][0]):  # Finest first.
    while x.shape[1] > sizes[index][0] or x.shape[2] > sizes[index][1]:
      x = nn.max_pool(x, (2, 2), strides=(2, 2),
                      padding=((0, x.shape[1] % 2), (0, x.shape[2] % 2)))
    pooled[index] = resize(x, sizes[index], 'nearest')
  return [pooled[index] for index in range(len(sizes))]


class SlotDecoder(nn.Module):
  """One slot of one frame: (spatial state, skips, temporal h, previous mask) -> (spatial
  state for the next slot, (logits at 1/2, h for this slot's next frame))."""
  hidden: int
  one_shot: bool
  spatial: bool = True
  temporal: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, spatial: State, skips: Sequence[jax.Array], temporal: Sequence[jax.Array],
               mask: jax.Array) -> tuple[State, tuple[jax.Array, list[jax.Array]]]:
    sizes = [skip.shape[1:3] for skip in skips]
    masks = mask_pyramid(mask, sizes) if self.one_shot else [None] * len(skips)
    new_state, x = [], None
    for layer, (skip, fraction) in enumerate(zip(skips, HIDDEN_FRACTIONS)):
      inputs = [skip] if x is None else [resize(x, skip.shape[1:3]), skip]
      if self.one_shot:
        inputs.append(masks[layer].astype(skip.dtype))
      h_time = temporal[layer] if self.temporal else jnp.zeros_like(temporal[layer])
      inputs.append(h_time.astype(skip.dtype))
      state = spatial[layer] if self.spatial else jax.tree.map(jnp.zeros_like, spatial[layer])
      h, c = ConvLSTMCell(int(self.hidden * fraction), dtype=self.dtype,
                          name=f'lstm{layer}')(jnp.concatenate(inputs, -1), state)
      new_state.append((h, c))
      x = h
    x = resize(x, (2 * x.shape[1], 2 * x.shape[2]))
    logits = Conv(1, (3, 3), dtype=self.dtype, name='head')(x.astype(self.dtype))[..., 0]
    return new_state, (logits.astype(jnp.float32), [h for h, _ in new_state])


class RVOS(nn.Module):
  """RVOS. `__call__(images, temporal, masks)` -> (logits (slots, B, H, W), temporal).

  images (B, H, W, 3) RGB 0..255; temporal: per decoder layer, (slots, B, h, w, channels), the
  previous frame's h of every slot (zeros on a clip's first frame; see `initial_temporal`);
  masks (slots, B, H, W) the previous masks of the slots (one-shot; ignored zero-shot).

  Attributes:
    backbone, width_multiplier, input_style: the encoder's backbone (jvos.models.backbones).
    hidden: the decoder's size (the paper: 128).
    one_shot: RVOS-Mask (previous masks in) or zero-shot.
    spatial, temporal: the two recurrences (ablations).
    dtype: compute dtype; params and the LSTM states stay float32.
  """
  backbone: str = 'mobilenet_v2'
  width_multiplier: float = 1.0
  input_style: str = 'tflite'
  hidden: int = 128
  one_shot: bool = True
  spatial: bool = True
  temporal: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = backbones.create(self.backbone, self.width_multiplier, 32, self.dtype,
                                    name='encoder')
    self.skip_convs = [Conv(int(self.hidden * f), (3, 3), dtype=self.dtype, name=f'skip{i}')
                       for i, f in enumerate(SKIP_FRACTIONS)]
    self.decoder = nn.scan(
        SlotDecoder, variable_broadcast='params', split_rngs={'params': False},
        in_axes=(nn.broadcast, 0, 0), out_axes=0)(
            self.hidden, self.one_shot, self.spatial, self.temporal, self.dtype, name='decoder')

  def encode(self, images: jax.Array) -> list[jax.Array]:
    """The skip features, coarse to fine (1/32, 1/16, 1/8, 1/4)."""
    stages = self.encoder(normalize(images, self.input_style).astype(self.dtype))
    return [conv(stage) for conv, stage in zip(self.skip_convs, stages[:0:-1])]

  def decode(self, skips: Sequence[jax.Array], temporal: Sequence[jax.Array],
             masks: jax.Array, size: Sequence[int]) -> tuple[jax.Array, list[jax.Array]]:
    """Every slot in order: (logits (slots, B, *size), new temporal)."""
    spatial = [(jnp.zeros(h.shape[1:], jnp.float32),) * 2 for h in temporal]
    _, (logits, temporal) = self.decoder(spatial, skips, temporal, masks)
    logits = jax.vmap(lambda x: resize(x[..., None], size)[..., 0])(logits)
    return logits, temporal

  def __call__(self, images: jax.Array, temporal: Sequence[jax.Array],
               masks: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    return self.decode(self.encode(images), temporal, masks, images.shape[1:3])


def initial_temporal(model: RVOS, slots: int, batch: int,
                     image_size: Sequence[int]) -> list[jax.Array]:
  """Zero temporal states for `slots` slots of `batch` frames of `image_size`."""
  skips = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0),
                                     jnp.zeros((batch, *image_size, 3)),
                                     method=RVOS.encode)[0])
  return [jnp.zeros((slots, batch, *skip.shape[1:3], int(model.hidden * fraction)))
          for skip, fraction in zip(skips, HIDDEN_FRACTIONS)]

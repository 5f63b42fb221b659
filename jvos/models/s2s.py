"""YouTube-VOS sequence-to-sequence (Xu et al., ECCV 2018): a ConvLSTM encoder-decoder whose
state is initialised from the first frame and its mask.

  initializer  the backbone on the frame that introduces the object, its mask added to the
               first layer through a zero-initialised 3x3 conv (so a pretrained trunk's
               features are untouched at the start), then two 1x1 convs: c0 and h0;
  encoder      the backbone on each later frame and a 1x1 conv: the ConvLSTM's input;
  ConvLSTM     3x3, `hidden` channels at 1/32, ReLU as the state activation and forget-gate
               bias 1 (the paper's choices; `lstm_activation='tanh'` for the textbook cell);
  decoder      five x2 upsampling stages (bilinear, then a 3x3 conv and ReLU) back to the input
               size and a 3x3 conv to one logit; with `skips`, each stage also takes the
               encoder's features at its scale (the re-implementations' main gain).

Per frame the encoder runs once for all objects (`encode`); each object then costs its own
ConvLSTM step and decoder (`step`, vmapped over objects). `initializer=False` is the paper's
ablation: the state starts from zeros and the encoder gets the previous mask on that first
layer instead. The paper gives initializer and encoder a VGG-16 each; here they share one
backbone (each with its own mask conv and 1x1 convs), which halves the weights and, with the
backbone frozen as jvos trains it on CPU, changes nothing else.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models import backbones
from jvos.models.layers import Conv, ConvLSTMCell
from jvos.models.preprocessing import normalize
from jvos.models.rvos import resize

State = tuple[jax.Array, jax.Array]
# Decoder stage channels as fractions of `hidden`, coarse (1/16) to fine (1/1).
DECODER_FRACTIONS = (1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 16)


class S2S(nn.Module):
  """S2S. `initialize(frames, masks)` -> state; `encode(frames)` -> stages; `step(stages,
  state, previous masks)` -> (logits at the frames' size, state).

  frames (B, H, W, 3) RGB 0..255; masks (B, H, W) in [0, 1]; a state is (h, c), each
  (B, H/32, W/32, hidden).

  Attributes:
    backbone, width_multiplier, input_style: the backbone initializer and encoder share.
    hidden: ConvLSTM channels.
    lstm_activation: 'relu' (the paper) or 'tanh'.
    skips: decoder stages also take the encoder's stage features.
    initializer: the initializer network (off: zero state, previous mask into the encoder).
    dtype: compute dtype; params and states stay float32.
  """
  backbone: str = 'mobilenet_v2'
  width_multiplier: float = 1.0
  input_style: str = 'tflite'
  hidden: int = 128
  lstm_activation: str = 'relu'
  skips: bool = True
  initializer: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.trunk = backbones.create(self.backbone, self.width_multiplier, 32, self.dtype,
                                  name='backbone')
    first, channels = next(iter(backbones.modulation_channels(
        self.backbone, self.width_multiplier).items()))
    self.first_layer = first
    zeros = nn.initializers.zeros_init()
    self.initializer_mask = self.param('initializer_mask', zeros, (3, 3, 1, channels))
    self.encoder_mask = self.param('encoder_mask', zeros, (3, 3, 1, channels))
    self.to_h = Conv(self.hidden, (1, 1), dtype=self.dtype, name='to_h')
    self.to_c = Conv(self.hidden, (1, 1), dtype=self.dtype, name='to_c')
    self.to_input = Conv(self.hidden, (1, 1), dtype=self.dtype, name='to_input')
    self.lstm = ConvLSTMCell(self.hidden, activation={'relu': nn.relu,
                                                      'tanh': jnp.tanh}[self.lstm_activation],
                             forget_bias=1.0, dtype=self.dtype, name='lstm')
    self.decoder = [Conv(int(self.hidden * f), (3, 3), dtype=self.dtype, name=f'up{i}')
                    for i, f in enumerate(DECODER_FRACTIONS)]
    self.head = Conv(1, (3, 3), dtype=self.dtype, name='head')

  def _stages(self, frames: jax.Array, masks: jax.Array | None,
              kernel: jax.Array) -> tuple[jax.Array, ...]:
    """The backbone's stages, `masks` (if any) added to its first layer through `kernel`."""
    def add_mask(name: str, x: jax.Array) -> jax.Array:
      if name != self.first_layer or masks is None:
        return x
      small = resize(masks[..., None].astype(jnp.float32), x.shape[1:3])
      return x + jax.lax.conv_general_dilated(
          small, kernel, (1, 1), 'SAME',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')).astype(x.dtype)
    return self.trunk(normalize(frames, self.input_style).astype(self.dtype), add_mask)

  def initialize(self, frames: jax.Array, masks: jax.Array) -> State:
    """The ConvLSTM state of an object, from the frame that introduces it and its mask."""
    top = self._stages(frames, masks, self.initializer_mask)[-1]
    if not self.initializer:
      shape = top.shape[:3] + (self.hidden,)
      return jnp.zeros(shape), jnp.zeros(shape)
    return (nn.relu(self.to_h(top)).astype(jnp.float32),
            nn.relu(self.to_c(top)).astype(jnp.float32))

  def encode(self, frames: jax.Array, masks: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """The encoder's five stages (the previous masks go in only without an initializer)."""
    return self._stages(frames, None if self.initializer else masks, self.encoder_mask)

  def step(self, stages: Sequence[jax.Array], state: State,
           size: Sequence[int]) -> tuple[jax.Array, State]:
    """One frame of one object: (logits (B, *size), new state)."""
    x = nn.relu(self.to_input(stages[-1]))
    h, c = self.lstm(x, state)
    x = h.astype(self.dtype)
    targets = [s.shape[1:3] for s in stages[-2::-1]] + [tuple(size)]
    for conv, stage, target in zip(self.decoder, list(stages[-2::-1]) + [None], targets):
      x = resize(x, target)
      if self.skips and stage is not None:
        x = jnp.concatenate([x, stage.astype(x.dtype)], axis=-1)
      x = nn.relu(conv(x))
    return self.head(x)[..., 0].astype(jnp.float32), (h, c)

  def __call__(self, first: jax.Array, first_masks: jax.Array,
               frames: jax.Array) -> jax.Array:
    """Initialise on `first` and predict `frames` (B, H, W, 3): logits (B, H, W)."""
    state = self.initialize(first, first_masks)
    return self.step(self.encode(frames, first_masks), state, frames.shape[1:3])[0]

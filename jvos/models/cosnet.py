"""COSNet (Lu et al., CVPR 2019): a siamese DeepLabV3 whose two frames attend to each other, so
what recurs across a video (its primary object) stands out. No mask is given: zero-shot.

Both frames go through one DeepLabV3 (ASPP output, C channels at 1/output_stride): Ea and Eb,
flattened to (positions, C). The vanilla co-attention, as the official code has it:

  S = Ea W Eb^T                   affinity of every position of a with every position of b,
                                  W a learned C x C matrix;
  Za = softmax_b(S) Eb            for each position of a, what b holds where it matches;
  Zb = softmax_a(S)^T Ea          and the other way round;
  Z  = Z * sigmoid(conv1x1(Z))    a gate (shared by both branches) that damps summaries of
                                  positions with no good match;
  logits = conv1x1(relu(conv3x3([Z, E])))   per frame, upsampled to its size.

`attend(features, reference)` is one frame against one reference; a video is segmented by
averaging a frame's predictions against N reference frames (jvos/systems/cosnet.py), whose
features are computed once per video.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models.deeplabv3 import ASPP_FEATURES, DeepLabV3
from jvos.models.layers import Conv
from jvos.models.preprocessing import normalize


class CoAttentionHead(nn.Module):
  """(features (B, h, w, C), reference (B, h', w', C)) -> logits (B, h, w) of the first."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, reference: jax.Array) -> jax.Array:
    batch, height, width, channels = features.shape
    a = features.reshape(batch, -1, channels).astype(jnp.float32)
    b = reference.reshape(batch, -1, channels).astype(jnp.float32)
    # W starts at the identity over sqrt(C): S then starts as scaled dot-product affinity.
    weight = self.param('affinity', lambda key, shape: jnp.eye(shape[0]) / jnp.sqrt(shape[0]),
                        (channels, channels))
    affinity = jnp.einsum('bic,cd,bjd->bij', a, weight, b)
    summary = jnp.einsum('bij,bjd->bid', jax.nn.softmax(affinity, axis=-1), b)
    summary = summary.reshape(batch, height, width, channels).astype(self.dtype)
    gate = jax.nn.sigmoid(nn.Conv(1, (1, 1), use_bias=False, dtype=self.dtype,
                                  name='gate')(summary))
    x = jnp.concatenate([summary * gate, features.astype(self.dtype)], axis=-1)
    x = nn.relu(Conv(ASPP_FEATURES, (3, 3), dtype=self.dtype, name='fuse')(x))
    return Conv(1, (1, 1), dtype=self.dtype, name='logits')(x)[..., 0].astype(jnp.float32)


class COSNet(nn.Module):
  """COSNet. `__call__(a, b)` -> (logits of a, logits of b), each (B, H, W) at input size.

  Attributes:
    deeplab: the siamese encoder (its `features_only` output is used).
    input_style: how images are normalised for its weights.
  """
  deeplab: DeepLabV3
  input_style: str = 'tflite'

  def setup(self):
    self.head = CoAttentionHead(self.deeplab.dtype)

  def features(self, images: jax.Array) -> jax.Array:
    """DeepLabV3's ASPP features (B, h, w, C) of RGB 0..255 frames (B, H, W, 3)."""
    x = normalize(images, self.input_style).astype(self.deeplab.dtype)
    return self.deeplab(x, features_only=True)

  def attend(self, features: jax.Array, reference: jax.Array, size) -> jax.Array:
    """Logits (B, *size) of the frames whose `features` attend to the `reference` ones."""
    logits = self.head(features, reference)[..., None]
    return jax.image.resize(logits, (logits.shape[0], *size, 1), 'bilinear')[..., 0]

  def __call__(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    features_a, features_b = self.features(a), self.features(b)
    return (self.attend(features_a, features_b, a.shape[1:3]),
            self.attend(features_b, features_a, b.shape[1:3]))

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

With `classifier_prior` (not in the paper), the head predicts a correction to DeepLabV3's own
answer instead of a logit from nothing: DeepLab's classifier (`classifier`, its pretrained
`head_conv` if any and `logits`) reads the frame's features, its foreground logit (any object
class against background) is added to the head's output, and the head's last conv starts at
zero, so training starts from the DeepLabV3 baseline. The paper's saliency pretraining taught
its head what an object is; here the PASCAL classifier knows it already, and the head only has
to learn what co-attention adds on video.

With `attention_pool` p > 1 the co-attention and its head run on features average-pooled by p
(their cost falls by about p^2, p^4 for the affinity), and their output is upsampled back to
the encoder's resolution, where the prior stays: an encoder at output stride 8 keeps its finer
boundaries while attention costs what it does at 16.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvos.models.deeplabv3 import (ASPP_FEATURES, PASCAL_CLASSES, DeepLabV3, classify,
                                   foreground_logit)
from jvos.models.layers import Conv
from jvos.models.preprocessing import normalize


def _resized(logits: jax.Array, size) -> jax.Array:
  """(B, h, w) logits bilinearly resized to (B, *size)."""
  return jax.image.resize(logits, (logits.shape[0], *size), 'bilinear')


class CoAttentionHead(nn.Module):
  """(features (B, h, w, C), reference (B, h', w', C)) -> logits (B, h, w) of the first.

  Attributes:
    zero_output: start the last conv at zero (the head then starts as a correction of 0).
  """
  zero_output: bool = False
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
    initializer = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
    return Conv(1, (1, 1), kernel_init=initializer, dtype=self.dtype,
                name='logits')(x)[..., 0].astype(jnp.float32)


class DeepLabClassifier(nn.Module):
  """DeepLabV3's classifier on its ASPP features: (B, h, w, C) -> class logits (B, h, w, K).

  Its params are named as DeepLabV3's (`head_conv`, `logits`), so a pretrained file's load
  into it as they are.
  """
  num_classes: int = len(PASCAL_CLASSES)
  head_conv: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    return classify(features, self.num_classes, self.head_conv, self.dtype)


class COSNet(nn.Module):
  """COSNet. `__call__(a, b)` -> (logits of a, logits of b), each (B, H, W) at input size.

  Attributes:
    deeplab: the siamese encoder (its `features_only` output is used).
    input_style: how images are normalised for its weights.
    classifier_prior: add DeepLabV3's foreground logit to the head's (see the module doc).
    attention_pool: co-attend at 1/attention_pool of the encoder's resolution.
  """
  deeplab: DeepLabV3
  input_style: str = 'tflite'
  classifier_prior: bool = False
  attention_pool: int = 1

  def setup(self):
    self.head = CoAttentionHead(zero_output=self.classifier_prior, dtype=self.deeplab.dtype)
    if self.classifier_prior:
      self.classifier = DeepLabClassifier(self.deeplab.num_classes, self.deeplab.head_conv,
                                          self.deeplab.dtype)

  def features(self, images: jax.Array) -> jax.Array:
    """DeepLabV3's ASPP features (B, h, w, C) of RGB 0..255 frames (B, H, W, 3)."""
    x = normalize(images, self.input_style).astype(self.deeplab.dtype)
    return self.deeplab(x, features_only=True)

  def attend(self, features: jax.Array, reference: jax.Array, size) -> jax.Array:
    """Logits (B, *size) of the frames whose `features` attend to the `reference` ones."""
    logits = self.head(self._pooled(features), self._pooled(reference))
    if self.classifier_prior:
      logits = (_resized(logits, features.shape[1:3])
                + foreground_logit(self.classifier(features).astype(jnp.float32)))
    return _resized(logits, size)

  def _pooled(self, features: jax.Array) -> jax.Array:
    if self.attention_pool == 1:
      return features
    window = (self.attention_pool,) * 2
    return nn.avg_pool(features, window, strides=window, padding='SAME',
                       count_include_pad=False)

  def __call__(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    features_a, features_b = self.features(a), self.features(b)
    return (self.attend(features_a, features_b, a.shape[1:3]),
            self.attend(features_b, features_a, b.shape[1:3]))

"""jvos.models.layers.Conv against flax's nn.Conv: params, forward and both gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvos.models import layers

# (attributes, input shape (B, H, W, C), whether the blocked kernel gradient is used).
CASES = {
    '3x3 same, odd size': (dict(features=8, kernel_size=(3, 3)), (2, 37, 61, 5), True),
    '1x1, no bias': (dict(features=4, kernel_size=(1, 1), use_bias=False), (1, 64, 70, 6), True),
    '3x2 valid, dilated': (dict(features=7, kernel_size=(3, 2), padding='VALID',
                                kernel_dilation=(2, 3)), (1, 71, 67, 3), True),
    '5x5 explicit pads': (dict(features=5, kernel_size=(5, 5), padding=((2, 1), (0, 3))),
                          (1, 70, 66, 4), True),
    'strided': (dict(features=8, kernel_size=(3, 3), strides=2), (1, 65, 66, 4), False),
    'depthwise': (dict(features=6, kernel_size=(3, 3), feature_group_count=6), (1, 64, 65, 6),
                  False),
    'small map': (dict(features=8, kernel_size=(3, 3)), (1, 16, 20, 4), True),
    # Pads beyond the kernel's reach: the input gradient's conv then has negative pads.
    'pads beyond the kernel': (dict(features=4, kernel_size=(3, 3), padding=((3, 0), (0, 4))),
                               (1, 19, 23, 3), True),
}


def relative_errors(got, expected) -> list[float]:
  return jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
                         / np.linalg.norm(np.asarray(b, np.float64))), got, expected))


def normal(rng, shape):
  """Random float32 data from numpy: jax.random would compile a program per shape."""
  return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


def outputs_and_grads(module, params, x, cotangent):
  y, vjp = jax.vjp(module.apply, params, x)
  return y, *vjp(cotangent)


def test_initial_params_equal_nn_conv():
  x = jnp.zeros((1, 8, 8, 6))
  for attributes in (dict(features=8, kernel_size=(3, 3)),
                     dict(features=6, kernel_size=(3, 3), feature_group_count=6, use_bias=False)):
    expected = nn.Conv(**attributes).init(jax.random.PRNGKey(1), x)
    got = layers.Conv(**attributes).init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and bool((a == b).all()),
                                     got, expected))


@pytest.mark.parametrize('case', CASES)
def test_matches_nn_conv(case, monkeypatch):
  attributes, shape, blocked = CASES[case]
  # Blocks of 1-5 rows, so the inputs here make several blocks and some a smaller last one.
  monkeypatch.setattr(layers, 'BLOCK_BYTES', 2 ** 14)
  rng = np.random.default_rng(0)
  x = normal(rng, shape)
  reference, conv = nn.Conv(**attributes), layers.Conv(**attributes)
  # Same param names, shapes and dtypes, so weights made for nn.Conv load unchanged.
  shapes = jax.eval_shape(reference.init, jax.random.PRNGKey(1), x)
  assert jax.eval_shape(conv.init, jax.random.PRNGKey(1), x) == shapes
  params = jax.tree.map(lambda leaf: normal(rng, leaf.shape), shapes)
  cotangent = normal(rng, jax.eval_shape(reference.apply, params, x).shape)
  expected = outputs_and_grads(reference, params, x, cotangent)
  got = outputs_and_grads(conv, params, x, cotangent)
  for name, a, b in zip(('output', 'param grads', 'input grad'), got, expected):
    assert max(relative_errors(a, b)) < 1e-5, name
  jaxpr = str(jax.make_jaxpr(conv.apply)(params, x))
  assert ('custom_vjp_call' in jaxpr) == blocked


def test_bfloat16_compute_keeps_float32_params():
  attributes = dict(features=8, kernel_size=(3, 3), dtype=jnp.bfloat16)
  rng = np.random.default_rng(0)
  x = normal(rng, (1, 64, 64, 4))
  params = {'params': {'kernel': normal(rng, (3, 3, 4, 8)), 'bias': normal(rng, (8,))}}

  def grads(module):
    return jax.grad(lambda p: jnp.sum(module.apply(p, x).astype(jnp.float32) ** 2))(params)

  expected, got = grads(nn.Conv(**attributes)), grads(layers.Conv(**attributes))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))
  # bfloat16 products: the two sum in different orders, so agree to bfloat16 precision only.
  assert max(relative_errors(got, expected)) < 1e-2


@pytest.mark.parametrize('shape, stride, dilation', [
    ((2, 17, 23, 8), 1, 1), ((2, 17, 24, 8), 2, 1), ((1, 16, 16, 8), 2, 1),
    ((2, 15, 20, 8), 1, 2), ((1, 9, 9, 4), 1, 4)])
def test_depthwise_conv_equals_grouped_nn_conv(shape, stride, dilation):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = layers.DepthwiseConv(stride=stride, dilation=dilation)
  reference = nn.Conv(shape[-1], (3, 3), strides=stride, kernel_dilation=dilation,
                      feature_group_count=shape[-1], padding='SAME')
  params = jax.tree.map(lambda p: p + 0.1, reference.init(jax.random.PRNGKey(1), x))
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
      jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
  loss = lambda module: lambda p, x: jnp.sum(module.apply(p, x) ** 2)
  for ours_grad, reference_grad in zip(
      jax.tree.leaves(jax.grad(loss(ours), (0, 1))(params, x)),
      jax.tree.leaves(jax.grad(loss(reference), (0, 1))(params, x))):
    np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-4, atol=1e-3)

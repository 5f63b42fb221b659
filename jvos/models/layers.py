"""Layers every network may use: convolutions that XLA:CPU runs fast, with `nn.Conv`'s params
(imported weights load as-is), and the ConvLSTM cell of the recurrent systems.

`Conv`: `nn.Conv` (2-D, NHWC) with faster gradients. `DepthwiseConv`: a depthwise
`nn.Conv` written as shifted multiply-adds (see `depthwise_conv`). `ConvLSTMCell`: the
convolutional LSTM of RVOS's decoder and S2S, its gates one `Conv`.

Why it exists: XLA:CPU (jaxlib 0.10.2) hands convolutions to YNNPACK. The kernel gradient of
a stride-1 conv is, as JAX emits it, a convolution whose window is the whole image and whose
only input feature is the batch, and YNNPACK runs that 3-6x slower than the forward. For
VGG-16's 3x3 conv 240x427x128->128, batch 1, in CPU seconds: forward 0.32, input gradient
0.32, kernel gradient 2.05. Written as one matrix product per kernel tap over blocks of a few
output rows (dy^T of the block, made once, times the block's shifted input), the same gradient
takes 0.40: plain (M, K) x (K, N) products, which YNNPACK runs about as fast as the forward,
on blocks small enough to stay in cache. It is also closer to a float64 sum (relative error
5e-7 against 1e-5). The 17 3x3 convs of OSVOS-VGG16 at 480x854 spend 3.4 s in kernel gradients
instead of 8.8, and a training step with the 13 backbone convs swapped takes 10.3 s instead of
14.8 (experiments/conv_backward_cpu.md).

Inside a loop (the compiled loop of online fine-tuning) the gap is far larger: XLA leaves the
kernel-gradient convolution of a loop body in its raw layout, which runs about 70x slower than
the same op outside a loop (240x427x64->64: 0.19 s straight, 15 s per step in a scan), while
these matmuls stay fast; an OSVOS-VGG16 fine-tune step at 240x427 went from 27 s to 3.3 s.
So every stride-1 ungrouped conv takes that path, whatever its size; strided and grouped
convs keep XLA's own gradient (MobileNetV2's depthwise convs use `DepthwiseConv` below).
The input gradient had the same problem in a smaller form: JAX emits it as a conv of dy with
the kernel's in/out swapped by dimension numbers, which runs at about a sixth of the forward's
speed in a scan. `input_grad` writes it as an ordinary forward conv of dy with the flipped
kernel, and the VGG16 fine-tune step at 480x854 fell from 13.2 s to 4.8 s. The
forward pass is XLA's either way, and the params are those of `nn.Conv` ('kernel' HWIO,
'bias'), so imported weights load unchanged. Being a custom_vjp, the fast path has no
forward-mode derivative (jax.jvp); nothing in jvos uses one.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# Bytes of input and cotangent per block of output rows of the kernel gradient: about 4 rows of
# each VGG stage at 480x854 (e.g. 4 x 427 pixels x (128 + 128) channels x 4 bytes = 1.7 MiB).
BLOCK_BYTES = 2 ** 21

Pads = tuple[tuple[int, int], tuple[int, int]]


def _xla_conv(x, kernel, pads, dilation, precision):
  return lax.conv_general_dilated(x, kernel, (1, 1), pads, rhs_dilation=dilation,
                                  dimension_numbers=DIMENSION_NUMBERS, precision=precision)


def _block_kernel_grad(x_rows, dy_rows, kernel_hw, dilation, precision):
  """(taps, out, in) kernel gradient from some output rows dy_rows and their input rows x_rows."""
  rows, out_w, out_channels = dy_rows.shape[1:]
  # The barrier keeps dy^T a real transposed array: folded into the dots, it would make them
  # transposed-operand products, which YNNPACK does not take and Eigen runs 1.3x slower.
  dy_t = lax.optimization_barrier(dy_rows.reshape(-1, out_channels).T)
  step_h, step_w = dilation
  taps = [x_rows[:, i * step_h:i * step_h + rows, j * step_w:j * step_w + out_w]
          for i in range(kernel_hw[0]) for j in range(kernel_hw[1])]
  return jnp.stack([jnp.dot(dy_t, tap.reshape(dy_t.shape[1], -1), precision=precision,
                            preferred_element_type=jnp.float32) for tap in taps])


def kernel_grad(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int], pads: Pads,
                dilation: tuple[int, int], precision: Any = None) -> jax.Array:
  """Gradient w.r.t. the HWIO kernel of a stride-1 NHWC conv, given the output cotangent dy.

  kernel[i, j] gets the sum over output pixels p of x_padded[p + (i, j) * dilation]^T dy[p]: a
  loop over blocks of output rows, one (out, pixels) x (pixels, in) product per tap and block.
  """
  kernel_hw = tuple(kernel_shape[:2])
  batch, out_h, out_w, out_channels = dy.shape
  # lax.pad, unlike jnp.pad, takes the negative pads lax.conv_general_dilated allows.
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  halo = (kernel_hw[0] - 1) * dilation[0]
  row_bytes = batch * out_w * (x.shape[-1] + out_channels) * x.dtype.itemsize
  rows = max(1, min(out_h, BLOCK_BYTES // row_bytes))
  blocks, tail = divmod(out_h, rows)
  block_grad = functools.partial(_block_kernel_grad, kernel_hw=kernel_hw, dilation=dilation,
                                 precision=precision)

  def step(total, index):
    x_rows = lax.dynamic_slice_in_dim(x, index * rows, rows + halo, axis=1)
    dy_rows = lax.dynamic_slice_in_dim(dy, index * rows, rows, axis=1)
    return total + block_grad(x_rows, dy_rows), None

  total = jnp.zeros((kernel_hw[0] * kernel_hw[1], out_channels, x.shape[-1]), jnp.float32)
  total, _ = lax.scan(step, total, jnp.arange(blocks))
  if tail:  # The last out_h % rows rows, as one smaller block.
    total += block_grad(x[:, blocks * rows:], dy[:, blocks * rows:])
  return jnp.swapaxes(total, 1, 2).reshape(kernel_shape).astype(x.dtype)


def input_grad(dy: jax.Array, kernel: jax.Array, pads: Pads, dilation: tuple[int, int],
               precision: Any = None) -> jax.Array:
  """Gradient w.r.t. the input of a stride-1 NHWC conv: a forward conv of dy.

  dx[p] = sum over taps t of dy[p + pad_before - t * dilation] kernel[t]^T: the same kind of
  conv, with the kernel flipped in space and its in/out channels swapped, and pads that make
  the output the input's size.
  """
  reach = [(k - 1) * d for k, d in zip(kernel.shape[:2], dilation)]
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  # JAX's own input gradient (a conv of dy with the kernel's in/out swapped by dimension
  # numbers) runs at a sixth of the forward's speed in the fine-tuning loop; this plain conv at
  # forward speed. Keeping the flipped kernel a real array saves another 6% there.
  flipped = lax.optimization_barrier(flipped)
  return _xla_conv(dy, flipped, tuple((r - lo, r - hi) for r, (lo, hi) in zip(reach, pads)),
                   dilation, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_stride1(x: jax.Array, kernel: jax.Array, pads: Pads, dilation: tuple[int, int],
                 precision: Any = None) -> jax.Array:
  """lax.conv_general_dilated (stride 1, NHWC/HWIO) with gradients `input_grad`, `kernel_grad`."""
  return _xla_conv(x, kernel, pads, dilation, precision)


def _conv_stride1_fwd(x, kernel, pads, dilation, precision):
  return _xla_conv(x, kernel, pads, dilation, precision), (x, kernel)


def _conv_stride1_bwd(pads, dilation, precision, residuals, dy):
  x, kernel = residuals
  return input_grad(dy, kernel, pads, dilation, precision), kernel_grad(
      x, dy, kernel.shape, pads, dilation, precision)


conv_stride1.defvjp(_conv_stride1_fwd, _conv_stride1_bwd)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def explicit_pads(padding: Any, spatial_shape: Sequence[int], kernel_size: Sequence[int],
                  strides: Sequence[int], dilation: Sequence[int]) -> Pads:
  """((top, bottom), (left, right)) for an `nn.Conv` padding: 'SAME', 'VALID', ints or pairs."""
  padding = nn.linear.canonicalize_padding(padding, 2)
  if isinstance(padding, str):
    dilated_kernel = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
    padding = lax.padtype_to_pads(spatial_shape, dilated_kernel, strides, padding)
  return tuple(tuple(pair) for pair in padding)


class Conv(nn.Module):
  """Drop-in for 2-D `nn.Conv` on NHWC inputs (B, H, W, C); same attributes and params.

  Attributes:
    features: output channels.
    kernel_size: (height, width).
    strides: int or (height, width).
    padding: 'SAME', 'VALID', an int, or ((top, bottom), (left, right)), as in `nn.Conv`.
    kernel_dilation: int or (height, width).
    feature_group_count: in_channels for a depthwise conv.
    use_bias: add a learned bias.
    dtype: compute dtype (None: promoted from the inputs and params).
    param_dtype: dtype of the params.
    precision: passed to the convolution and the gradient's products.
    kernel_init, bias_init: as in `nn.Conv`, so both draw the same initial params.
  """
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | int | Sequence[tuple[int, int]] = 'SAME'
  kernel_dilation: int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size, strides = tuple(self.kernel_size), _pair(self.strides)
    dilation = _pair(self.kernel_dilation)
    in_channels = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        (*kernel_size, in_channels // self.feature_group_count, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    pads = explicit_pads(self.padding, x.shape[1:3], kernel_size, strides, dilation)
    if strides == (1, 1) and self.feature_group_count == 1:
      y = conv_stride1(x, kernel, pads, dilation, self.precision)
    else:
      y = lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                   dimension_numbers=DIMENSION_NUMBERS,
                                   feature_group_count=self.feature_group_count,
                                   precision=self.precision)
    return y + bias if bias is not None else y


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int) -> jax.Array:
  """A 'SAME' depthwise conv (kernel (kh, kw, 1, C)) as a sum of shifted, scaled inputs.

  Same result as `lax.conv_general_dilated(..., feature_group_count=C)`, but XLA:CPU runs
  grouped convolutions through a slow generic path: on 4x64x64x96 this form is 20-40x faster
  forward and 2.5-16x faster in the gradients, and on accelerators it fuses into one loop.
  """
  kernel_h, kernel_w = kernel.shape[:2]
  pads = lax.padtype_to_pads(x.shape[1:3], ((kernel_h - 1) * dilation + 1,
                                            (kernel_w - 1) * dilation + 1), (stride, stride), 'SAME')
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
  out = 0
  for i in range(kernel_h):
    for j in range(kernel_w):
      window = lax.slice(padded, (0, i * dilation, j * dilation, 0),
                         (x.shape[0], i * dilation + (out_h - 1) * stride + 1,
                          j * dilation + (out_w - 1) * stride + 1, x.shape[3]),
                         (1, stride, stride, 1))
      out = out + window * kernel[i, j, 0]
  return out


class DepthwiseConv(nn.Module):
  """`nn.Conv(C, kernel, feature_group_count=C, padding='SAME')` with the same params, faster."""
  kernel_size: tuple[int, int] = (3, 3)
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (*self.kernel_size, 1, channels))
    bias = self.param('bias', nn.initializers.zeros_init(), (channels,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return depthwise_conv(x, kernel, self.stride, self.dilation) + bias


class ConvLSTMCell(nn.Module):
  """A convolutional LSTM cell (Shi et al., 2015): the gates are one conv over [x, h].

      i, f, o, g = split(conv([x, h]))
      c' = sigmoid(f + forget_bias) * c + sigmoid(i) * activation(g)
      h' = sigmoid(o) * activation(c')

  RVOS's decoder (tanh, as the official code) and S2S's (the paper uses ReLU for the state)
  both use it. Returns (h', c'), each (B, H, W, features).

  Attributes:
    features: hidden channels.
    kernel_size: of the gate conv.
    activation: of the candidate and the state (jnp.tanh; S2S: nn.relu).
    forget_bias: added to the forget gate (1.0 keeps the state early in training).
    dtype: compute dtype.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  activation: Any = jnp.tanh
  forget_bias: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, state: tuple[jax.Array, jax.Array]
               ) -> tuple[jax.Array, jax.Array]:
    h, c = state
    gates = Conv(4 * self.features, self.kernel_size, dtype=self.dtype,
                 name='gates')(jnp.concatenate([x, h.astype(x.dtype)], axis=-1))
    i, f, o, g = jnp.split(gates.astype(jnp.float32), 4, axis=-1)
    c = jax.nn.sigmoid(f + self.forget_bias) * c + jax.nn.sigmoid(i) * self.activation(g)
    h = jax.nn.sigmoid(o) * self.activation(c)
    return h, c

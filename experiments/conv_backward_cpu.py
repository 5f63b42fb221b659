r"""Times conv gradients on CPU: XLA's own (nn.Conv) against `jvos.models.layers.Conv`.

    python experiments/conv_backward_cpu.py --repeats=5

Part 1, per conv of OSVOS-VGG16 at --height x --width with --batch frames: forward, input
gradient, and the kernel gradient as XLA computes it and as `layers.kernel_grad` does.
Part 2, the whole OSVOS-VGG16 (jvos.models.osvos.OSVOS): an inference forward and a training
step (forward, backward, Adam update), with the 13 backbone convs nn.Conv (baseline) or
layers.Conv (jvos's own); the head's convs are the model's in both (part 1 times them alone).

Baseline and variant run alternately in one process, --repeats times; the tables give the
median wall-clock and process CPU seconds (the CPU time is the steadier of the two when other
jobs share the cores). The baseline's backbone is a copy of jvos.models.vgg.VGG16 with the
conv class as an attribute, checked against the real module first.
"""

import functools
import os
import platform
import time
from typing import Any, Callable

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from jvos.models import layers
from jvos.models import osvos
from jvos.models import vgg

_HEIGHT = flags.DEFINE_integer('height', 480, 'Frame height.')
_WIDTH = flags.DEFINE_integer('width', 854, 'Frame width.')
_BATCH = flags.DEFINE_integer('batch', 1, 'Frames per batch.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs of each function.')
_PARTS = flags.DEFINE_list('parts', ['layers', 'network'], 'Which parts to run.')


class VGG16(nn.Module):
  """jvos.models.vgg.VGG16 with the conv class as an attribute."""
  conv: Any = nn.Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, modulate=None):
    del modulate  # OSVOS passes its (absent) OSMN hook along.
    stages = []
    for stage, (convs, channels) in enumerate(vgg.STAGES, start=1):
      if stage > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for index in range(1, convs + 1):
        x = nn.relu(self.conv(channels, (3, 3), padding='SAME', dtype=self.dtype,
                              name=f'conv{stage}_{index}')(x))
      stages.append(x)
    return tuple(stages)


class BaselineOSVOS(osvos.OSVOS):
  """jvos.models.osvos.OSVOS with XLA's own convs (nn.Conv) in its VGG-16 backbone."""

  def backbone_module(self) -> nn.Module:
    return VGG16(nn.Conv, dtype=self.dtype, name='backbone')


def check_copy_matches_vgg16() -> None:
  """The copy, with either conv, has the real VGG16's params and outputs (on a small input)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 40, 72, 3))
  params = vgg.VGG16().init(jax.random.PRNGKey(1), x)
  expected = vgg.VGG16().apply(params, x)
  for conv in (nn.Conv, layers.Conv):
    copy_params = VGG16(conv).init(jax.random.PRNGKey(1), x)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), params, copy_params))
    got = VGG16(conv).apply(params, x)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), expected, got))


def time_alternately(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
  """{name: (median wall s, median CPU s)}, running the functions in turn `repeats` times."""
  for function in functions.values():
    jax.block_until_ready(function())  # Compiles.
  wall, cpu = {name: [] for name in functions}, {name: [] for name in functions}
  for _ in range(repeats):
    for name, function in functions.items():
      start_wall, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(function())
      wall[name].append(time.perf_counter() - start_wall)
      cpu[name].append(time.process_time() - start_cpu)
  return {name: (np.median(wall[name]), np.median(cpu[name])) for name in functions}


def conv_shapes(height: int, width: int) -> list[tuple[str, int, int, int, int, int, int]]:
  """(names, count, height, width, in, out, kernel) of each distinct conv of OSVOS-VGG16.

  The 3x3 convs of the backbone and of the head's side outputs, then two 1x1 convs of other
  shapes (MobileNetV2-like): the OSVOS head's 1x1 convs have one output channel and take no time.
  """
  shapes, size, in_channels = [], (height, width), 3
  for stage, (convs, channels) in enumerate(vgg.STAGES, start=1):
    if stage > 1:
      size = (size[0] // 2, size[1] // 2)
    first = 1 if in_channels == channels else 2
    if first == 2:
      shapes.append((f'conv{stage}_1', 1, *size, in_channels, channels, 3))
    names = f'conv{stage}_{first}' + (f'-{convs}' if convs > first else '')
    shapes.append((names, convs - first + 1, *size, channels, channels, 3))
    if stage > 1:
      shapes.append((f'side{stage}', 1, *size, channels, 16, 3))
    in_channels = channels
  size = (height // 4, width // 4)
  return shapes + [('1x1', 0, *size, 256, 256, 1), ('1x1', 0, *size, 96, 576, 1)]


def relative_error(a: jax.Array, b: jax.Array) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def time_layers(batch: int, height: int, width: int, repeats: int) -> None:
  """Prints a markdown table; its last row sums the convs."""
  print('| conv | count | H x W | in -> out | k | forward | input grad | kernel grad XLA | '
        'kernel grad ours | speedup (CPU) |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  totals = np.zeros((4, 2))
  for name, count, h, w, cin, cout, k in conv_shapes(height, width):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (batch, h, w, cin))
    kernel = jax.random.normal(keys[1], (k, k, cin, cout)) * 0.05
    dy = jax.random.normal(keys[2], (batch, h, w, cout))
    pads = ((k // 2, k // 2),) * 2
    conv = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding=pads,
                             dimension_numbers=layers.DIMENSION_NUMBERS)
    forward = jax.jit(conv)
    input_grad = jax.jit(lambda kernel, dy: jax.vjp(lambda x: conv(x, kernel), x)[1](dy)[0])
    xla_grad = jax.jit(lambda x, dy: jax.vjp(lambda kernel: conv(x, kernel), kernel)[1](dy)[0])
    our_grad = jax.jit(functools.partial(layers.kernel_grad, kernel_shape=kernel.shape, pads=pads,
                                         dilation=(1, 1)))
    # Not 1e-5: over 400k pixels XLA's own sum is off by 1e-5 (ours by 5e-7) from a float64 one.
    assert relative_error(our_grad(x, dy), xla_grad(x, dy)) < 1e-4
    times = time_alternately({'forward': lambda: forward(x, kernel),
                              'input': lambda: input_grad(kernel, dy),
                              'xla': lambda: xla_grad(x, dy),
                              'ours': lambda: our_grad(x, dy)}, repeats)
    times = np.array(list(times.values()))  # (forward, input, xla, ours) x (wall, CPU).
    totals += count * times[[0, 1, 2, 3]]
    cells = ' | '.join(f'{wall:.3f} / {cpu:.3f}' for wall, cpu in times)
    print(f'| {name} | {count} | {h} x {w} | {cin} -> {cout} | {k} | {cells} | '
          f"{times[2, 1] / times[3, 1]:.1f}x |", flush=True)
  cells = ' | '.join(f'{wall:.2f} / {cpu:.2f}' for wall, cpu in totals)
  print(f'| all 17 | | | | | {cells} | {totals[2, 1] / totals[3, 1]:.1f}x |')


def time_network(batch: int, height: int, width: int, repeats: int) -> None:
  images = jax.random.uniform(jax.random.PRNGKey(0), (batch, height, width, 3), maxval=255)
  masks = (jax.random.uniform(jax.random.PRNGKey(1), (batch, height, width)) > 0.7).astype(
      jnp.float32)
  optimizer = optax.adam(1e-5)
  params = jax.jit(osvos.OSVOS().init)(jax.random.PRNGKey(2), images)['params']
  opt_state = optimizer.init(params)
  functions = {}
  for label, model in (('nn.Conv', BaselineOSVOS()), ('layers.Conv', osvos.OSVOS())):

    def train_step(params, opt_state, model=model):
      loss, grads = jax.value_and_grad(
          lambda p: osvos.loss_fn(model.apply({'params': p}, images), masks))(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    forward = jax.jit(lambda params, model=model: model.apply({'params': params}, images))
    train_step = jax.jit(train_step)
    functions[f'forward, {label}'] = functools.partial(forward, params)
    functions[f'train step, {label}'] = functools.partial(train_step, params, opt_state)
  times = time_alternately(functions, repeats)
  print(f'| OSVOS-VGG16, batch {batch} | wall s | CPU s |\n|---|---|---|')
  for name, (wall, cpu) in times.items():
    print(f'| {name} | {wall:.2f} | {cpu:.2f} |')
  for kind in ('forward', 'train step'):
    base, ours = times[f'{kind}, nn.Conv'], times[f'{kind}, layers.Conv']
    print(f'{kind}: {base[0] / ours[0]:.2f}x wall, {base[1] / ours[1]:.2f}x CPU')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'load average {os.getloadavg()}, jax {jax.__version__}, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  check_copy_matches_vgg16()
  if 'layers' in _PARTS.value:
    time_layers(_BATCH.value, _HEIGHT.value, _WIDTH.value, _REPEATS.value)
  if 'network' in _PARTS.value:
    time_network(_BATCH.value, _HEIGHT.value, _WIDTH.value, _REPEATS.value)
  print(f'load average {os.getloadavg()}')


if __name__ == '__main__':
  app.run(main)

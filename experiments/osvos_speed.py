r"""Benchmark: OSVOS seconds per fine-tune step and per inference frame.

    python experiments/osvos_speed.py --backbone vgg16 --height 480 --width 854 --steps 5

Times the real code paths: `jvos.finetune.make_finetune` (the compiled loop; per-step time is
the loop's time over its steps, compilation excluded) and the jitted forward used to segment
frames, batch 1, on random weights (speed does not depend on their values) and a real-sized
random frame. Prints one line per measurement; the median of --repeats runs.

--profile also traces one run of the loop (jax.profiler) and prints where its time goes: the
compiled ops' times summed per layer and op kind, forward and backward apart. This is how the
slow input-gradient convs of experiments/conv_backward_cpu.md were found.
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jvos import finetune
from jvos.models import osvos
from jvos.systems import osvos as osvos_system


def median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def profile(fn, args, top: int = 25) -> None:
  """Prints the `top` (layer, op) pairs of one traced call of the jitted `fn`, by time."""
  op_names = {}  # Compiled op (thunk) name -> the jax op_name it came from.
  for line in fn.lower(*args).compile().as_text().splitlines():
    match = re.match(r'\s*(?:ROOT )?%([\w.-]+) = .*?op_name="([^"]*)"', line)
    if match:
      op_names[match.group(1)] = match.group(2)
  jax.block_until_ready(fn(*args))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      jax.block_until_ready(fn(*args))
    trace_file, = glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True)
    with gzip.open(trace_file) as f:
      events = json.load(f)['traceEvents']
  seconds = collections.Counter()
  for event in events:
    name = op_names.get(event.get('name'))
    if event.get('ph') == 'X' and name:
      backward = 'transpose(' in name
      layer_op = re.sub(r'jit\([^)]*\)/|while/body/|closed_call/|transpose\(|jvp\(|\)', '', name)
      seconds[('backward ' if backward else 'forward ') + layer_op] += event['dur'] / 1e6
  print(f'op time (both threads summed): {sum(seconds.values()):.2f} s')
  for key, value in seconds.most_common(top):
    print(f'{value:8.3f} s  {key}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--backbone', default='vgg16', choices=osvos.BACKBONES)
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--height', type=int, default=480)
  parser.add_argument('--width', type=int, default=854)
  parser.add_argument('--steps', type=int, default=5, help='fine-tune steps per timed loop')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--profile', action='store_true', help='print where the loop spends time')
  args = parser.parse_args()

  model = osvos.OSVOS(backbone=args.backbone, width_multiplier=args.width_multiplier,
                      dtype=jnp.dtype(args.dtype))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(0, 255, (args.height, args.width, 3)), jnp.float32)
  mask = np.zeros((args.height, args.width), np.float32)
  mask[args.height // 4:args.height // 2, args.width // 4:args.width // 2] = 1
  config = ml_collections.ConfigDict(dict(batch_size=1, max_scale=1.2, max_shift=0.1,
                                           max_rotation=0.0, colour_jitter=0.0))
  run = finetune.make_finetune(
      functools.partial(osvos_system.loss, model), optax.adam(1e-4),
      functools.partial(osvos_system.finetune_batch, config=config))
  given = {'image': image, 'mask': jnp.asarray(mask)}
  run_args = (params, jax.tree.map(lambda x: jnp.stack([x, x]), given), jax.random.PRNGKey(0),
              args.steps, 1.0)
  loop = median_seconds(lambda: run(*run_args), args.repeats)
  predict = jax.jit(lambda p, x: osvos.probabilities(model.apply({'params': p}, x)))
  frame = median_seconds(lambda: predict(params, image[None]), args.repeats)
  print(f'device={jax.devices()[0].device_kind} backbone={args.backbone} '
        f'size={args.height}x{args.width} dtype={args.dtype}')
  print(f'fine-tune: {loop / args.steps:.3f} s/step ({args.steps} steps in {loop:.2f} s)')
  print(f'inference: {frame:.3f} s/frame')
  if args.profile:
    profile(run, run_args)


if __name__ == '__main__':
  main()

r"""Benchmark: parent-training throughput, MFU, input pipeline and memory of `jvos.train`.

    python experiments/train_throughput.py --davis_root ../shared/data/davis2016 \
        --models vgg16,mobilenet_v2 --widths 1.0,0.5 --dtypes float32,bfloat16 \
        --height 480 --width 854 --batch_size 2

For every model and dtype (`model.dtype`; parameters stay float32) it compiles the trainer's
own step (`jvos.train.jit_train_step`, on `jvos.train.init_state`, with the optimizer and
schedule of configs/osvos_davis16.py) and times it twice:

  device-fed: the same batch, already on the device, every step;
  pipeline-fed: each step first takes a batch from the real grain iterator
    (`jvos.input_pipeline.train_iterator` on DAVIS-2016 train) and puts it on the device, as
    `jvos.train.train` does. Equal times mean the input pipeline is not the bottleneck.

Each timed step waits for its result; the table gives the median over the timed steps (at
most --steps, fewer past --budget_s, never fewer than 3). FLOPs per step are XLA's cost
analysis of the compiled step; MFU is those FLOPs over the median step time over the device's
peak (see `peak_flops`). Then, for --memory_model: the largest batch that fits under
--memory_cap_gib (doubling the batch), and the host RSS of a long run of the data iterator.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import re
import statistics
import threading
import time
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import ml_collections
import psutil

from configs import osvos_davis16
from jvos import input_pipeline, train
from jvos.systems import osvos as osvos_system
from jvos.data import davis
from jvos.data.video import VideoDataset
from jvos.models import osvos

GIB = 2**30
MIN_TIMED_STEPS = 3  # Fewer gives no meaningful median.
# Dense peak FLOP/s per device by a substring of `device_kind` and compute dtype, from NVIDIA's
# data sheets (SXM parts). The H200 is an H100 die with more and faster memory: same peak.
# float32 is the non-tensor-core rate; XLA may use TF32 tensor cores for float32 convolutions,
# which would make float32 MFU read high.
GPU_PEAK_FLOPS = {
    'H100': {'bfloat16': 989e12, 'float32': 67e12},
    'H200': {'bfloat16': 989e12, 'float32': 67e12},
}
# fp32 FLOP per cycle per core with AVX-512: 2 FMA units x 16 lanes x 2 FLOP. An upper bound:
# some cores (AMD Zen 4) run 512-bit FMAs on two 256-bit units, i.e. half this.
CPU_FLOP_PER_CYCLE = 64


@dataclasses.dataclass(frozen=True)
class Variant:
  """One network to benchmark."""
  backbone: str
  width_multiplier: float

  @property
  def name(self) -> str:
    if self.backbone == 'vgg16':
      return self.backbone
    return f'{self.backbone} x{self.width_multiplier}'


@dataclasses.dataclass(frozen=True)
class Result:
  """One row of the throughput table."""
  variant: Variant
  dtype: str
  batch_size: int
  compile_s: float
  device_times: list[float]
  pipeline_times: list[float]
  flops: float
  memory: Any  # jax.stages.Compiled.memory_analysis()
  peak: float | None


def cpu_peak_flops(flop_per_cycle: int) -> tuple[float, str]:
  """An estimate: usable cores x clock (from /proc/cpuinfo) x `flop_per_cycle`."""
  cores = len(os.sched_getaffinity(0))
  clocks = re.findall(r'cpu MHz\s*:\s*([\d.]+)', pathlib.Path('/proc/cpuinfo').read_text())
  mhz = max(float(c) for c in clocks)
  peak = cores * mhz * 1e6 * flop_per_cycle
  return peak, (f'{cores} cores x {mhz:.0f} MHz x {flop_per_cycle} FLOP/cycle = '
                f'{peak / 1e9:.0f} GFLOP/s (estimate)')


def peak_flops(dtype: str, cpu_flop_per_cycle: int) -> tuple[float | None, str]:
  """The device's peak FLOP/s for `dtype` compute and how it was found; None if unknown."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    # XLA:CPU has no faster bf16 path to count on; the fp32 FMA rate is the ceiling for both.
    return cpu_peak_flops(cpu_flop_per_cycle)
  for key, peaks in GPU_PEAK_FLOPS.items():
    if key in device.device_kind:
      return peaks[dtype], (f'{device.device_kind}: {peaks[dtype] / 1e12:.0f} TFLOP/s {dtype} '
                            '(data sheet)')
  return None, f'{device.device_kind}: no peak in GPU_PEAK_FLOPS, MFU not computed'


class PeakRss:
  """Samples this process's RSS in a background thread; `peak` is the largest seen."""

  def __init__(self, interval_s: float = 0.01):
    self._interval_s = interval_s
    self._process = psutil.Process()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self.peak = self._process.memory_info().rss

  def _sample(self) -> None:
    while not self._stop.wait(self._interval_s):
      self.peak = max(self.peak, self._process.memory_info().rss)

  def __enter__(self) -> PeakRss:
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()


def parent_train_config(crop: tuple[int, int], batch_size: int) -> ml_collections.ConfigDict:
  """configs/osvos_davis16.py's `train` fields at this crop and global batch size."""
  train_config = osvos_davis16.get_config().train
  train_config.crop_size, train_config.batch_size = crop, batch_size
  return train_config


@functools.cache
def host_initial_state(variant: Variant) -> train.TrainState:
  """Step 0, on the host. Its float32 parameters serve every compute dtype and batch size, so
  each network pays for one initialisation (a slow XLA:CPU compile) only."""
  train_config = parent_train_config((64, 64), 1)
  optimizer = train.make_optimizer(train_config,
                                   train.make_schedule(train_config, train_config.num_steps))
  model = osvos.OSVOS(backbone=variant.backbone, width_multiplier=variant.width_multiplier)
  # Parameter shapes do not depend on the image size: initialise on a small image.
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  return jax.device_get(jax.jit(functools.partial(
      train.init_state, optimizer, osvos_davis16.get_config().seed))(params))


class Feed:
  """The trainer's input path: grain iterator over DAVIS train, then `train.global_batch`."""

  def __init__(self, dataset: VideoDataset, crop: tuple[int, int]):
    self.dataset = dataset
    self.crop = crop
    self.sharding = jax.sharding.NamedSharding(train.make_mesh(),
                                               jax.sharding.PartitionSpec('data'))

  def iterator(self, batch_size: int) -> grain.DatasetIterator:
    """A fresh iterator of global batches of `batch_size`; its prefetch buffer starts empty,
    as at the start of training."""
    return input_pipeline.train_iterator(
        self.dataset, parent_train_config(self.crop, batch_size), osvos_davis16.get_config().seed,
        train.local_batch_size(batch_size), grain.sharding.NoSharding(),
        osvos_system.clip(None))

  def to_device(self, host_batch: dict[str, Any]) -> dict[str, jax.Array]:
    global_size = len(host_batch['image']) * jax.process_count()
    return train.global_batch(host_batch, self.sharding, global_size)


class Trainer:
  """The trainer's state and jitted step for one network and compute dtype."""

  def __init__(self, variant: Variant, dtype: str):
    train_config = parent_train_config((64, 64), 1)
    schedule = train.make_schedule(train_config, train_config.num_steps)
    optimizer = train.make_optimizer(train_config, schedule)
    mesh = train.make_mesh()
    self.state = jax.device_put(host_initial_state(variant),
                                jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    model = osvos.OSVOS(backbone=variant.backbone, width_multiplier=variant.width_multiplier,
                        dtype=jnp.dtype(dtype))
    self.step = train.jit_train_step(functools.partial(osvos_system.loss, model), optimizer,
                                     schedule, mesh)

  def compile(self, batch: dict[str, jax.Array]) -> jax.stages.Compiled:
    return self.step.lower(self.state, batch).compile()

  def run(self, compiled: jax.stages.Compiled, batch: dict[str, jax.Array]) -> None:
    self.state, metrics = compiled(self.state, batch)
    jax.block_until_ready(metrics)


def time_steps(step: Callable[[], None], max_steps: int, budget_s: float) -> list[float]:
  """Seconds of each call of `step`: `max_steps` of them, or fewer once `budget_s` is spent."""
  times = []
  start = time.perf_counter()
  while len(times) < MIN_TIMED_STEPS or (len(times) < max_steps and
                                         time.perf_counter() - start < budget_s):
    begin = time.perf_counter()
    step()
    times.append(time.perf_counter() - begin)
  return times


def benchmark(variant: Variant, dtype: str, feed: Feed, args: argparse.Namespace) -> Result:
  """Compiles the step, warms it up, then times it device-fed and pipeline-fed."""
  trainer = Trainer(variant, dtype)
  device_batch = feed.to_device(next(feed.iterator(args.batch_size)))
  start = time.perf_counter()
  compiled = trainer.compile(device_batch)
  compile_s = time.perf_counter() - start
  trainer.run(compiled, device_batch)
  device_times = time_steps(lambda: trainer.run(compiled, device_batch), args.steps,
                            args.budget_s)
  iterator = feed.iterator(args.batch_size)
  next(iterator)  # Starts the reader threads; the timed steps then compete with them.
  pipeline_times = time_steps(lambda: trainer.run(compiled, feed.to_device(next(iterator))),
                              args.steps, args.budget_s)
  return Result(variant, dtype, args.batch_size, compile_s, device_times, pipeline_times,
                compiled.cost_analysis()['flops'], compiled.memory_analysis(),
                peak_flops(dtype, args.cpu_flop_per_cycle)[0])


def xla_bytes(memory: Any) -> int:
  """Device memory the compiled step needs: inputs, outputs and scratch, less donated inputs
  that outputs reuse."""
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def print_table(results: list[Result]) -> None:
  print('| model | dtype | batch | compile s | timed steps | step s (device-fed) | img/s | '
        'step s (pipeline-fed) | img/s | GFLOP/step | TFLOP/s | MFU | XLA memory GiB |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in results:
    device_s, pipeline_s = statistics.median(r.device_times), statistics.median(r.pipeline_times)
    achieved = r.flops / device_s
    mfu = f'{achieved / r.peak:.1%}' if r.peak else 'n/a'
    print(f'| {r.variant.name} | {r.dtype} | {r.batch_size} | {r.compile_s:.0f} | '
          f'{len(r.device_times)} + {len(r.pipeline_times)} | {device_s:.3f} | '
          f'{r.batch_size / device_s:.2f} | {pipeline_s:.3f} | {r.batch_size / pipeline_s:.2f} | '
          f'{r.flops / 1e9:.4g} | {achieved / 1e12:.4f} | {mfu} | '
          f'{xla_bytes(r.memory) / GIB:.2f} |')


def largest_batch(trainer: Trainer, feed: Feed, first_batch: int, cap_bytes: int,
                  max_batch: int) -> None:
  """Doubles the batch from `first_batch` while XLA's memory estimate and the peak RSS during
  one step stay under `cap_bytes`. On a CPU device memory is host RAM, so the cap stands in
  for it; the RSS includes everything the process already holds."""
  print('| batch | XLA memory GiB | RSS before GiB | peak RSS GiB | fits |')
  print('|---|---|---|---|---|')
  batch_size, fits = first_batch, 0
  while batch_size <= max_batch:
    batch = feed.to_device(next(feed.iterator(batch_size)))
    compiled = trainer.compile(batch)
    needed = xla_bytes(compiled.memory_analysis())
    if needed > cap_bytes:  # Do not run a step that could exhaust the host.
      print(f'| {batch_size} | {needed / GIB:.2f} | - | not run | no |')
      break
    with PeakRss() as rss:
      before = rss.peak
      trainer.run(compiled, batch)
    ok = rss.peak <= cap_bytes
    print(f'| {batch_size} | {needed / GIB:.2f} | {before / GIB:.2f} | {rss.peak / GIB:.2f} | '
          f'{"yes" if ok else "no"} |', flush=True)
    if not ok:
      break
    fits, batch_size = batch_size, batch_size * 2
  limit = f' (the search stops at --memory_max_batch {max_batch})' if batch_size > max_batch else ''
  print(f'largest batch that fits: {fits}{limit}')


def feed_alone(feed: Feed, batch_size: int, num_batches: int, every: int) -> None:
  """Images/s of the input path with no train step, and the host RSS every `every` batches."""
  iterator = feed.iterator(batch_size)
  process = psutil.Process()
  samples = []
  start = time.perf_counter()
  for index in range(1, num_batches + 1):
    jax.block_until_ready(feed.to_device(next(iterator)))
    if index % every == 0 or index == 1:
      samples.append((index, process.memory_info().rss / GIB))
  elapsed = time.perf_counter() - start
  print(f'\nInput path alone: {num_batches} batches of {batch_size} at '
        f'{feed.crop[0]}x{feed.crop[1]} in {elapsed:.1f} s '
        f'({num_batches * batch_size / elapsed:.1f} images/s)')
  print('RSS GiB by batch: ' + ', '.join(f'{i}: {rss:.3f}' for i, rss in samples))
  values = [rss for _, rss in samples]
  print(f'first {values[0]:.3f} GiB, last {values[-1]:.3f} GiB, max {max(values):.3f} GiB')


def variants(models: list[str], widths: list[float]) -> list[Variant]:
  """vgg16 once; mobilenet_v2 at each width multiplier."""
  return [Variant(m, w) for m in models for w in (widths if m == 'mobilenet_v2' else [1.0])]


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--davis_root', type=pathlib.Path, required=True)
  parser.add_argument('--models', default='vgg16,mobilenet_v2')
  parser.add_argument('--widths', default='1.0,0.5', help='mobilenet_v2 width multipliers')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--height', type=int, default=480)
  parser.add_argument('--width', type=int, default=854)
  parser.add_argument('--batch_size', type=int, default=2, help='global batch')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per feed, at most')
  parser.add_argument('--budget_s', type=float, default=30.0,
                      help='stop timing a feed after this long (after 3 steps)')
  parser.add_argument('--feed_batches', type=int, default=20,
                      help='batches to time the input path alone at the benchmark size')
  parser.add_argument('--cpu_flop_per_cycle', type=int, default=CPU_FLOP_PER_CYCLE)
  parser.add_argument('--memory_model', default='mobilenet_v2',
                      help='backbone for the largest-batch search; empty: skip it')
  parser.add_argument('--memory_width', type=float, default=0.5)
  parser.add_argument('--memory_size', type=int, default=256, help='square crop side')
  parser.add_argument('--memory_cap_gib', type=float, default=8.0)
  parser.add_argument('--memory_first_batch', type=int, default=8)
  parser.add_argument('--memory_max_batch', type=int, default=256)
  parser.add_argument('--rss_batches', type=int, default=400,
                      help='iterator batches for the RSS run; 0: skip it')
  parser.add_argument('--rss_every', type=int, default=25)
  parser.add_argument('--rss_size', type=int, default=256)
  parser.add_argument('--rss_batch_size', type=int, default=8)
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  dataset = davis.load_davis(args.davis_root, split='train', mask_format='binary')
  dtypes = args.dtypes.split(',')
  device = jax.devices()[0]
  print(f'device: {device.device_kind} ({device.platform}) x {jax.device_count()}; '
        f'load average at start {os.getloadavg()[0]:.2f}')
  for dtype in dtypes:
    print(f'peak {dtype}: {peak_flops(dtype, args.cpu_flop_per_cycle)[1]}')
  results = []
  feed = Feed(dataset, (args.height, args.width))
  for variant in variants(args.models.split(','), [float(w) for w in args.widths.split(',')]):
    for dtype in dtypes:
      results.append(benchmark(variant, dtype, feed, args))
      print(f'done: {variant.name} {dtype}', flush=True)
  print()
  print_table(results)
  feed_alone(feed, args.batch_size, args.feed_batches, args.feed_batches)
  if args.memory_model:
    variant = Variant(args.memory_model, args.memory_width)
    print(f'\nLargest batch: {variant.name} {dtypes[0]} at {args.memory_size}x'
          f'{args.memory_size}, cap {args.memory_cap_gib} GiB')
    largest_batch(Trainer(variant, dtypes[0]), Feed(dataset, (args.memory_size,) * 2),
                  args.memory_first_batch, int(args.memory_cap_gib * GIB), args.memory_max_batch)
  if args.rss_batches:
    feed_alone(Feed(dataset, (args.rss_size,) * 2), args.rss_batch_size, args.rss_batches,
               args.rss_every)
  print(f'\nload average at end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()

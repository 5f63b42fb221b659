"""The one trainer every system shares: data-parallel SGD on clips, with exact resume.

    state = train(config, workdir, loss_fn, init_params, clip_spec)

A system (jvos/systems/) hands the trainer its loss, `loss_fn(params, batch, rng) -> scalar`,
the parameters to start from and the `jvos.input_pipeline.ClipSpec` of its examples; a batch
is a dict of arrays (see input_pipeline.py: frames are uint8 RGB 0..255, label maps uint8 with
VOID = 255 where the loss must not look), and `rng` is the step's key for dropout or random
perturbations. The trainer never knows which system it trains.

Scale: a `Mesh` with one 'data' axis spans every device of every process. Each process feeds
its own shard of the data (see input_pipeline.py) and contributes its local batch to one global
batch (`train.batch_size`) split over that axis; parameters and optimizer state are replicated,
so XLA all-reduces the gradients inside the single jit-compiled step. With several hosts, call
`jax.distributed.initialize()` first and put `workdir` where every host can see it.

Restarts: every `train.checkpoint_every` steps and at the end, orbax saves the TrainState
(params, optimizer state, step, RNG key) with the data iterator's position. orbax writes into a
temporary folder and renames it when complete, so a run killed mid-save leaves no checkpoint
that can be loaded; a rerun of the same command resumes from the newest complete one and ends
with the same parameters as a run never interrupted (bitwise on CPU). A non-finite loss,
gradient or parameter stops the run with an `InputError` naming the step, before anything
from that step is saved.

Outputs in `workdir` (process 0): checkpoints/, tensorboard/ (loss, learning rate, steps/s),
train_metrics.jsonl (the same numbers), loss_curve.png, and params.msgpack + model_config.json,
the final parameters as a file `load_params` reads back, e.g. to fine-tune a released parent.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any, Callable, Sequence

from absl import logging
import flax.serialization
import flax.struct
import grain
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorboardX
import tqdm

from jvos import errors
from jvos import input_pipeline
from jvos.data import build_dataset
from jvos.errors import InputError

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], jax.Array]

OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('cosine', 'constant')
PARAMS_FILE = 'params.msgpack'
MODEL_CONFIG_FILE = 'model_config.json'
METRICS_FILE = 'train_metrics.jsonl'
# What of a batch stays on the host: which anchor each clip came from.
HOST_KEYS = ('example',)


@flax.struct.dataclass
class TrainState:
  """Everything a restarted run needs from the devices to continue exactly."""
  step: jax.Array  # Number of optimizer updates applied so far.
  params: Any
  opt_state: optax.OptState
  rng: jax.Array  # Step k draws its dropout key as fold_in(rng, k): no key to carry along.


def make_schedule(train_config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then a constant or cosine-decayed rate.

  Shared by parent training and online fine-tuning (which names its step count `steps`).
  """
  peak, warmup = train_config.learning_rate, train_config.warmup_steps
  if train_config.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, max(1, num_steps - warmup))
  elif train_config.schedule == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise InputError(f'train.schedule={train_config.schedule!r}; use one of {SCHEDULES}.')
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def frozen_mask(params: Any, prefixes: str | Sequence[str]) -> Any:
  """A tree of bools like `params`: True for the params under one of the '/'-joined path
  `prefixes` (e.g. 'encoder/backbone'), which training then leaves as they are."""
  if isinstance(prefixes, str):
    prefixes = [p.strip() for p in prefixes.split(',') if p.strip()]
  path_of = lambda path: '/'.join(str(getattr(k, 'key', k)) for k in path)
  paths = [path_of(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  for prefix in prefixes:
    if not any(path == prefix or path.startswith(prefix + '/') for path in paths):
      tops = sorted({path.split('/')[0] for path in paths})
      raise InputError(f'train.frozen names {prefix!r}, which holds no parameter; give '
                       f'/-joined paths under the top-level names {tops}.')
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(path_of(path) == p or path_of(path).startswith(p + '/')
                          for p in prefixes), params)


def freeze(loss_fn: LossFn, frozen: Any) -> LossFn:
  """`loss_fn` with no gradient to the frozen params: XLA then drops their backward pass, so
  a frozen backbone costs a forward only."""
  def frozen_loss(params, batch, rng):
    params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    return loss_fn(params, batch, rng)
  return frozen_loss


def make_optimizer(train_config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   frozen: Any = None) -> optax.GradientTransformation:
  """`train.optimizer` with decoupled weight decay, after optional global-norm clipping; the
  params `frozen` marks (see `frozen_mask`) are never updated, nor decayed."""
  name, decay = train_config.optimizer, train_config.weight_decay
  if name == 'sgd':
    optimizer = optax.chain(optax.add_decayed_weights(decay),
                            optax.sgd(schedule, momentum=train_config.momentum or None))
  elif name == 'adam':
    optimizer = optax.adamw(schedule, weight_decay=decay)
  else:
    raise InputError(f'train.optimizer={name!r}; use one of {OPTIMIZERS}.')
  if train_config.grad_clip > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optimizer)
  if frozen is not None and any(jax.tree.leaves(frozen)):
    labels = jax.tree.map(lambda f: 'frozen' if f else 'trained', frozen)
    optimizer = optax.multi_transform({'trained': optimizer, 'frozen': optax.set_to_zero()},
                                      labels)
  return optimizer


def make_mesh() -> jax.sharding.Mesh:
  """One 'data' axis over every device of every process (pure data parallelism)."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of `train.batch_size`, which every device must divide."""
  if global_batch_size % jax.device_count():
    raise InputError(f'train.batch_size={global_batch_size} must be a multiple of the '
                     f'{jax.device_count()} devices, which each take an equal slice.')
  return global_batch_size // jax.process_count()


def _float32(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def init_state(optimizer: optax.GradientTransformation, seed: int,
               init_params: Any) -> TrainState:
  """Step 0 from `init_params` (the system's initialisation, e.g. a pretrained backbone)."""
  params = _float32(init_params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=jax.random.PRNGKey(seed))


def to_host(replicated_tree: Any) -> Any:
  """numpy copies of replicated arrays. Unlike `jax.device_get`, this works with several
  processes, where no process can address every device: each holds a full copy anyway."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array)
                                          else x), replicated_tree)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation,
               schedule: optax.Schedule) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on a global batch; 'finite' says whether it may be kept."""
  step_rng = jax.random.fold_in(state.rng, state.step)
  loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': schedule(state.step),
             'finite': jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                   schedule: optax.Schedule, mesh: jax.sharding.Mesh) -> Callable:
  """`train_step` compiled as `train` runs it: the state replicated over `mesh` (and donated, so
  the new one reuses its buffers), the batch split over its 'data' axis."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  return jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, optimizer=optimizer, schedule=schedule),
      in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
      donate_argnums=0)


def global_batch(local_batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding,
                 global_batch_size: int) -> dict[str, jax.Array]:
  """One array per key over all processes, each contributing its local batch."""
  return {key: jax.make_array_from_process_local_data(
              sharding, value, (global_batch_size, *value.shape[1:]))
          for key, value in local_batch.items() if key not in HOST_KEYS}


def checkpoint_manager(workdir: pathlib.Path,
                       train_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """workdir/checkpoints/<step>/{state,data}, keeping the newest `train.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=train_config.keep_checkpoints, create=True)
  return ocp.CheckpointManager((workdir / 'checkpoints').absolute(), options=options,
                               item_names=('state', 'data'))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: TrainState,
                    iterator: grain.DatasetIterator) -> None:
  """Saves in the background once the arrays are copied to the host; the iterator right away."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=grain.checkpoint.CheckpointSave(iterator)),
               force=True)


def restore_checkpoint(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState,
                       iterator: grain.DatasetIterator) -> TrainState:
  """The TrainState saved at `step`, laid out as `abstract_state`; moves `iterator` there too."""
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                    data=grain.checkpoint.CheckpointRestore(iterator)))
  return restored['state']


def export_params(workdir: pathlib.Path, params: Any, model_config: Any) -> None:
  """Writes params.msgpack and model_config.json (process 0), each through a rename."""
  if jax.process_index() != 0:
    return
  files = {PARAMS_FILE: flax.serialization.to_bytes(to_host(params)),
           MODEL_CONFIG_FILE: (json.dumps(model_config, indent=2) + '\n').encode()}
  for name, content in files.items():
    tmp = workdir / (name + '.tmp')
    tmp.write_bytes(content)
    tmp.replace(workdir / name)


def load_params(path: pathlib.Path) -> dict[str, Any]:
  """Parameters written by `export_params`, as nested dicts of float32 numpy arrays (released
  weights may be stored in bfloat16 to stay small; they compute in float32 all the same)."""
  try:
    params = flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())
  except FileNotFoundError:
    raise InputError(f'Parameter file {path} does not exist; point at the {PARAMS_FILE} of a '
                     'finished training run.') from None
  except ValueError as e:
    raise InputError(f'{path} is not a parameter file written by jvos.train ({e}).') from None
  return jax.tree.map(lambda x: np.asarray(x, np.float32)
                      if np.issubdtype(np.asarray(x).dtype, np.floating) or
                      np.asarray(x).dtype == jnp.bfloat16 else np.asarray(x), params)


def plot_loss_curve(metrics_path: pathlib.Path, png_path: pathlib.Path) -> None:
  """Training loss against step. A resumed run logs again the steps after its checkpoint; for
  each step the newest row wins."""
  rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  loss_by_step = dict(sorted({row['step']: row['loss'] for row in rows if 'loss' in row}.items()))
  figure = Figure(figsize=(6, 4), tight_layout=True)
  axes = figure.add_subplot()
  axes.plot(list(loss_by_step), list(loss_by_step.values()))
  axes.set_xlabel('step')
  axes.set_ylabel('training loss')
  axes.grid(alpha=0.3)
  figure.savefig(png_path, dpi=100)


class MetricsLog:
  """Process 0's training curves: TensorBoard events, a JSON-lines copy and loss_curve.png."""

  def __init__(self, workdir: pathlib.Path):
    self._enabled = jax.process_index() == 0
    self._workdir = workdir
    self._writer = (tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))
                    if self._enabled else None)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(f'train/{name}', value, step)
    with (self._workdir / METRICS_FILE).open('a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')

  def close(self) -> None:
    if not self._enabled:
      return
    self._writer.close()
    if (self._workdir / METRICS_FILE).exists():
      plot_loss_curve(self._workdir / METRICS_FILE, self._workdir / 'loss_curve.png')


def _check_finite(metrics: list[dict[str, np.ndarray]], first_step: int,
                  last_checkpoint: int | None, checkpoint_dir: pathlib.Path) -> None:
  for step, step_metrics in enumerate(metrics, start=first_step):
    if not step_metrics['finite']:
      kept = (f'the last good checkpoint, step {last_checkpoint}, is kept in {checkpoint_dir}'
              if last_checkpoint else 'no checkpoint had been written yet')
      raise InputError(
          f'Training diverged at step {step}: loss {step_metrics["loss"]}, gradient norm '
          f'{step_metrics["grad_norm"]} (a loss, gradient or parameter is NaN or infinite). '
          f'Nothing from that step was saved; {kept}. Lower train.learning_rate or set '
          'train.grad_clip, and check the masks; a rerun resumes from the last checkpoint.')


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path, loss_fn: LossFn,
          init_params: Any, clip_spec: input_pipeline.ClipSpec,
          validate: Callable[[int, Any], dict[str, float]] | None = None) -> TrainState:
  """Trains on `config.data` for `train.num_steps` steps, resuming if it can.

  Args:
    config: reads `seed`, `data` (see build_dataset), `train` (the fields below) and, to
      store beside the parameters, `model` if present. `train`: batch_size (global),
      num_steps, optimizer ('sgd' | 'adam'), learning_rate, momentum (sgd), schedule
      ('cosine' | 'constant'), warmup_steps, weight_decay, grad_clip (0: none),
      checkpoint_every, keep_checkpoints, log_every, frozen (param path prefixes left
      untrained, e.g. 'encoder/backbone'; optional), and the input pipeline's crop_size,
      scale_range, flip, colour_jitter, data_threads, data_prefetch.
    workdir: where checkpoints and outputs go; a rerun with the same workdir resumes.
    loss_fn: `loss_fn(params, batch, rng) -> scalar` (see the module docstring).
    init_params: the parameters to start from; ignored when resuming from a checkpoint.
    clip_spec: how the training clips are sampled.
    validate: `validate(step, params) -> {name: value}`, run by process 0 every
      `train.validate_every` steps (and after the last); its values join the training curves.

  Returns:
    The final TrainState (replicated over the devices).
  """
  train_config = config.train
  errors.check_counts(train_config, 'train')
  workdir = pathlib.Path(workdir)
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  schedule = make_schedule(train_config, train_config.num_steps)
  frozen = frozen_mask(init_params, train_config.get('frozen', ''))
  loss_fn = freeze(loss_fn, frozen)
  optimizer = make_optimizer(train_config, schedule, frozen)
  iterator = input_pipeline.train_iterator(
      build_dataset(config.data, workdir), train_config, config.seed,
      local_batch_size(train_config.batch_size), grain.sharding.ShardByJaxProcess(), clip_spec)

  initial_state = jax.jit(functools.partial(init_state, optimizer, config.seed),
                          out_shardings=replicated)
  manager = checkpoint_manager(workdir, train_config)
  last_checkpoint = manager.latest_step()
  if last_checkpoint is None:
    state = initial_state(init_params)
  else:
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(initial_state, init_params))
    state = restore_checkpoint(manager, last_checkpoint, abstract_state, iterator)
    logging.info('Resuming from the checkpoint of step %d in %s.', last_checkpoint,
                 manager.directory)

  step_fn = jit_train_step(loss_fn, optimizer, schedule, mesh)
  first_step = int(to_host(state.step)) + 1
  metrics_log = MetricsLog(workdir)
  progress = tqdm.tqdm(total=train_config.num_steps, initial=first_step - 1, unit='step',
                       desc='train', disable=jax.process_index() != 0)
  # Metrics stay on the devices until a log or checkpoint step: reading them every step would
  # make the host wait for each step before it can dispatch the next.
  pending = []
  window_start = time.perf_counter()
  try:
    for step in range(first_step, train_config.num_steps + 1):
      batch = global_batch(next(iterator), batch_sharding, train_config.batch_size)
      state, metrics = step_fn(state, batch)
      pending.append(metrics)
      progress.update()
      at_checkpoint = step % train_config.checkpoint_every == 0 or step == train_config.num_steps
      if step % train_config.log_every == 0 or at_checkpoint:
        host_metrics = to_host(pending)
        _check_finite(host_metrics, step - len(pending) + 1, last_checkpoint,
                      manager.directory)
        now = time.perf_counter()
        loss = float(np.mean([m['loss'] for m in host_metrics]))
        metrics_log.write(step, {'loss': loss,
                                 'learning_rate': float(host_metrics[-1]['learning_rate']),
                                 'steps_per_s': len(pending) / (now - window_start)})
        progress.set_postfix(loss=f'{loss:.4f}')
        pending, window_start = [], now
      if at_checkpoint:
        save_checkpoint(manager, step, state, iterator)
        last_checkpoint = step
      if validate is not None and jax.process_index() == 0 and (
          step % train_config.validate_every == 0 or step == train_config.num_steps):
        metrics_log.write(step, validate(step, to_host(state.params)))
        window_start = time.perf_counter()  # Validating is not training time.
  finally:
    progress.close()
    manager.wait_until_finished()
    manager.close()
    metrics_log.close()
  model_config = config.get('model')
  export_params(workdir, state.params,
                model_config.to_dict() if model_config is not None else None)
  return state

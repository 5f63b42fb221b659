"""The registry of systems: `config.model.name` -> what trains and segments with that model.

Each system lives in one file, `jvos/systems/<name>.py`, which ends with `SYSTEM = System(...)`
naming its network, its loss, how its training examples are sampled and how it segments a
video. `launch.py`, the trainer and the runner never branch on a system's name: they ask this
registry.

    system = systems.get(config.model.name)
    model = system.create(config.model)                      # a flax module (jvos/models/)
    params = system.initial_params(model, config.model, seed)  # e.g. a pretrained backbone
    loss_fn = system.make_loss(config, model)  # loss_fn(params, batch, rng): jvos.train's
    segmenter = system.build_segmenter(config, model, params)  # what jvos.segment runs

Released weights are a params.msgpack with the model_config.json that built them beside it
(`jvos.train.export_params` writes both), so segmenting never pairs parameters with a model
they were not trained as, and weights of one system given to another fail with both named.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import ml_collections

from jvos import train
from jvos.errors import InputError

NAMES = ('flow', 'osvos', 'osmn', 'rvos', 's2s', 'cosnet', 'deeplab')


@dataclasses.dataclass(frozen=True)
class System:
  """What one system is made of.

  Attributes:
    name: its `config.model.name`.
    tasks: the tasks it segments: 'semi-supervised' (one-shot) and/or 'unsupervised'.
    build_segmenter: (config, model, params) -> a `jvos.segment.Segmenter`; model and params
      are None for a system with nothing learned.
    create: model config -> the flax module; None for a system with nothing to train.
    initial_params: (model, model config, seed) -> the parameters training starts from.
    make_loss: (config, model) -> loss_fn(params, batch, rng) -> scalar, what the trainer
      minimises; a batch is a dict of arrays, the clips of `jvos.input_pipeline` (see `clip`).
    clip: config -> the `jvos.input_pipeline.ClipSpec` its training examples follow.
  """
  name: str
  tasks: tuple[str, ...]
  build_segmenter: Callable[[ml_collections.ConfigDict, nn.Module | None, Any], Any]
  create: Callable[[ml_collections.ConfigDict], nn.Module] | None = None
  initial_params: Callable[[nn.Module, ml_collections.ConfigDict, int], Any] | None = None
  make_loss: Callable[[ml_collections.ConfigDict, nn.Module], Callable[..., Any]] | None = None
  clip: Callable[[ml_collections.ConfigDict], Any] | None = None

  @property
  def trainable(self) -> bool:
    return self.create is not None


def get(name: str) -> System:
  """The system registered as `name`, imported on first use (so flow needs no JAX model)."""
  if name not in NAMES:
    raise InputError(f'model.name={name!r} is not a system; use one of {NAMES}.')
  return importlib.import_module(f'jvos.systems.{name}').SYSTEM


def load_weights(path: str | pathlib.Path,
                 system: System) -> tuple[nn.Module, Any, ml_collections.ConfigDict]:
  """The model, parameters and model config of released or trained weights, checked to be
  `system`'s.

  The architecture comes from the model_config.json beside the params, never from the config
  that asks for them.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise InputError(f'{path} does not exist: `weights` must be the params.msgpack of a training '
                     'run (--mode train) or of a release in experiments/; pass --config.weights='
                     '<that file>.')
  model_config_path = path.with_name(train.MODEL_CONFIG_FILE)
  if not model_config_path.is_file():
    raise InputError(f'{model_config_path} is missing: `weights` must be the params.msgpack of '
                     'a training run (--mode train), with its model_config.json beside it.')
  model_config = ml_collections.ConfigDict(json.loads(model_config_path.read_text()))
  if model_config.get('name') != system.name:
    raise InputError(
        f'{path} holds weights of {model_config.get("name")!r} (its model_config.json says so), '
        f'but the config runs model.name={system.name!r}; pass --config.weights=<the '
        f'params.msgpack of a {system.name} run>, or use that system\'s config.')
  return system.create(model_config), train.load_params(path), model_config


def build_segmenter(config: ml_collections.ConfigDict) -> Any:
  """The segmenter `config` describes: its system, with its weights loaded if it has any."""
  system = get(config.model.name)
  if config.task not in system.tasks:
    raise InputError(
        f'model.name={system.name!r} segments only {system.tasks} but task={config.task!r}; '
        'pick a system made for that task (one-shot: osvos, osmn, rvos, s2s, flow; zero-shot: '
        'cosnet, rvos, deeplab) or set --config.task.')
  if not system.trainable:
    return system.build_segmenter(config, None, None)
  if not config.get('weights'):
    raise InputError(f'weights is empty: model.name={system.name!r} needs trained parameters; '
                     'pass --config.weights=<params.msgpack of a --mode train run>.')
  model, params, model_config = load_weights(config.weights, system)
  # Segmenting follows the architecture the weights were trained as, not the config's, but
  # may compute in another dtype (segment.dtype, e.g. bfloat16 on accelerators).
  config = config.copy_and_resolve_references()
  if config.get('segment', {}).get('dtype') and 'dtype' in model_config:
    model_config.dtype = config.segment.dtype
    model = system.create(model_config)
  config.model = model_config
  return system.build_segmenter(config, model, params)

"""Methods: `build_segmenter(config)` returns a callable video -> per-frame object scores."""

import json
import pathlib

import ml_collections

from jvos import finetune
from jvos import train
from jvos.errors import InputError
from jvos.methods import flow
from jvos.models import osvos
from jvos.segment import Segmenter


def load_parent(path: str) -> tuple[osvos.OSVOS, dict]:
  """A trained parent: params.msgpack, and the model_config.json beside it that built it.

  The architecture comes from the parent's own record, so a config can never pair a parent
  with a model it was not trained as.
  """
  path = pathlib.Path(path)
  model_config_path = path.with_name(train.MODEL_CONFIG_FILE)
  if not model_config_path.is_file():
    raise InputError(f'{model_config_path} is missing: finetune.parent must be the params.msgpack '
                     'of a training run (--mode train), with its model_config.json beside it.')
  model_config = ml_collections.ConfigDict(json.loads(model_config_path.read_text()))
  return osvos.create(model_config), train.load_params(path)


def build_segmenter(config: ml_collections.ConfigDict) -> Segmenter:
  name = config.method.name
  if name == 'flow':
    return flow.FlowPropagation(preset=config.method.preset)
  if name == 'osvos':
    model, params = load_parent(config.finetune.parent)
    optimizer = train.make_optimizer(
        config.finetune, train.make_schedule(config.finetune, config.finetune.steps))
    return finetune.FinetuneSegmenter(model.apply, osvos.loss_fn, osvos.probabilities, params,
                                      optimizer, config.finetune, seed=config.seed)
  raise InputError(f'Unknown method.name={name!r}; use one of: flow, osvos.')

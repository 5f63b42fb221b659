"""Methods: `build_segmenter(config)` returns a callable video -> per-frame object scores."""

import ml_collections

from jvos.errors import InputError
from jvos.methods import flow
from jvos.segment import Segmenter


def build_segmenter(config: ml_collections.ConfigDict) -> Segmenter:
  name = config.method.name
  if name == 'flow':
    return flow.FlowPropagation(preset=config.method.preset)
  raise InputError(f'Unknown method.name={name!r}; use one of: flow.')

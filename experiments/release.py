r"""Copies a finished training run into experiments/<name>/ as released weights.

    python experiments/release.py --run runs/osmn_train --out experiments/osmn_davis16 --bfloat16

Writes params.msgpack (float parameters cast to bfloat16 with --bfloat16, halving the file;
jvos.train.load_params computes in float32 all the same), model_config.json, the resolved
config.json, train_metrics.jsonl and loss_curve.png of the run. The README beside them, which
says how the run was made, is written by hand.
"""

import pathlib
import shutil

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import numpy as np

from jvos import train

_RUN = flags.DEFINE_string('run', None, 'Workdir of a finished --mode train run.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Release folder, e.g. experiments/osmn_davis16.',
                           required=True)
_BFLOAT16 = flags.DEFINE_bool('bfloat16', False, 'Store float parameters in bfloat16.')
_COPIED = (train.MODEL_CONFIG_FILE, 'config.json', train.METRICS_FILE, 'loss_curve.png')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  run, out = pathlib.Path(_RUN.value), pathlib.Path(_OUT.value)
  params = train.load_params(run / train.PARAMS_FILE)
  if _BFLOAT16.value:
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if np.issubdtype(x.dtype, np.floating)
                          else x, params)
  out.mkdir(parents=True, exist_ok=True)
  (out / train.PARAMS_FILE).write_bytes(flax.serialization.to_bytes(params))
  for name in _COPIED:
    if (run / name).is_file():
      shutil.copyfile(run / name, out / name)
  size = (out / train.PARAMS_FILE).stat().st_size / 1e6
  print(f'{out / train.PARAMS_FILE}: {size:.1f} MB; with {", ".join(_COPIED)}')


if __name__ == '__main__':
  app.run(main)

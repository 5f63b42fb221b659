r"""Runs one jvos job: segment, evaluate, train or fine-tune, as a config file describes.

    python launch.py                                   # the main job: configs/quickstart.py
    python launch.py --config configs/flow_davis16.py --mode segment \
        --config.data.root=/data/DAVIS --config.data.sequences=dog,goat --workdir runs/flow
    python launch.py --mode evaluate --config.data.root=/data/DAVIS --workdir runs/flow

Everything a run writes goes to --workdir: the resolved config (config.json), masks/<video>/,
metrics.json and the benchmark CSV tables.
"""

import json
import os
import pathlib
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# Only what scoring needs is imported here: JAX and the networks load in the modes that run
# them (run_segment, run_train, init_distributed), so `--mode evaluate` starts without the
# seconds that importing JAX costs.
from jvos import evaluation
from jvos import postprocess
from jvos import report
from jvos import temporal_prior
from jvos.evaluation import results as evaluation_results
from jvos.data import build_dataset
from jvos import errors
from jvos.errors import InputError

def _env_int(name: str) -> int | None:
  return int(os.environ[name]) if os.environ.get(name) else None


_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'quickstart.py')
_CONFIG = config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'Experiment config file.')
_MODE = flags.DEFINE_enum('mode', None, ['segment', 'evaluate', 'train', 'finetune'],
                          'What to run; default: the config\'s `mode`.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder; default: runs/<config name>.')
# Multi-process runs (TPU pods, GPU clusters). Defaults come from the variables JAX documents,
# so a scheduler can set them; --distributed alone lets JAX detect the cluster (TPU, SLURM...).
_COORDINATOR = flags.DEFINE_string('coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
                                   'host:port of process 0; starts jax.distributed.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', _env_int('JAX_NUM_PROCESSES'),
                                      'Number of processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', _env_int('JAX_PROCESS_ID'),
                                   'This process\'s index in a multi-process run.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Start jax.distributed from the cluster environment.')


def segment_record(config) -> dict:
  """What decides the masks of a run: the config less what only scoring or display reads,
  and less the sequence list (a rerun may add sequences)."""
  record = config.to_dict()
  for key in ('mode', 'evaluation', 'output'):
    record.pop(key, None)
  record['data'].pop('sequences', None)
  return record


def run_segment(config, workdir: pathlib.Path) -> None:
  """Runs the config's system over the dataset, writes masks, then scores them if it can.

  A rerun in the same workdir skips the videos already finished with the same config.
  `--mode finetune` is the same run for systems that fine-tune on the first frame (OSVOS):
  `finetune.steps` says how many steps, 0 for the parent network alone.
  """
  from jvos import segment, systems  # pylint: disable=import-outside-toplevel
  dataset = build_dataset(config.data, workdir)
  refine = postprocess.postprocess(config.get('postprocess'))
  segmenter = temporal_prior.wrap(config.get('temporal_prior'), systems.build_segmenter(config))
  masks_dir = workdir / 'masks'
  finished = segment.completed_videos(masks_dir, segment_record(config))
  timing = segment.segment_dataset(
      segmenter, dataset, masks_dir, task=config.task, max_height=config.segment.max_height,
      overlays_dir=workdir / 'overlays' if config.output.overlays else None,
      postprocess=refine, skip=finished)
  timing_path = workdir / 'timing.json'
  if timing_path.is_file():  # The videos an earlier run segmented keep their times.
    timing = {**json.loads(timing_path.read_text()), **timing}
  evaluation_results.write_json(timing_path, timing)
  if config.output.overlays and dataset.name == 'video':  # A user's one video: W/overlay.mp4.
    movie = workdir / 'overlays' / f'{dataset.videos[0].name}.mp4'
    if movie.is_file():
      movie.replace(workdir / 'overlay.mp4')
  run_evaluate(config, workdir, dataset)


def run_evaluate(config, workdir: pathlib.Path, dataset=None) -> None:
  """Scores the masks already in <workdir>/masks against the dataset's annotations."""
  if dataset is None:
    dataset = build_dataset(config.data, workdir)
  metrics = evaluation.evaluate(dataset, workdir / 'masks', workdir, task=config.task,
                                workers=config.evaluation.workers)
  page = report.write_report(workdir, dataset, metrics, workdir / 'masks')
  if page:
    logging.info('Report: %s', page)
  if metrics is not None:
    logging.info('J&F %.4f  J %.4f  F %.4f  (%s)', metrics['JF_mean'], metrics['J_mean'],
                 metrics['F_mean'], workdir / 'metrics.json')


TASKS = ('semi-supervised', 'unsupervised')


def check_config(config) -> None:
  """One clear error, before any work, for a config value no job can run with."""
  if config.task not in TASKS:
    raise InputError(f'task={config.task!r}; use --config.task=semi-supervised (one-shot: the '
                     'first frame\'s masks are given) or unsupervised (zero-shot).')
  if config.data.name == 'video' and config.data.get('frames') and not config.data.get(
      'mask') and config.task == 'semi-supervised':
    raise InputError(f'model.name={config.model.name!r} is one-shot and needs the first frame\'s '
                     'mask: pass --config.data.mask=<png>, or segment zero-shot with '
                     '--config configs/demo_video.py:cosnet (or :rvos_zeroshot).')
  prior = config.get('temporal_prior', {}).get('method', 'none')
  if config.task == 'unsupervised' and prior != 'none':
    raise InputError(f'temporal_prior.method={prior!r} follows the given first masks, which the '
                     'unsupervised task has none of; set --config.temporal_prior.method=none.')
  errors.check_counts(config)  # Before any work, rather than when each count is used.


def require_section(config, section: str, mode: str) -> None:
  if section not in config:
    raise InputError(f'--mode {mode} needs a `{section}` section in the config, which this one '
                     'lacks; use a model config such as configs/osvos_davis16.py.')


def run_train(config, workdir: pathlib.Path) -> None:
  """Trains the config's system on `train.split` of the dataset; a rerun resumes."""
  from jvos import systems, train  # pylint: disable=import-outside-toplevel
  require_section(config, 'train', 'train')
  system = systems.get(config.model.name)
  if not system.trainable:
    raise InputError(f'model.name={system.name!r} has nothing to train; use a config of a '
                     'learned system, such as configs/osvos_davis16.py.')
  config = config.copy_and_resolve_references()
  config.data.split, config.data.sequences = config.train.split, config.train.sequences
  if config.train.get('init_weights'):
    # Continue from a trained run of the same system (e.g. a curriculum's second stage), as
    # the architecture it was trained as.
    model, init_params, config.model = systems.load_weights(config.train.init_weights, system)
  else:
    model = system.create(config.model)
    init_params = system.initial_params(model, config.model, config.seed)
  train.train(config, workdir, system.make_loss(config, model), init_params,
              system.clip(config), validation(config, workdir, system, model))
  logging.info('Trained parameters: %s', workdir / train.PARAMS_FILE)


def validation(config, workdir: pathlib.Path, system, model):
  """`validate(step, params)` for train.train: J&F of the weights so far on
  train.validate_sequences of data.root (None if train.validate_every is 0).

  The system segments as it would after training, at train.validate_height rows, with no
  fine-tuning (for OSVOS: the parent alone), into <workdir>/validation/<step>/.
  """
  from jvos import segment  # pylint: disable=import-outside-toplevel
  if not config.train.validate_every:
    return None
  if not config.train.validate_sequences:
    raise InputError('train.validate_every is set but train.validate_sequences is empty; pass '
                     '--config.train.validate_sequences=<val sequences, comma-separated>.')
  segment_config = config.copy_and_resolve_references()
  segment_config.data.update(split='val', sequences=config.train.validate_sequences)
  if 'finetune' in segment_config:
    segment_config.finetune.steps = 0
  dataset = build_dataset(segment_config.data, workdir)

  def validate(step: int, params) -> dict[str, float]:
    out = workdir / 'validation' / str(step)
    segmenter = temporal_prior.wrap(segment_config.get('temporal_prior'),
                                    system.build_segmenter(segment_config, model, params))
    segment.segment_dataset(segmenter, dataset, out / 'masks', task=config.task,
                            max_height=config.train.validate_height)
    metrics = evaluation.evaluate(dataset, out / 'masks', out, task=config.task, workers=1)
    logging.info('Validation J&F %.4f on %s', metrics['JF_mean'],
                 config.train.validate_sequences)
    return {'validation_JF': metrics['JF_mean']}

  return validate


def run_finetune(config, workdir: pathlib.Path) -> None:
  require_section(config, 'finetune', 'finetune')
  run_segment(config, workdir)


MODES = {'segment': run_segment, 'evaluate': run_evaluate, 'train': run_train,
         'finetune': run_finetune}


def init_distributed() -> int:
  """Joins the other processes of a multi-process run (a single process needs nothing);
  returns this process's index."""
  import jax  # pylint: disable=import-outside-toplevel
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  if jax.process_count() > 1:
    logging.info('Process %d of %d; devices: %d local, %d global.', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
  return jax.process_index()


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    config = _CONFIG.value
    mode = _MODE.value or config.mode
  except OSError as e:  # config_flags loads the file lazily, here.
    missing = config_flags.get_config_filename(flags.FLAGS['config'])
    print(f'jvos: error: --config {missing}: cannot load it ({str(e).splitlines()[-1].strip()}); '
          'pass a file from configs/, e.g. configs/osvos_davis16.py.', file=sys.stderr)
    sys.exit(2)
  config_name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
  workdir = pathlib.Path(_WORKDIR.value or os.path.join('runs', config_name))
  workdir.mkdir(parents=True, exist_ok=True)
  process_index = 0 if mode == 'evaluate' else init_distributed()  # Scoring is one process.
  if process_index == 0:
    (workdir / 'config.json').write_text(json.dumps(config.to_dict(), indent=2) + '\n')
  logging.info('mode=%s workdir=%s', mode, workdir)
  try:
    check_config(config)
    MODES[mode](config, workdir)
  except InputError as e:
    print(f'jvos: error: {e}', file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override reported in one line.

  ml_collections raises a bare AttributeError (from deep inside) for a misspelt field and
  absl's own errors end in a usage hint; a user needs the flag and the fix instead.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if 'Traceback' in message:  # The config file raised: its last line says what and why.
      message = message.strip().splitlines()[-1].partition(': ')[2]
  except AttributeError as e:
    # ml_collections: AttributeError('\'rooot\'\nDid you mean "root" instead of "rooot"?').
    field = re.search(r"(\w+)", str(e)).group(1)
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    given = [a.split('=')[0] for a in argv[1:]
             if a.startswith('--config.') and a.split('=')[0].endswith('.' + field)]
    message = (f'{given[0] if given else "--config"}: the config has no field {field!r}'
               + (f'; did you mean {hint.group(1)!r}?' if hint else
                  '; check the spelling against the config file.'))
  print(f'jvos: error: {message}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

r"""The one results table: every system on every evaluation set that exists here.

    python experiments/results.py --davis ../shared/data/davis2016 --composites runs/composites
    python experiments/results.py --davis ... --composites ... --rows osmn,osmn-composites
    python experiments/results.py --table_only      # rewrite results.md/.csv from the rows kept

Each row is one `launch.py` run (its config file and overrides are the row's definition
below) into runs/results/<row>/; its metrics.json and timing.json are kept as
experiments/results/<row>.json, with the command and the machine, and results.md and
results.csv are regenerated from all kept rows, so a sub-set of rows can be rerun alone.

Evaluation sets:
  davis16     the 10 DAVIS-2016 val sequences shipped in ../shared (one-shot);
  composites  their multi-object composites (`python -m jvos.data.composites --split val`,
              seed 0: each val sequence as a background with 1-2 objects of the others);
  zeroshot    the 10 DAVIS-2016 val sequences, no mask given, DAVIS-2016's unsupervised
              protocol on every frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import pathlib
import platform
import shlex
import shutil

from jvos.data import composites
import segment_runs

REPO = segment_runs.REPO
RESULTS = REPO / 'experiments' / 'results'
VAL = ('camel', 'car-roundabout', 'dog', 'drift-chicane', 'drift-straight', 'goat',
       'horsejump-high', 'motocross-jump', 'paragliding-launch', 'soapbox')
SETS = {'davis16': 'DAVIS-2016 val (10)', 'composites': 'composites of val (10)',
        'zeroshot': 'DAVIS-2016 val (10), zero-shot'}


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  system: str
  evaluation_set: str
  config: str
  overrides: tuple[str, ...] = ()
  # Architecture fields changed in the released weights' model_config.json (test-time
  # ablations: the trained network with a part switched off), e.g. (('visual', False),).
  ablate: tuple[tuple[str, object], ...] = ()


def _rows() -> list[Row]:
  rows = []

  def both(name, system, config, *overrides):
    rows.append(Row(name, system, 'davis16', config, overrides))
    rows.append(Row(f'{name}-composites', system, 'composites', config, overrides))

  # The test-time levers (issue 13): the flow prior, the dense CRF and the flipped view.
  crf = '--config.postprocess.crf=True'
  no_prior, no_crf = '--config.temporal_prior.method=none', '--config.postprocess.crf=False'
  no_flip = '--config.segment.flip=False'
  # Online learning (RVOS, S2S): 100 fine-tune steps on the first frame.
  ol = '--config.finetune.steps=100'

  both('flow', 'flow (DIS propagation)', 'configs/flow_davis16.py')
  # OSVOS's fine-tuning: crop 384, 300 steps, online adaptation every 5th frame by default;
  # before 2026-12-06, whole frames, 200 steps, no online adaptation.
  whole, steps_200 = '--config.finetune.crop_size=0', '--config.finetune.steps=200'
  no_online, every_2 = '--config.online.every=0', '--config.online.every=2'
  steps_150 = '--config.finetune.steps=150'
  parent_only = ('--config.finetune.steps=0', no_online)
  rows.append(Row('osvos-parent', 'OSVOS, parent only', 'davis16', 'configs/osvos_davis16.py',
                  parent_only))
  both('osvos', 'OSVOS (300 fine-tune steps on crops, online adaptation, flip, flow prior, '
       'CRF)', 'configs/osvos_davis16.py')
  rows.append(Row('osvos-every2', 'OSVOS (the same, online adaptation every 2nd frame)',
                  'davis16', 'configs/osvos_davis16.py', (every_2,)))
  rows.append(Row('osvos-crop448', 'OSVOS (the same on 448x448 crops)', 'davis16',
                  'configs/osvos_davis16.py', ('--config.finetune.crop_size=448',)))
  rows.append(Row('osvos-lr2e-4', 'OSVOS (the same, fine-tuning at lr 2e-4)', 'davis16',
                  'configs/osvos_davis16.py', ('--config.finetune.learning_rate=2e-4',)))
  rows.append(Row('osvos-hard2', 'OSVOS (the same, pixels weighed up to 3x by their error)',
                  'davis16', 'configs/osvos_davis16.py', ('--config.finetune.hard_weight=2.0',)))
  # Stronger parents (issue 13), trained as experiments/osvos_levers.md says into runs/, then
  # fine-tuned with the default: the released recipe twice as long, and at width 1.0 from the
  # ImageNet MobileNetV2.
  for parent, what in (('parent2800', 'a parent trained 2,800 steps'),
                       ('parent-w1.0', 'a width-1.0 parent from the ImageNet trunk')):
    weights = f'--config.weights=runs/osvos_{parent}/params.msgpack'
    rows.append(Row(f'osvos-{parent}', f'OSVOS (the default, {what})', 'davis16',
                    'configs/osvos_davis16.py', (weights,)))
    rows.append(Row(f'osvos-{parent}-only', f'OSVOS, {what}, parent only', 'davis16',
                    'configs/osvos_davis16.py', (weights, *parent_only)))
  # The same default with other random streams: how far the mean moves by chance alone.
  for seed in (1, 2):
    rows.append(Row(f'osvos-seed{seed}', f'OSVOS (the default, random seed {seed})', 'davis16',
                    'configs/osvos_davis16.py', (f'--config.seed={seed}',)))
  for max_scale in (1.6, 2.0):
    rows.append(Row(f'osvos-scale{max_scale}', f'OSVOS (the same, fine-tuning copies scaled '
                    f'up to {max_scale}x either way)', 'davis16', 'configs/osvos_davis16.py',
                    (f'--config.finetune.max_scale={max_scale}',)))
  rows.append(Row('osvos-steps150', 'OSVOS (150 fine-tune steps on crops, online adaptation, '
                  'flip, flow prior, CRF)', 'davis16', 'configs/osvos_davis16.py', (steps_150,)))
  rows.append(Row('osvos-steps150-every2', 'OSVOS (150 fine-tune steps on crops, online '
                  'adaptation every 2nd frame, flip, flow prior, CRF)', 'davis16',
                  'configs/osvos_davis16.py', (steps_150, every_2)))
  rows.append(Row('osvos-whole-frames', 'OSVOS (150 fine-tune steps on whole frames, online '
                  'adaptation, flip, flow prior, CRF)', 'davis16', 'configs/osvos_davis16.py',
                  (whole, steps_150)))
  rows.append(Row('osvos-no-online', 'OSVOS (200 fine-tune steps on whole frames, flip, flow '
                  'prior, CRF)', 'davis16', 'configs/osvos_davis16.py',
                  (whole, steps_200, no_online)))
  rows.append(Row('osvos-no-levers', 'OSVOS (200 fine-tune steps on whole frames), no '
                  'test-time levers', 'davis16', 'configs/osvos_davis16.py',
                  (whole, steps_200, no_online, no_flip, no_prior, no_crf)))
  # The fine-tuning recipe (issue 13): rotated and colour-jittered copies of the first frame.
  for rotation, jitter in ((15, 0.2), (15, 0.0), (0, 0.2)):
    rows.append(Row(f'osvos-augment-r{rotation}-c{jitter}-no-levers',
                    f'OSVOS (200 fine-tune steps on whole frames, rotation {rotation}, colour '
                    f'jitter {jitter}), no test-time levers', 'davis16', 'configs/osvos_davis16.py',
                    (f'--config.finetune.max_rotation={rotation}',
                     f'--config.finetune.colour_jitter={jitter}', whole, steps_200, no_online,
                     no_flip, no_prior, no_crf)))
  both('osmn', 'OSMN (flow prior, dense CRF)', 'configs/osmn_davis16.py')
  both('osmn-no-levers', 'OSMN, no test-time levers', 'configs/osmn_davis16.py', no_prior, no_crf)
  rows.append(Row('osmn-prior', 'OSMN + flow prior', 'davis16', 'configs/osmn_davis16.py',
                  (no_crf,)))
  rows.append(Row('osmn-crf', 'OSMN + dense CRF', 'davis16', 'configs/osmn_davis16.py',
                  (no_prior,)))
  for part in ('visual', 'spatial'):
    rows.append(Row(f'osmn-no-{part}',
                    f'OSMN without the {part} modulator (at test time), no test-time levers',
                    'davis16', 'configs/osmn_davis16.py', (no_prior, no_crf), ((part, False),)))
  # OSMN at its start, before any training: modulators at identity on the released OSVOS
  # parent (experiments/osmn_davis16/README.md makes the weights: one training step at lr 0).
  start = '--config.weights=runs/osmn_start/params.msgpack'
  rows.append(Row('osmn-start', 'OSMN untrained: the OSVOS parent, modulators at identity (flow '
                  'prior, dense CRF)', 'davis16', 'configs/osmn_davis16.py', (start,)))
  rows.append(Row('osmn-start-no-levers', 'OSMN untrained: the OSVOS parent, modulators at '
                  'identity, no test-time levers', 'davis16', 'configs/osmn_davis16.py',
                  (start, no_prior, no_crf)))
  rows.append(Row('osmn-ft50', 'OSMN + 50 fine-tune steps, no test-time levers', 'davis16',
                  'configs/osmn_davis16.py', ('--config.finetune.steps=50', no_prior, no_crf)))
  rows.append(Row('osmn-ft50-levers', 'OSMN + 50 fine-tune steps (flow prior, dense CRF)',
                  'davis16', 'configs/osmn_davis16.py', ('--config.finetune.steps=50',)))
  both('rvos', 'RVOS one-shot (flow prior, dense CRF)', 'configs/rvos_davis17.py')
  both('rvos-no-levers', 'RVOS one-shot, no test-time levers', 'configs/rvos_davis17.py',
       no_prior, no_crf)
  # RVOS with its network fine-tuned on the first frame, every object at once (not the paper's):
  # 100 steps at the learning rate first measured (1e-4) and at 1e-3, two seeds of OL's random
  # copies on the composites.
  rvos = 'configs/rvos_davis17.py'
  for lr, name in (('1e-4', 'rvos-ol'), ('1e-3', 'rvos-ol-lr1e-3')):
    system = f'RVOS one-shot + OL (100 steps at lr {lr}, flow prior, dense CRF)'
    learning_rate = f'--config.finetune.learning_rate={lr}'
    rows.append(Row(name, system, 'davis16', rvos, (ol, learning_rate)))
    for seed in (0, 1):
      rows.append(Row(f'{name}-seed{seed}-composites', f'{system}, random seed {seed}',
                      'composites', rvos, (ol, learning_rate, f'--config.seed={seed}')))
  # S2S's config has had the levers on since 2026-12-07; before, they were off by default.
  s2s = 'configs/s2s_davis16.py'
  both('s2s', 'S2S (flow prior, dense CRF)', s2s)
  both('s2s-no-levers', 'S2S, no test-time levers', s2s, no_prior, no_crf)
  rows.append(Row('s2s-prior', 'S2S + flow prior', 'davis16', s2s, (no_crf,)))
  rows.append(Row('s2s-crf', 'S2S + dense CRF', 'davis16', s2s, (no_prior,)))
  # OL's default since 2026-12-07: backbone and ConvLSTM frozen, Adam at 1e-3; before, the
  # paper's (the ConvLSTM alone frozen) at 1e-4, which the s2s-ol-paper rows spell out.
  s2s_ol = 'S2S + OL (100 steps at lr 1e-3, backbone and ConvLSTM frozen; flow prior, dense CRF)'
  rows.append(Row('s2s-ol', s2s_ol, 'davis16', s2s, (ol,)))
  rows.append(Row('s2s-ol-seed1', f'{s2s_ol}, random seed 1', 'davis16', s2s,
                  (ol, '--config.seed=1')))
  # OL, then online adaptation (OnAVOS, as OSVOS's) during the video.
  rows.append(Row('s2s-ol-online', 'S2S + OL (100 steps at lr 1e-3, backbone and ConvLSTM '
                  'frozen; online adaptation every 5th frame, 10 steps at lr 1e-4; flow prior, '
                  'dense CRF)', 'davis16', s2s, (ol, '--config.online.every=5')))
  paper_ol = (ol, '--config.finetune.frozen=lstm')
  rows.append(Row('s2s-ol-paper', "S2S + the paper's OL (100 steps at lr 1e-4, ConvLSTM frozen; "
                  'flow prior, dense CRF)', 'davis16', s2s,
                  (*paper_ol, '--config.finetune.learning_rate=1e-4')))
  for lr in ('1e-4', '1e-3'):
    rows.append(Row(f's2s-ol-paper-lr{lr}-no-levers', f"S2S + the paper's OL (100 steps at lr "
                    f'{lr}, ConvLSTM frozen), no test-time levers', 'davis16', s2s,
                    (*paper_ol, f'--config.finetune.learning_rate={lr}', no_prior, no_crf)))
  deeplab_weights = '--config.model.pretrained={weights}/deeplabv3_mnv2_pascal_257_float.tflite'
  rows.append(Row('deeplab', 'DeepLabV3 object classes', 'zeroshot', 'configs/deeplab_davis16.py',
                  (deeplab_weights,)))
  rows.append(Row('deeplab-os16', 'DeepLabV3 object classes, output stride 16', 'zeroshot',
                  'configs/deeplab_davis16.py',
                  (deeplab_weights, '--config.model.output_stride=16')))
  rows.append(Row('cosnet', 'COSNet (5 references, flip, dense CRF)', 'zeroshot',
                  'configs/cosnet_davis16.py'))
  rows.append(Row('cosnet-crf', 'COSNet (5 references, dense CRF), no flip', 'zeroshot',
                  'configs/cosnet_davis16.py', (no_flip,)))
  for references in (1, 3, 5):
    rows.append(Row(f'cosnet-{references}', f'COSNet, {references} references, no test-time levers',
                    'zeroshot', 'configs/cosnet_davis16.py',
                    (f'--config.segment.references={references}', no_flip, no_crf)))
  rows.append(Row('rvos-zeroshot', 'RVOS zero-shot', 'zeroshot', 'configs/rvos_zeroshot_davis16.py'))
  rows.append(Row('rvos-zeroshot-crf', 'RVOS zero-shot + dense CRF', 'zeroshot',
                  'configs/rvos_zeroshot_davis16.py', (crf,)))
  return rows


ROWS = {row.name: row for row in _rows()}


def data_flags(row: Row, davis: pathlib.Path, composites_root: pathlib.Path) -> list[str]:
  if row.evaluation_set == 'composites':
    return [f'--config.data.root={composites_root}', '--config.data.split=val',
            '--config.data.mask_format=palette']
  return [f'--config.data.root={davis}', f'--config.data.sequences={",".join(VAL)}',
          '--config.data.mask_format=binary']


def ablated_weights(row: Row, folder: pathlib.Path) -> pathlib.Path:
  """The row's config's released weights with `row.ablate` applied to their model config."""
  released = pathlib.Path(config_weights(row.config))
  folder.mkdir(parents=True)
  model_config = json.loads(released.with_name('model_config.json').read_text())
  model_config.update(dict(row.ablate))
  (folder / 'model_config.json').write_text(json.dumps(model_config, indent=2) + '\n')
  (folder / released.name).symlink_to(released)
  return folder / released.name


def config_weights(config_file: str) -> str:
  """The `weights` a config file (configs/<name>.py) names."""
  return importlib.import_module(f'configs.{pathlib.Path(config_file).stem}').get_config().weights


def machine() -> str:
  """Cores, CPU model and whether it has AVX-512: machines named 'AMD EPYC' here come with and
  without it, 3-6x apart on these networks (experiments/objects_speed.md)."""
  info = pathlib.Path('/proc/cpuinfo').read_text().splitlines()
  field = lambda name: next((line.split(':', 1)[1].strip() for line in info
                             if line.startswith(name)), '')
  vector = 'AVX-512' if 'avx512f' in field('flags').split() else 'no AVX-512'
  return f'{os.cpu_count()} cores, {field("model name") or platform.processor()}, {vector}'


def run(row: Row, davis: pathlib.Path, composites_root: pathlib.Path,
        weights: pathlib.Path) -> dict:
  workdir = REPO / 'runs' / 'results' / row.name
  command = segment_runs.segment_command(
      row.config, *data_flags(row, davis, composites_root),
      *(o.format(weights=weights) for o in row.overrides), workdir=workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  if row.ablate:
    command.insert(-1, f'--config.weights={ablated_weights(row, workdir / "weights")}')
  print('$', shlex.join(command), flush=True)
  started = datetime.datetime.now()
  segment_runs.run(command)
  wall = (datetime.datetime.now() - started).total_seconds()
  metrics = json.loads((workdir / 'metrics.json').read_text())
  videos, frames, seconds = segment_runs.timing(workdir)
  record = {
      'row': dataclasses.asdict(row), 'command': shlex.join(command[1:]),
      'date': started.isoformat(timespec='minutes'), 'machine': machine(),
      'JF': metrics['JF_mean'], 'J': metrics['J_mean'], 'F': metrics['F_mean'],
      'seconds_per_sequence': seconds / videos, 'frames_per_second': frames / seconds,
      'wall_seconds': wall,
      'sequences': {name: s['JF_mean'] for name, s in metrics['sequences'].items()},
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / f'{row.name}.json').write_text(json.dumps(record, indent=2) + '\n')
  return record


def write_tables() -> None:
  """results.md and results.csv from every kept row, in the order ROWS lists them."""
  records = [json.loads((RESULTS / f'{name}.json').read_text()) for name in ROWS
             if (RESULTS / f'{name}.json').is_file()]
  header = ('row', 'system', 'set', 'J&F', 'J', 'F', 's/sequence', 'frames/s')
  lines = [','.join(header)]
  table = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for r in records:
    row = r['row']
    cells = (row['name'], row['system'], SETS[row['evaluation_set']], f'{r["JF"]:.3f}',
             f'{r["J"]:.3f}', f'{r["F"]:.3f}', f'{r["seconds_per_sequence"]:.1f}',
             f'{r["frames_per_second"]:.2f}')
    lines.append(','.join(f'"{c}"' if ',' in c else c for c in cells))
    table.append('| ' + ' | '.join(cells) + ' |')
  commands = [f'- `{r["row"]["name"]}` ({r["date"]}, {r["machine"]}): `python {r["command"]}`'
              for r in records]
  (REPO / 'experiments' / 'results.csv').write_text('\n'.join(lines) + '\n')
  (REPO / 'experiments' / 'results.md').write_text(
      '# Results: every system on every evaluation set\n\n'
      'Regenerated by `python experiments/results.py` (see its docstring); one row per\n'
      '`launch.py` run, its command below. J&F, J and F are fractions (DAVIS protocols:\n'
      'semi-supervised for DAVIS-2016 val and the composites, unsupervised for zero-shot).\n'
      's/sequence is the time a sequence takes to segment (fine-tuning included, start-up and\n'
      'scoring not), frames/s the frames over that time.\n\n' + '\n'.join(table) +
      '\n\n## Commands\n\n' + '\n'.join(commands) + '\n')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--davis', type=pathlib.Path, help='DAVIS-2016 root (480p)')
  parser.add_argument('--composites', type=pathlib.Path, default=REPO / 'runs' / 'composites',
                      help='where the val composites are (generated there if missing)')
  parser.add_argument('--weights', type=pathlib.Path, default=REPO.parent / 'shared' / 'weights',
                      help='folder of the TFLite files (the deeplab row reads one)')
  parser.add_argument('--rows', default='', help='comma-separated row names; default: all')
  parser.add_argument('--table_only', action='store_true')
  args = parser.parse_args()
  if not args.table_only:
    names = [n for n in args.rows.split(',') if n] or list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown or not args.davis:
      parser.error(f'unknown rows {unknown}; rows: {list(ROWS)}' if unknown else '--davis is needed')
    if any(ROWS[n].evaluation_set == 'composites' for n in names):
      composites.ensure_composites(args.davis, args.composites, split='val')
    for name in names:
      run(ROWS[name], args.davis.resolve(), args.composites.resolve(), args.weights.resolve())
  write_tables()


if __name__ == '__main__':
  main()

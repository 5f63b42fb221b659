r"""OSVOS's test-time levers on DAVIS-2016 val, alone and together, each sequence fine-tuned once.

    python experiments/osvos_levers.py --davis ../shared/data/davis2016 --out runs/osvos_levers

The levers here (test-time augmentation, online adaptation, the temporal prior, the dense CRF)
change nothing in fine-tuning on the first frame, so each sequence is fine-tuned once, as
`launch.py` does it, and every row then segments from those parameters through the runner with
its own config: each scoring variant (VARIANTS: TTA, online adaptation) scores the frames with
the segmenter built from its config; the prior and CRF rows replay the scores of their variant
through `jvos.temporal_prior.wrap` and `jvos.postprocess`, exactly the path `launch.py` takes.
A row's seconds per sequence are what `launch.py` would spend: fine-tuning + scoring its
variant + its replay (prior, CRF, resizing and writing masks).
Writes <out>/<row>/metrics.json for every row and experiments/results/osvos_levers.json, each
row with its own command, date, machine and fine-tuning steps (a row that fine-tuned other
than 200 steps is recorded as '<row>, <steps> steps').
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import pathlib
import platform
import sys
import time

import numpy as np

from configs import osvos_davis16
from jvos import evaluation
from jvos import postprocess
from jvos import segment
from jvos import systems
from jvos import temporal_prior
from jvos.data import build_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
VAL = ('camel', 'car-roundabout', 'dog', 'drift-chicane', 'drift-straight', 'goat',
       'horsejump-high', 'motocross-jump', 'paragliding-launch', 'soapbox')
FLIP = {'segment.flip': True}
ONLINE = {'online.every': 5}
ONLINE_LR_1E_4 = {**ONLINE, 'online.learning_rate': 1e-4}
# Half the adaptation's cost, two ways: half as often, or half the steps each time.
ONLINE_EVERY_10 = {'online.every': 10}
ONLINE_STEPS_5 = {**ONLINE, 'online.steps': 5}
PRIOR_FLOW_CRF = {'temporal_prior.method': 'flow', 'postprocess.crf': True}
CRF_TRIALS = {'srgb13': {'postprocess.crf_bilateral_srgb': 13.0},
              'bsxy10': {'postprocess.crf_bilateral_sxy': 10.0},
              'bsxy40': {'postprocess.crf_bilateral_sxy': 40.0},
              'bcompat5': {'postprocess.crf_bilateral_compat': 5.0},
              'iter10': {'postprocess.crf_iterations': 10},
              'gauss3': {'postprocess.crf_gaussian_sxy': 3.0,
                         'postprocess.crf_gaussian_compat': 3.0}}
# Rows recorded under their bare name fine-tuned this many steps (the default until
# 2026-12-06); others carry theirs in the name.
UNSUFFIXED_STEPS = 200
# Scoring variant -> the config overrides it scores with.
VARIANTS = {'none': {}, 'flip': FLIP, 'flip+1.25': {**FLIP, 'segment.scales': (1.0, 1.25)},
            'online': ONLINE, 'flip+online': {**FLIP, **ONLINE},
            'online-lr1e-4': ONLINE_LR_1E_4, 'flip+online-lr1e-4': {**FLIP, **ONLINE_LR_1E_4},
            'flip+online-every10': {**FLIP, **ONLINE_EVERY_10},
            'flip+online-steps5': {**FLIP, **ONLINE_STEPS_5}}
# Row -> (scoring variant, config overrides of what runs after scoring).
ROWS = {
    'no-levers': ('none', {}),
    'flip': ('flip', {}),
    'flip+1.25': ('flip+1.25', {}),
    'prior-mask': ('none', {'temporal_prior.method': 'mask'}),
    'prior-flow': ('none', {'temporal_prior.method': 'flow'}),
    'prior-flow-soft': ('none', {'temporal_prior.method': 'flow', 'temporal_prior.floor': 0.3}),
    'prior-flow-wide': ('none', {'temporal_prior.method': 'flow',
                                 'temporal_prior.relative_radius': 0.5}),
    'prior-flow-tight': ('none', {'temporal_prior.method': 'flow',
                                  'temporal_prior.relative_radius': 0.1}),
    'crf': ('none', {'postprocess.crf': True}),
    'prior-flow+crf': ('none', PRIOR_FLOW_CRF),
    'flip+prior-flow': ('flip', {'temporal_prior.method': 'flow'}),
    'flip+prior-flow+crf': ('flip', PRIOR_FLOW_CRF),
    'online': ('online', {}),
    'online-lr1e-4': ('online-lr1e-4', {}),
    **{f'{flip}{online}+prior-flow+crf': (f'{flip}{online}', PRIOR_FLOW_CRF)
       for flip in ('', 'flip+') for online in ('online', 'online-lr1e-4')},
    **{f'flip+{online}+prior-flow+crf': (f'flip+{online}', PRIOR_FLOW_CRF)
       for online in ('online-every10', 'online-steps5')},
    'flip+online+prior-flow': ('flip+online', {'temporal_prior.method': 'flow'}),
    # The CRF's parameters, tried on OSVOS's own scores (they were chosen on degraded ground
    # truth, experiments/crf_speed.md): each row changes one from the default.
    **{f'flip+online+prior-flow+crf-{name}': ('flip+online', {**PRIOR_FLOW_CRF, **changes})
       for name, changes in CRF_TRIALS.items()},
}


class Replay:
  """A segmenter that answers with scores computed before, frame by frame, in order."""

  def __init__(self, scores: list[np.ndarray]):
    self.scores = scores

  def start(self, video):
    del video
    return iter(self.scores)

  def step(self, state, frame):
    del frame
    return state, next(state)

  def add_objects(self, state, frame, slots, masks):
    del frame, slots, masks
    return state


def row_config(base, variant: str, overrides: dict):
  config = base.copy_and_resolve_references()
  for field, value in {**VARIANTS[variant], **overrides}.items():
    section, name = field.split('.')
    config[section][name] = value
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--davis', required=True, help='DAVIS-2016 root.')
  parser.add_argument('--out', default='runs/osvos_levers')
  parser.add_argument('--sequences', default=','.join(VAL))
  parser.add_argument('--rows', default=','.join(ROWS), help='Comma-separated rows of ROWS.')
  parser.add_argument('--steps', type=int, default=None,
                      help="finetune.steps (default: the config's).")
  parser.add_argument('--record', default=str(REPO / 'experiments' / 'results' /
                                              'osvos_levers.json'))
  parser.add_argument('--note', default='', help='The machine and what else ran on it.')
  args = parser.parse_args()
  rows = {name: ROWS[name] for name in args.rows.split(',')}
  out = pathlib.Path(args.out)
  base = osvos_davis16.get_config()
  # Every row switches on its own levers, from none (the config's defaults switch some on).
  base.segment.update(flip=False, scales=(1.0,))
  base.temporal_prior.method, base.postprocess.crf, base.online.every = 'none', False, 0
  if args.steps is not None:
    base.finetune.steps = args.steps
  base.data.root, base.data.sequences = str(pathlib.Path(args.davis).resolve()), args.sequences
  dataset = build_dataset(base.data, out)
  segmenters = {variant: systems.build_segmenter(row_config(base, variant, {}))
                for variant in {variant for variant, _ in rows.values()}}
  # Fine-tuning is the same in every variant; an adapting one also keeps each object's given
  # frame in the state, which the other adapting variants need.
  tuner = next((s for s in segmenters.values() if s.online.every), None) or next(
      iter(segmenters.values()))
  seconds = {row: {} for row in rows}
  for video in dataset:
    view, _ = segment.video_input(video, base.task, base.segment.max_height)
    start = time.perf_counter()
    state = tuner.start(view)
    state = tuner.add_objects(state, view.frame(0), list(view.given),
                              np.stack([mask for _, mask in view.given.values()]))
    tune_s = time.perf_counter() - start
    for variant, segmenter in segmenters.items():
      start = time.perf_counter()
      scores, variant_state = [], copy.copy(state)  # Online adaptation changes its own copy.
      for t in range(1, len(view)):
        variant_state, frame_scores = segmenter.step(variant_state, view.frame(t))
        scores.append(frame_scores)
      score_s = time.perf_counter() - start
      for row, (row_variant, overrides) in rows.items():
        if row_variant != variant:
          continue
        config = row_config(base, variant, overrides)
        runner = temporal_prior.wrap(config.temporal_prior, Replay(scores))
        start = time.perf_counter()
        segment.segment_video(runner, video, out / row / 'masks' / video.name, config.task,
                              config.segment.max_height,
                              postprocess=postprocess.postprocess(config.postprocess))
        seconds[row][video.name] = tune_s + score_s + time.perf_counter() - start
        print(f'{video.name} {row}: {seconds[row][video.name]:.1f} s', flush=True)
  run = dict(command=' '.join(['python', *sys.argv]), date=datetime.date.today().isoformat(),
             machine=f'{platform.processor() or platform.machine()}, {args.note}')
  steps = base.finetune.steps
  kept = {}
  for row, (variant, overrides) in rows.items():
    metrics = evaluation.evaluate(dataset, out / row / 'masks', out / row, base.task)
    key = row if steps == UNSUFFIXED_STEPS else f'{row}, {steps} steps'
    kept[key] = dict(run=run, finetune_steps=steps, overrides={**VARIANTS[variant], **overrides},
                     seconds=seconds[row],
                     **{k: metrics[k] for k in ('JF_mean', 'J_mean', 'F_mean')},
                     per_sequence={name: s['JF_mean'] for name, s in metrics['sequences'].items()})
    print(f'{row}: J&F {metrics["JF_mean"]:.3f} J {metrics["J_mean"]:.3f} '
          f'F {metrics["F_mean"]:.3f}, {np.mean(list(seconds[row].values())):.0f} s/sequence')
  record = pathlib.Path(args.record)
  previous = json.loads(record.read_text())['rows'] if record.is_file() else {}
  record.write_text(json.dumps(dict(rows={**previous, **kept}), indent=1) + '\n')


if __name__ == '__main__':
  main()

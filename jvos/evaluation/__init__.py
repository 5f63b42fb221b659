"""Scores a results folder, <masks_dir>/<video>/<frame>.png, with the dataset's benchmark.

    metrics = evaluate(dataset, workdir / 'masks', workdir, task='semi-supervised')

DAVIS: the official J&F protocols (davis.py); YouTube-VOS: the server's submission zip, plus
seen/unseen J&F where the split has ground truth to score (youtube_vos.py); a user's own
video has nothing to score against.
"""

from __future__ import annotations

import pathlib

from jvos.data.video import VideoDataset
from jvos.errors import InputError
from jvos.evaluation import davis, results, youtube_vos

TASKS = tuple(davis.SCORERS)
PROTOCOLS = {'davis': davis.evaluate_davis, 'youtube_vos': youtube_vos.evaluate_youtube_vos}


def evaluate(dataset: VideoDataset, masks_dir: pathlib.Path, out_dir: pathlib.Path,
             task: str = 'semi-supervised', workers: int = 2) -> dict | None:
  """Checks the results in masks_dir, scores them and writes the benchmark files to out_dir.

  Args:
    dataset: the videos that were segmented, with their ground truth.
    masks_dir: the results folder `--mode segment` wrote.
    out_dir: where metrics.json (and the DAVIS CSV tables and per_frame.json, or the
      YouTube-VOS zip) go.
    task: 'semi-supervised' or 'unsupervised'.
    workers: processes scoring videos in parallel.

  Returns:
    The contents of metrics.json (J_mean, F_mean, JF_mean... in [0, 1]), or None when there is
    no ground truth to score against.
  """
  if dataset.name == 'video':
    return None
  if dataset.name not in PROTOCOLS:
    raise InputError(f'No benchmark for data.name={dataset.name!r}; use one of '
                     f'{sorted(PROTOCOLS)} or video.')
  if task not in TASKS:
    raise InputError(f'task={task!r}; use one of {TASKS} (--config.task=...).')
  masks_dir, out_dir = pathlib.Path(masks_dir), pathlib.Path(out_dir)
  results.check_complete(dataset, masks_dir)
  return PROTOCOLS[dataset.name](dataset, masks_dir, out_dir, task, workers)

"""The DAVIS benchmark protocols, as davisvideochallenge/davis2017-evaluation runs them.

Semi-supervised: the objects of a video are those of its first-frame annotation; each is
scored on every frame but the first (given) and the last; an object the method never drew
is scored as an empty mask. Unsupervised: the ids in the results are proposals, matched one to
one to the ground-truth objects (Hungarian assignment on the mean of J and F over the video),
scored on every frame with void pixels left out. Both report per object Mean/Recall/Decay of J
and F; the global numbers are means over all objects of all videos, not over videos.

Writes to out_dir: global_results-<task>.csv and per-sequence_results-<task>.csv (the official
tables), metrics.json, and per_frame.json: each object's J and F on every frame it was scored
on, which the summaries average away and a report needs to show where a method fails.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np
from scipy import optimize

from jvos.data.video import VOID, Video, VideoDataset
from jvos.errors import InputError
from jvos.evaluation import results
from jvos.evaluation.metrics import boundary_f_measure, db_statistics, region_similarity

# The official cap on proposals per video in the unsupervised task.
MAX_PROPOSALS = 20
# Per-object statistics, each the mean over objects in the sequence and global summaries.
STATISTICS = ('J_mean', 'J_recall', 'J_decay', 'F_mean', 'F_recall', 'F_decay')
# Beside metrics.json: per-object per-frame J and F (see `per_frame`).
PER_FRAME_FILE = 'per_frame.json'
GLOBAL_COLUMNS = ('J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay')


@dataclasses.dataclass(frozen=True)
class VideoScores:
  """Per-frame J and F, (objects, frames), of the ground-truth objects of one video.

  frame_names names the columns; predicted_ids[k] is the result id scored as object_ids[k]
  (the object itself semi-supervised, the matched proposal unsupervised).
  """
  name: str
  object_ids: tuple[int, ...]
  frame_names: tuple[str, ...]
  predicted_ids: tuple[int, ...]
  j: np.ndarray
  f: np.ndarray


def score_objects(video: Video, frame_names: tuple[str, ...],
                  predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """J and F, each (objects, frames), of every object of `video` on the given frames.

  predictions: (frames, H, W) label maps. As in the official semi-supervised evaluation,
  void pixels are not left out.
  """
  ids = np.asarray(video.object_ids)[:, None, None]
  j = np.empty((len(ids), len(frame_names)))
  f = np.empty_like(j)
  for t, (name, labels) in enumerate(zip(frame_names, predictions)):
    gt, pred = video.annotation(name) == ids, labels == ids
    j[:, t] = region_similarity(gt, pred)
    f[:, t] = boundary_f_measure(gt, pred)
  return j, f


def score_semisupervised(video: Video, masks_dir: pathlib.Path) -> VideoScores:
  """Scores the objects of the first frame on all frames but the first and the last."""
  frames = video.frame_names[1:-1]
  if not frames:
    raise InputError(
        f'Video {video.name} has {len(video)} frames; the semi-supervised protocol skips the '
        'first and the last, so it needs at least 3. Drop it from data.sequences.')
  results.check_annotated(video, frames)
  why_not = (f'the first-frame annotation of {video.name} has only objects '
             f'{list(video.object_ids)}')
  predictions = results.read_results(video, masks_dir, frames, video.object_ids, why_not)
  j, f = score_objects(video, frames, predictions)
  return VideoScores(video.name, video.object_ids, frames, video.object_ids, j, f)


def score_unsupervised(video: Video, masks_dir: pathlib.Path) -> VideoScores:
  """Matches proposals to objects and scores the matched pairs on all frames."""
  frames = video.frame_names
  results.check_annotated(video, frames)
  why_not = (f'the unsupervised protocol allows at most {MAX_PROPOSALS} proposals, with ids '
             f'1..{MAX_PROPOSALS}')
  predictions = results.read_results(video, masks_dir, frames, range(1, MAX_PROPOSALS + 1),
                                     why_not)
  objects = np.asarray(video.object_ids)[:, None, None]
  # As officially: proposals are ids 1..max id, padded with empty ones up to one per object.
  num_proposals = max(int(predictions.max()), len(objects))
  proposals = np.arange(1, num_proposals + 1)[:, None, None]
  j = np.empty((num_proposals, len(objects), len(frames)))
  f = np.empty_like(j)
  for t, (name, labels) in enumerate(zip(frames, predictions)):
    gt_labels = video.annotation(name)
    gt, pred, void = (gt_labels == objects)[None], (labels == proposals)[:, None], gt_labels == VOID
    j[:, :, t] = region_similarity(gt, pred, void)
    f[:, :, t] = boundary_f_measure(gt, pred, void)
  proposal, obj = optimize.linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
  # The official code lists the pairs in proposal order but names them <seq>_1, <seq>_2...;
  # listing them by object makes <seq>_k object k. Values and means are the same.
  order = np.argsort(obj)
  proposal, obj = proposal[order], obj[order]
  return VideoScores(video.name, video.object_ids, frames, tuple(int(p) + 1 for p in proposal),
                     j[proposal, obj], f[proposal, obj])


SCORERS = {'semi-supervised': score_semisupervised, 'unsupervised': score_unsupervised}


def _with_jf(stats: dict[str, float]) -> dict[str, float]:
  return {**stats, 'JF_mean': (stats['J_mean'] + stats['F_mean']) / 2}


def object_statistics(j: np.ndarray, f: np.ndarray) -> dict[str, float]:
  """Mean, Recall and Decay of one object's per-frame J and F."""
  return _with_jf(dict(zip(STATISTICS, db_statistics(j) + db_statistics(f))))


def mean_statistics(per_object: list[dict[str, float]]) -> dict[str, float]:
  """Each statistic averaged over objects; J&F from the averaged J and F, as officially."""
  return _with_jf({key: float(np.mean([s[key] for s in per_object])) for key in STATISTICS})


def summarize(scores: list[VideoScores], task: str) -> dict:
  """metrics.json: global statistics over all objects, then per sequence and per object."""
  objects, sequences = {}, {}
  for video in scores:
    per_object = [object_statistics(j, f) for j, f in zip(video.j, video.f)]
    objects.update({f'{video.name}_{k}': s for k, s in zip(video.object_ids, per_object)})
    sequences[video.name] = mean_statistics(per_object)
  return {'task': task, **mean_statistics(list(objects.values())), 'sequences': sequences,
          'objects': objects}


def per_frame(scores: list[VideoScores], task: str) -> dict:
  """per_frame.json: '<seq>_<k>' (as in metrics.json) -> the object's J and F frame by frame."""
  objects = {}
  for video in scores:
    for k, (obj, predicted) in enumerate(zip(video.object_ids, video.predicted_ids)):
      objects[f'{video.name}_{obj}'] = {
          'sequence': video.name, 'object': obj, 'predicted_id': predicted,
          'frames': list(video.frame_names), 'J': video.j[k].tolist(), 'F': video.f[k].tolist()}
  return {'task': task, 'objects': objects}


def write_tables(metrics: dict, out_dir: pathlib.Path) -> None:
  """The official CSV tables and metrics.json."""
  task = metrics['task']
  keys = ('JF_mean', 'J_mean', 'J_recall', 'J_decay', 'F_mean', 'F_recall', 'F_decay')
  results.write_csv(out_dir / f'global_results-{task}.csv', GLOBAL_COLUMNS,
                    [[metrics[k] for k in keys]])
  results.write_csv(out_dir / f'per-sequence_results-{task}.csv', ('Sequence', 'J-Mean', 'F-Mean'),
                    [[name, s['J_mean'], s['F_mean']] for name, s in metrics['objects'].items()])
  results.write_json(out_dir / 'metrics.json', metrics)


def evaluate_davis(dataset: VideoDataset, masks_dir: pathlib.Path, out_dir: pathlib.Path,
                   task: str, workers: int) -> dict:
  """Scores a complete results folder with the DAVIS `task` protocol; writes the tables."""
  score = functools.partial(SCORERS[task], masks_dir=masks_dir)
  scores = results.map_videos(score, dataset.videos, workers)
  metrics = summarize(scores, task)
  write_tables(metrics, out_dir)
  results.write_json(out_dir / PER_FRAME_FILE, per_frame(scores, task))
  return metrics

"""YouTube-VOS: the submission zip for the benchmark server, and J/F where ground truth allows.

The valid and test splits annotate each object only on the frame where it first appears (and
that mask shows only the new objects), so they are scored by the server: we pack
Annotations/<video>/<frame>.png for it. A split with later annotations (train, e.g. held out
for validation, annotated every 5th frame) is scored here as the server does: each object on
the annotated frames after its first one, J and F averaged per object, then over the objects of
seen categories (in the train split) and unseen ones; `overall` is the mean of the four.
"""

from __future__ import annotations

import functools
import pathlib
import zipfile

import numpy as np
from PIL import Image

from jvos.data.video import Video, VideoDataset, image_size
from jvos.errors import InputError
from jvos.evaluation import results
from jvos.evaluation.davis import score_objects

SUMMARY = ('J_seen', 'J_unseen', 'F_seen', 'F_unseen')


def _check_submission_mask(path: pathlib.Path, frame_size: tuple[int, int]) -> None:
  """The server reads palette PNGs of object ids at the frame size; checks the header only."""
  try:
    with Image.open(path) as image:
      mode, (width, height) = image.mode, image.size
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'Mask {path} is not a readable PNG ({e}); re-create or delete it.') from None
  if mode != 'P':
    raise InputError(f'Mask {path} is a {mode} image; YouTube-VOS takes palette (P) PNGs of '
                     'object ids, as jvos.data.video.write_label_map writes them.')
  if (height, width) != frame_size:
    raise InputError(f'Mask {path} is {width}x{height} (WxH) but its frames are '
                     f'{frame_size[1]}x{frame_size[0]}; write results at the frame size.')


def pack_submission(dataset: VideoDataset, masks_dir: pathlib.Path,
                    zip_path: pathlib.Path) -> None:
  """Zips Annotations/<video>/<frame>.png, one per frame of every video, for the server."""
  results.check_complete(dataset, masks_dir)
  zip_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = zip_path.with_name(zip_path.name + '.tmp')
  try:
    # PNGs are compressed already: storing them is as small and much faster.
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as archive:
      for video in dataset:
        frame_size = image_size(video.frame_paths[0])
        for name in video.frame_names:
          path = results.result_path(masks_dir, video, name)
          _check_submission_mask(path, frame_size)
          archive.write(path, f'Annotations/{video.name}/{name}.png')
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  tmp.replace(zip_path)


def scored_frames(video: Video) -> dict[int, tuple[str, ...]]:
  """Object id -> the annotated frames after its first one, which it is scored on.

  Empty when the only annotations are the objects' first masks (valid/test splits): a later
  object's first mask is no ground truth for the objects before it.
  """
  annotated = [name for name in video.frame_names if name in video.annotation_paths]
  if set(annotated) <= set(video.first_frames.values()):
    return {}
  position = {name: i for i, name in enumerate(video.frame_names)}
  return {obj: tuple(name for name in annotated if position[name] > position[first])
          for obj, first in video.first_frames.items()}


def score_video(video: Video, masks_dir: pathlib.Path) -> dict[int, tuple[float, float]]:
  """Object id -> (J mean, F mean) over its scored frames; objects with none are left out."""
  frames_of = {obj: frames for obj, frames in scored_frames(video).items() if frames}
  if not frames_of:
    return {}
  frames = tuple(name for name in video.frame_names
                 if any(name in object_frames for object_frames in frames_of.values()))
  why_not = f'{video.name} has only objects {list(video.object_ids)}'
  predictions = results.read_results(video, masks_dir, frames, video.object_ids, why_not)
  j, f = score_objects(video, frames, predictions)
  column = {name: t for t, name in enumerate(frames)}
  row = {obj: i for i, obj in enumerate(video.object_ids)}
  scores = {}
  for obj, object_frames in frames_of.items():
    columns = [column[name] for name in object_frames]
    scores[obj] = (float(j[row[obj], columns].mean()), float(f[row[obj], columns].mean()))
  return scores


def _mean(values: list[float]) -> float | None:
  return float(np.mean(values)) if values else None


def summarize(dataset: VideoDataset, per_video: list[dict[int, tuple[float, float]]]) -> dict:
  """metrics.json: J/F over all objects, the seen/unseen summary, per sequence and object.

  A group with no object (e.g. no unseen category among the videos) is null, and `overall`
  is then the mean of the groups present.
  """
  objects, sequences = {}, {}
  for video, scores in zip(dataset, per_video):
    for obj, (j, f) in scores.items():
      category = video.categories.get(obj)
      objects[f'{video.name}_{obj}'] = {
          'J_mean': j, 'F_mean': f, 'JF_mean': (j + f) / 2, 'category': category,
          'seen': category in dataset.seen_categories}
    if scores:
      j_mean = _mean([j for j, _ in scores.values()])
      f_mean = _mean([f for _, f in scores.values()])
      sequences[video.name] = {'J_mean': j_mean, 'F_mean': f_mean, 'JF_mean': (j_mean + f_mean) / 2}
  groups = {'seen': [o for o in objects.values() if o['seen']],
            'unseen': [o for o in objects.values() if not o['seen']]}
  summary = {f'{m}_{group}': _mean([o[f'{m}_mean'] for o in members])
             for m in ('J', 'F') for group, members in groups.items()}
  present = [v for v in summary.values() if v is not None]
  j_mean = _mean([o['J_mean'] for o in objects.values()])
  f_mean = _mean([o['F_mean'] for o in objects.values()])
  return {'task': 'semi-supervised', 'J_mean': j_mean, 'F_mean': f_mean,
          'JF_mean': (j_mean + f_mean) / 2, **summary, 'overall': _mean(present),
          'sequences': sequences, 'objects': objects}


def evaluate_youtube_vos(dataset: VideoDataset, masks_dir: pathlib.Path, out_dir: pathlib.Path,
                         task: str, workers: int) -> dict | None:
  """Writes submission.zip; scores and writes metrics.json if there is ground truth to score."""
  if task != 'semi-supervised':
    raise InputError(f'task={task!r}: YouTube-VOS has only the semi-supervised benchmark; '
                     'pass --config.task=semi-supervised.')
  pack_submission(dataset, masks_dir, out_dir / 'submission.zip')
  if not any(any(scored_frames(video).values()) for video in dataset):
    return None
  score = functools.partial(score_video, masks_dir=masks_dir)
  metrics = summarize(dataset, results.map_videos(score, dataset.videos, workers))
  results.write_json(out_dir / 'metrics.json', metrics)
  return metrics

"""Runs a method over a dataset and writes one mask per frame: the path every method shares.

A method (a "segmenter") is any callable `segmenter(video)` that yields, for each frame in
order, float scores (num_objects, H, W) in [0, 1]: one map per object of `video.object_ids`
(one-shot), or per proposal (zero-shot). This module merges them into one label map per frame
and writes it in the benchmark's format, so no method deals with objects appearing late, with
the given masks, or with file formats.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterator

import numpy as np
import tqdm
from PIL import Image
from absl import logging

from jvos.data.video import Video, VideoDataset, palette, write_label_map

Segmenter = Callable[[Video], Iterator[np.ndarray]]


def merge_scores(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Per-object scores (N, H, W) -> label map (H, W): argmax over [background, objects].

  Background scores `threshold` everywhere, so a pixel goes to the most confident object only
  where that object's score beats the threshold (the seeds' per-object argmax merging).
  """
  background = np.full((1, *scores.shape[1:]), threshold, scores.dtype)
  return np.argmax(np.concatenate([background, scores]), axis=0).astype(np.uint8)


def one_shot_labels(scores: np.ndarray, video: Video, frame_index: int,
                    given: dict[int, tuple[int, np.ndarray]]) -> np.ndarray:
  """Label map of a frame in the one-shot task.

  An object scores nothing before the frame that introduces it, and on that frame its given
  mask is the answer (as the benchmarks expect), whatever the method said.
  """
  object_ids = np.asarray(video.object_ids, np.uint8)
  starts = np.asarray([given[obj][0] for obj in video.object_ids])
  scores = np.where((starts <= frame_index)[:, None, None], scores, 0.0)
  labels = np.concatenate([[0], object_ids])[merge_scores(scores)]
  for obj, (start, mask) in given.items():
    if start == frame_index:
      labels[mask] = obj
  return labels


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """The frame with each object tinted in its palette colour, for looking at results."""
  colours = palette()[labels].astype(np.float32)
  blended = np.where(labels[..., None] > 0, (1 - alpha) * frame + alpha * colours, frame)
  return blended.astype(np.uint8)


def segment_video(segmenter: Segmenter, video: Video, out_dir: pathlib.Path, task: str,
                  overlay_dir: pathlib.Path | None = None) -> None:
  """Writes out_dir/<frame>.png for every frame of the video (and overlays, if asked)."""
  given = video.given_masks() if task == 'semi-supervised' else {}
  frame_names = video.frame_names
  count = 0
  for index, scores in enumerate(segmenter(video)):
    if task == 'semi-supervised':
      labels = one_shot_labels(scores, video, index, given)
    else:
      labels = merge_scores(scores)
    write_label_map(out_dir / f'{frame_names[index]}.png', labels, video.binary)
    if overlay_dir is not None:
      overlay_dir.mkdir(parents=True, exist_ok=True)
      Image.fromarray(overlay(video.frame(index), labels)).save(
          overlay_dir / f'{frame_names[index]}.jpg', quality=90)
    count += 1
  if count != len(video):
    raise RuntimeError(f'The method gave {count} frames for {video.name}, which has {len(video)}.')


def segment_dataset(segmenter: Segmenter, dataset: VideoDataset, masks_dir: pathlib.Path,
                    task: str = 'semi-supervised',
                    overlays_dir: pathlib.Path | None = None) -> None:
  """Segments every video into masks_dir/<video>/ (and overlays_dir/<video>/, if given).

  Each mask is written as soon as it is computed (atomically), so a failure in one video keeps
  every mask already written.
  """
  if task not in ('semi-supervised', 'unsupervised'):
    raise ValueError(f'task={task!r}; use semi-supervised or unsupervised.')
  for video in tqdm.tqdm(dataset, desc='segment', unit='video'):
    logging.info('Segmenting %s (%d frames)', video.name, len(video))
    segment_video(segmenter, video, masks_dir / video.name, task,
                  overlays_dir / video.name if overlays_dir else None)

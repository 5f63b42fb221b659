"""The runner: segments a dataset frame by frame and writes one mask per frame.

Every system segments through `segment_video`, which owns the loop over frames, so no system
deals with file formats, resizing, objects that appear late, or the task's rules. A system
provides a `Segmenter` of three methods:

    state = segmenter.start(video)                    # once per video
    state, scores = segmenter.step(state, frame)      # every frame, in order
    state = segmenter.add_objects(state, frame, slots, masks)   # one-shot: new objects

`scores` is (num_slots, h, w) float in [0, 1] at the frame's working size: one map per object
of `video.object_ids` (one-shot; slot k is object_ids[k]) or per proposal (zero-shot). State
is whatever the system carries between frames (per-object ConvLSTM states, previous masks,
fine-tuned parameters...), kept as device arrays, so memory does not grow with the video.

On the frame that introduces an object (frame 0 in DAVIS; any frame in YouTube-VOS), the runner
first asks `step` for the objects already known, then writes the given mask for the new one and
hands it to `add_objects`: from the next frame on, the system follows it. The runner hands a
segmenter a `VideoInput`, never the dataset's `Video`: in the unsupervised (zero-shot) task it
carries no mask at all, so no system can see the annotations the evaluator keeps for scoring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import cv2
import numpy as np
import tqdm
from PIL import Image
from absl import logging

from jvos.data.video import (Video, VideoDataset, image_size, palette, read_frame,
                             write_label_map)
from jvos.errors import InputError
from jvos.evaluation.results import write_text
from jvos.video_writer import H264Writer

TASKS = ('semi-supervised', 'unsupervised')
State = Any


@dataclasses.dataclass(frozen=True)
class VideoInput:
  """What a segmenter is given of a video: frames at the working size, and the given masks.

  Attributes:
    name: the video's name.
    frame_paths: every frame, in order; `frame(i)` reads one at the working size.
    working_size: (height, width) frames are read at (the system's `segment.max_height`).
    given: slot -> (frame index, boolean mask at the working size) of each object a one-shot
      method follows, in `object_ids` order; empty in the zero-shot task.
  """
  name: str
  frame_paths: tuple[pathlib.Path, ...]
  working_size: tuple[int, int]
  given: Mapping[int, tuple[int, np.ndarray]]

  def __len__(self) -> int:
    return len(self.frame_paths)

  @property
  def num_objects(self) -> int:
    return len(self.given)

  def frame(self, index: int) -> np.ndarray:
    return resize(read_frame(self.frame_paths[index]), self.working_size, cv2.INTER_AREA)


class Segmenter(Protocol):
  """What a system provides to segment videos (see the module docstring)."""

  def start(self, video: VideoInput) -> State:
    ...

  def step(self, state: State, frame: np.ndarray) -> tuple[State, np.ndarray]:
    ...

  def add_objects(self, state: State, frame: np.ndarray, slots: Sequence[int],
                  masks: np.ndarray) -> State:
    ...


def resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
  """cv2.resize to (height, width), a no-op at that size already."""
  if image.shape[:2] == tuple(size):
    return image
  return cv2.resize(image, (size[1], size[0]), interpolation=interpolation)


def working_size(frame_size: tuple[int, int], max_height: int) -> tuple[int, int]:
  """The size a system segments at: the frame's, shrunk to `max_height` rows if taller.

  Full-resolution DAVIS (1080p and up) thus costs what 480p costs; masks are still written at
  the frame size. 0 means never shrink.
  """
  height, width = frame_size
  if max_height <= 0 or height <= max_height:
    return height, width
  return max_height, max(1, round(width * max_height / height))


def merge_scores(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Per-object scores (N, H, W) -> label map (H, W): argmax over [background, objects].

  Background scores `threshold` everywhere, so a pixel goes to the most confident object only
  where that object's score beats the threshold (the seeds' per-object argmax merging).
  """
  background = np.full((1, *scores.shape[1:]), threshold, scores.dtype)
  return np.argmax(np.concatenate([background, scores]), axis=0).astype(np.uint8)


def one_shot_labels(scores: np.ndarray, object_ids: Sequence[int], frame_index: int,
                    given: Mapping[int, tuple[int, np.ndarray]]) -> np.ndarray:
  """Label map of a frame in the one-shot task, scores (N, H, W) for slots 0..N-1.

  An object scores nothing before the frame that introduces it, and on that frame its given
  mask is the answer (as the benchmarks expect), whatever the method said: its scores count
  only from the next frame on (a system that scores objects it has not been handed yet, such
  as OSVOS's parent for a late object, would otherwise spill past the mask).
  """
  starts = np.asarray([given[slot][0] for slot in range(len(object_ids))])
  scores = np.where((starts < frame_index)[:, None, None], scores, 0.0)
  labels = np.concatenate([[0], np.asarray(object_ids, np.uint8)])[merge_scores(scores)]
  for slot, (start, mask) in given.items():
    if start == frame_index:
      labels[mask] = object_ids[slot]
  return labels


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """The frame with each object tinted in its palette colour, for looking at results."""
  colours = palette()[labels].astype(np.float32)
  blended = np.where(labels[..., None] > 0, (1 - alpha) * frame + alpha * colours, frame)
  return blended.astype(np.uint8)


def video_input(video: Video, task: str, max_height: int) -> tuple[VideoInput, dict]:
  """The segmenter's view of `video`, and the given masks at the frame size (for the runner).

  In the unsupervised task the view holds no annotation, and the runner keeps none either.
  """
  size = working_size(image_size(video.frame_paths[0]), max_height)
  given = {}
  if task == 'semi-supervised':
    masks = video.given_masks()
    given = {slot: masks[obj] for slot, obj in enumerate(video.object_ids)}
  small = {slot: (start, resize(mask.astype(np.uint8), size, cv2.INTER_NEAREST) > 0)
           for slot, (start, mask) in given.items()}
  return VideoInput(video.name, tuple(video.frame_paths), size, small), given


def label_maps(segmenter: Segmenter, video: Video, task: str, max_height: int = 0,
               postprocess: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
               ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """(frame name, frame, label map) for every frame, in order: the loop every system runs in.

  Args:
    segmenter: the system's segmenter.
    video: the dataset's video; its annotations are used only as the task allows.
    task: 'semi-supervised' (one-shot: the first masks are given) or 'unsupervised'.
    max_height: working height (see `working_size`).
    postprocess: (frame, scores) -> scores at the frame size (e.g. a dense CRF), or None.
  """
  if task not in TASKS:
    raise InputError(f'task={task!r}; use one of {TASKS} (--config.task=...).')
  view, given = video_input(video, task, max_height)
  object_ids = video.object_ids if task == 'semi-supervised' else ()
  starts = {slot: start for slot, (start, _) in view.given.items()}
  state = segmenter.start(view)
  for index, (name, path) in enumerate(zip(video.frame_names, video.frame_paths)):
    frame = read_frame(path)
    small = resize(frame, view.working_size, cv2.INTER_AREA)
    if object_ids and min(starts.values()) >= index:
      # Nothing to follow yet: a one-shot system is handed its first object after this frame.
      scores = np.zeros((len(object_ids), *frame.shape[:2]), np.float32)
    else:
      state, small_scores = segmenter.step(state, small)
      scores = np.stack([resize(s, frame.shape[:2], cv2.INTER_LINEAR)
                         for s in np.asarray(small_scores, np.float32)])
      if object_ids:  # Objects not introduced yet score nothing, before any refinement too.
        started = np.asarray([starts[slot] < index for slot in range(len(object_ids))])
        scores = np.where(started[:, None, None], scores, 0.0)
      if postprocess is not None:
        scores = postprocess(frame, scores)
    if task == 'semi-supervised':
      labels = one_shot_labels(scores, object_ids, index, given)
    else:
      labels = merge_scores(scores)
    yield name, frame, labels
    new = [slot for slot, start in starts.items() if start == index]
    if new:
      state = segmenter.add_objects(state, small, new,
                                    np.stack([view.given[slot][1] for slot in new]))


def segment_video(segmenter: Segmenter, video: Video, out_dir: pathlib.Path, task: str,
                  max_height: int = 0, overlay_dir: pathlib.Path | None = None,
                  postprocess: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                  progress: tqdm.tqdm | None = None) -> None:
  """Writes out_dir/<frame>.png for every frame of the video, each as soon as it is computed.

  With `overlay_dir`, also the frames tinted by their masks, overlay_dir/<frame>.jpg, and
  the same as a video a browser plays, <overlay_dir>.mp4. See `label_maps` for the rest.
  """
  with contextlib.ExitStack() as stack:
    video_writer = None
    if overlay_dir is not None:
      overlay_dir.mkdir(parents=True, exist_ok=True)
      video_writer = stack.enter_context(
          H264Writer(overlay_dir.with_name(overlay_dir.name + '.mp4'), video.fps))
    for name, frame, labels in label_maps(segmenter, video, task, max_height, postprocess):
      write_label_map(out_dir / f'{name}.png', labels, video.binary)
      if video_writer is not None:
        tinted = overlay(frame, labels)
        Image.fromarray(tinted).save(overlay_dir / f'{name}.jpg', quality=90)
        video_writer.add(tinted)
      if progress is not None:
        progress.update()


def _record_path(masks_dir: pathlib.Path) -> pathlib.Path:
  """Beside the masks, not among them: a results folder holds only what the benchmark reads."""
  return masks_dir.with_name(masks_dir.name + '_config.json')


def _completed_path(masks_dir: pathlib.Path) -> pathlib.Path:
  return masks_dir.with_name(masks_dir.name + '_completed.txt')


def _differences(old: Any, new: Any, prefix: str = '') -> list[str]:
  """Paths whose values differ between two nested dicts, as 'a.b: old -> new'."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [d for key in sorted(old.keys() | new.keys())
            for d in _differences(old.get(key), new.get(key), f'{prefix}{key}.')]
  return [] if old == new else [f'{prefix[:-1]}: {old!r} -> {new!r}']


def completed_videos(masks_dir: pathlib.Path, record: dict) -> set[str]:
  """The videos a previous run of the same segmenting config finished in `masks_dir`.

  `record` is what decides the masks (the config less what only scoring or display reads).
  Masks written under another record are never mixed with new ones: that fails, listing the
  differences, and keeps them.
  """
  # The record as it is stored: JSON keeps a config's tuples, e.g. segment.scales, as lists.
  record = json.loads(json.dumps(record))
  record_path = _record_path(masks_dir)
  if record_path.is_file():
    differences = _differences(json.loads(record_path.read_text()), record)
    if differences:
      listed = '; '.join(differences[:5]) + (' ...' if len(differences) > 5 else '')
      raise InputError(
          f'{masks_dir} holds masks of another config ({listed}). Use a new --workdir, or '
          f'delete {masks_dir} to segment again with this one.')
  else:
    masks_dir.mkdir(parents=True, exist_ok=True)
    write_text(record_path, json.dumps(record, indent=2, sort_keys=True) + '\n')
  completed = _completed_path(masks_dir)
  return set(completed.read_text().split()) if completed.is_file() else set()


def segment_dataset(segmenter: Segmenter, dataset: VideoDataset, masks_dir: pathlib.Path,
                    task: str = 'semi-supervised', max_height: int = 0,
                    overlays_dir: pathlib.Path | None = None, postprocess=None,
                    skip: set[str] = frozenset()) -> dict[str, dict[str, float]]:
  """Segments every video into masks_dir/<video>/ (and overlays_dir/<video>/, if given).

  Each mask is written as soon as it is computed (atomically), and a video is listed in
  <masks_dir>_completed.txt once all its masks are, so a failure or a kill keeps every mask
  already written and a rerun redoes only the unfinished video (`skip`: the finished ones).

  Returns:
    video name -> {'frames', 'seconds'}: the time each video segmented in took.
  """
  videos = [video for video in dataset if video.name not in skip]
  if len(videos) < len(dataset):
    logging.info('Skipping %d videos finished by an earlier run: %s',
                 len(dataset) - len(videos), sorted(skip & {v.name for v in dataset}))
  timing = {}
  with tqdm.tqdm(total=sum(len(video) for video in videos), desc='segment',
                 unit='frame') as progress:
    for video in videos:
      logging.info('Segmenting %s (%d frames)', video.name, len(video))
      progress.set_postfix_str(video.name)
      start = time.perf_counter()
      segment_video(segmenter, video, masks_dir / video.name, task, max_height,
                    overlays_dir / video.name if overlays_dir else None, postprocess, progress)
      timing[video.name] = {'frames': len(video), 'seconds': time.perf_counter() - start}
      with _completed_path(masks_dir).open('a') as f:
        f.write(video.name + '\n')
  return timing

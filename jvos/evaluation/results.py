"""Reading and checking a results folder, scoring videos in parallel, writing outputs.

What the benchmark protocols (davis.py, youtube_vos.py) share.

Results layout: <masks_dir>/<video>/<frame>.png for every frame of every video; 0/255 grey for
binary (DAVIS-2016) datasets, palette PNGs of object ids otherwise.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import pathlib
from typing import Callable, Collection, Sequence, TypeVar

import numpy as np

from jvos.data.video import Video, VideoDataset, image_size, read_label_map
from jvos.errors import InputError

_Result = TypeVar('_Result')
# Missing frames listed in an error message; the rest are counted.
_LISTED_MISSING = 5


def result_path(masks_dir: pathlib.Path, video: Video, frame_name: str) -> pathlib.Path:
  return masks_dir / video.name / f'{frame_name}.png'


def check_complete(dataset: VideoDataset, masks_dir: pathlib.Path) -> None:
  """Fails, naming the video and frames, unless every frame of every video has a result."""
  if not masks_dir.is_dir():
    raise InputError(
        f'No results folder {masks_dir}: run `python launch.py --mode segment` with the same '
        'config and --workdir first (it writes <workdir>/masks/<video>/<frame>.png).')
  for video in dataset:
    folder = masks_dir / video.name
    present = {p.stem for p in folder.glob('*.png')} if folder.is_dir() else set()
    missing = [name for name in video.frame_names if name not in present]
    if missing:
      listed = ', '.join(f'{name}.png' for name in missing[:_LISTED_MISSING])
      raise InputError(
          f'Results for video {video.name} are incomplete: {len(missing)} of {len(video)} '
          f'frames have no mask in {folder} (first missing: {listed}). Re-run '
          '`--mode segment`, or drop the video from data.sequences.')


def read_results(video: Video, masks_dir: pathlib.Path, frame_names: Sequence[str],
                 allowed_ids: Collection[int], why_not: str) -> np.ndarray:
  """The result masks of some frames of a video as (T, H, W) uint8 label maps.

  All are read and checked before any scoring starts, so that a corrupt file, a size that is
  not the ground truth's, or an object id outside `allowed_ids` (`why_not` says why) fails
  with the file named instead of a wrong score.
  """
  masks = None  # Filled in place: a list then np.stack would hold every mask twice.
  for t, name in enumerate(frame_names):
    path = result_path(masks_dir, video, name)
    labels = read_label_map(path, video.binary)
    gt_path = video.annotation_paths[name]
    gt_shape = image_size(gt_path)
    if labels.shape != gt_shape:
      raise InputError(
          f'Mask {path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but its ground truth '
          f'{gt_path} is {gt_shape[1]}x{gt_shape[0]}; write results at the annotation size.')
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=1)).tolist()
    extra = sorted(set(present) - {0, *allowed_ids})
    if extra:
      raise InputError(f'Mask {path} holds object id {extra[0]}, but {why_not}. Fix the '
                       'method output, or re-run `--mode segment`.')
    if masks is None:
      masks = np.empty((len(frame_names), *labels.shape), np.uint8)
    masks[t] = labels
  return masks


def check_annotated(video: Video, frame_names: Sequence[str]) -> None:
  """Fails, naming the expected file, if a frame to score has no ground truth."""
  folder = next(iter(video.annotation_paths.values())).parent
  for name in frame_names:
    if name not in video.annotation_paths:
      raise InputError(
          f'Video {video.name} has no ground truth for frame {name}: expected '
          f'{folder / (name + ".png")}, so it cannot be scored. '
          'Splits without public annotations (DAVIS test-dev) are scored by the benchmark '
          'server; drop such videos from data.sequences to score the rest.')


def map_videos(score: Callable[[Video], _Result], videos: Sequence[Video],
               workers: int) -> list[_Result]:
  """score(video) for each video, in order, over `workers` processes.

  Processes are spawned, not forked: the caller may hold JAX or OpenCV threads, which a fork
  can deadlock. As with any spawned pool, a script calling this needs the
  `if __name__ == '__main__':` guard. An InputError in a worker is raised here and cancels the
  videos not started.
  """
  if workers <= 1 or len(videos) <= 1:
    return [score(video) for video in videos]
  context = multiprocessing.get_context('spawn')
  num_workers = min(workers, len(videos))
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    try:
      return list(pool.map(score, videos))
    except BaseException:
      pool.shutdown(cancel_futures=True)
      raise


def write_text(path: pathlib.Path, text: str) -> None:
  """Writes via a temporary file and a rename, so readers never see a half-written file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)


def write_json(path: pathlib.Path, data: dict) -> None:
  write_text(path, json.dumps(data, indent=2) + '\n')


def write_csv(path: pathlib.Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
  """A CSV table with numbers as '%.3f', as the official evaluation writes it with pandas."""
  lines = [','.join(header)]
  for row in rows:
    lines.append(','.join(f'{v:.3f}' if isinstance(v, float) else str(v) for v in row))
  write_text(path, '\n'.join(lines) + '\n')

"""What every dataset produces: `Video`s on disk, and the image/mask IO they share.

A `Video` is a sorted list of frame files plus the annotation PNGs that exist for some of them
(all frames in DAVIS, every 5th in YouTube-VOS train, only the frame where each object first
appears in YouTube-VOS valid). Label maps are uint8 arrays: 0 background, k object k, 255 void.
DAVIS-2016 masks (0/255, one object) are read as object 1, never as "object 255".
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from jvos.errors import InputError

VOID = 255
FRAME_SUFFIXES = ('.jpg', '.jpeg', '.png')


@functools.cache
def palette() -> np.ndarray:
  """The DAVIS/YouTube-VOS/PASCAL palette: (256, 3) uint8, object k drawn in colour k."""
  colours = np.zeros((256, 3), np.uint8)
  for k in range(256):
    c, r, g, b = k, 0, 0, 0
    for bit in range(8):
      r |= ((c >> 0) & 1) << (7 - bit)
      g |= ((c >> 1) & 1) << (7 - bit)
      b |= ((c >> 2) & 1) << (7 - bit)
      c >>= 3
    colours[k] = r, g, b
  return colours


def read_frame(path: pathlib.Path) -> np.ndarray:
  """An RGB frame as (H, W, 3) uint8."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except FileNotFoundError:
    raise InputError(f'Frame {path} does not exist.') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'Frame {path} is not a readable image ({e}); re-extract or delete it.') from None


def read_label_map(path: pathlib.Path, binary: bool) -> np.ndarray:
  """An annotation or result PNG as a (H, W) uint8 label map (0 bg, k object k, 255 void).

  binary: DAVIS-2016 style masks; every non-zero pixel is object 1 (no void).
  """
  try:
    with Image.open(path) as image:
      mode = image.mode
      labels = np.asarray(image)
  except FileNotFoundError:
    raise InputError(f'Mask {path} does not exist.') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'Mask {path} is not a readable PNG ({e}); re-create or delete it.') from None
  if labels.ndim != 2:
    raise InputError(
        f'Mask {path} is a {mode} colour image; masks must be single-channel: a palette (P) PNG '
        'whose pixel values are object ids (DAVIS-2017, YouTube-VOS), or 0/255 grey (DAVIS-2016). '
        'Convert it, e.g. map each colour to its index in the palette and save with mode "P".')
  if binary:
    return (labels > 0).astype(np.uint8)
  return labels.astype(np.uint8)


def write_label_map(path: pathlib.Path, labels: np.ndarray, binary: bool) -> None:
  """Writes a label map in the official format: 0/255 grey (binary) or a palette PNG.

  Writes to a temporary file and renames, so a killed run never leaves a truncated mask.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  if binary:
    image = Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8), mode='L')
  else:
    image = Image.fromarray(labels.astype(np.uint8), mode='P')
    image.putpalette(palette().reshape(-1).tolist())
  tmp = path.with_name(path.name + '.tmp')
  image.save(tmp, format='PNG')
  tmp.replace(path)


def image_size(path: pathlib.Path) -> tuple[int, int]:
  """(height, width) from the file header, without decoding the pixels."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except FileNotFoundError:
    raise InputError(f'{path} does not exist.') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'{path} is not a readable image ({e}); re-create or delete it.') from None
  return height, width


def list_frames(folder: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """Image files in a folder, sorted by name (frame numbers may have gaps)."""
  if not folder.is_dir():
    raise InputError(f'Frame folder {folder} does not exist.')
  return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES))


@dataclasses.dataclass(frozen=True)
class Video:
  """One video on disk and the annotations that come with it.

  Attributes:
    name: folder name of the video (also the name of its results folder).
    frame_paths: every frame, sorted; results are written for each of them.
    annotation_paths: frame name -> annotation PNG, for the frames that have one.
    first_frames: object id -> name of the frame whose annotation introduces it. One-shot
      methods get that mask; DAVIS objects all start on frame 0, YouTube-VOS ones may start late.
    binary: DAVIS-2016 style 0/255 masks (read and written as one object).
    categories: object id -> category name, where the dataset has them (YouTube-VOS).
    fps: frames per second, for overlay videos (a video file's own; DAVIS and YouTube-VOS
      frames come at 24 and 6 or 30).
  """
  name: str
  frame_paths: tuple[pathlib.Path, ...]
  annotation_paths: Mapping[str, pathlib.Path]
  first_frames: Mapping[int, str]
  binary: bool = False
  categories: Mapping[int, str] = dataclasses.field(default_factory=dict)
  fps: float = 24.0

  @property
  def frame_names(self) -> tuple[str, ...]:
    return tuple(p.stem for p in self.frame_paths)

  @property
  def object_ids(self) -> tuple[int, ...]:
    return tuple(sorted(self.first_frames))

  def __len__(self) -> int:
    return len(self.frame_paths)

  def frame(self, index: int) -> np.ndarray:
    return read_frame(self.frame_paths[index])

  def annotation(self, frame_name: str) -> np.ndarray:
    return read_label_map(self.annotation_paths[frame_name], self.binary)

  def given_masks(self) -> dict[int, tuple[int, np.ndarray]]:
    """What a one-shot method is given: object id -> (frame index, boolean mask)."""
    index = {name: i for i, name in enumerate(self.frame_names)}
    given = {}
    for frame_name in sorted(set(self.first_frames.values())):
      labels = self.annotation(frame_name)
      for obj, first in self.first_frames.items():
        if first == frame_name:
          given[obj] = (index[frame_name], labels == obj)
    return given

  def check(self, require_objects: bool = True) -> None:
    """Checks, before any work starts, that a method can be run on this video.

    Fails with a message naming the file, so a bad video stops the run before it writes.

    Args:
      require_objects: False for a video given without masks, which only a zero-shot
        (unsupervised) method can segment.
    """
    if not self.frame_paths:
      raise InputError(f'Video {self.name} has no frames.')
    if require_objects and not self.first_frames:
      first_mask = self.annotation_paths.get(self.frame_names[0])
      why = (f'its first mask {first_mask} is empty' if first_mask else
             f'no mask is given for {self.frame_paths[0]}')
      raise InputError(f'Video {self.name} has no object to segment: {why}. Draw the object in '
                       'the mask, or drop the video from data.sequences.')
    frame_size = image_size(self.frame_paths[0])
    names = set(self.frame_names)
    for frame_name in sorted(set(self.first_frames.values())):
      path = self.annotation_paths.get(frame_name)
      if frame_name not in names or path is None:
        raise InputError(f'Video {self.name}: frame {frame_name} must have an image and a mask '
                         f'(looked beside {self.frame_paths[0]}); add it or drop the video.')
      if image_size(path) != frame_size:
        raise InputError(
            f'Mask {path} is {image_size(path)[::-1]} (WxH) but its frames are '
            f'{frame_size[::-1]}; resize the mask (nearest neighbour) to the frame size.')
    for obj, (frame_index, mask) in self.given_masks().items():
      if not mask.any():
        path = self.annotation_paths[self.frame_names[frame_index]]
        raise InputError(
            f'Mask {path} has no pixels of object {obj}: a one-shot method needs each object '
            'drawn in its first mask. Fix the mask, or drop the video from data.sequences.')


@dataclasses.dataclass(frozen=True)
class VideoDataset:
  """A list of videos plus what evaluation needs to know about them.

  Attributes:
    name: 'davis' or 'youtube_vos' (which benchmark protocol scores it), or 'video'.
    root: where it was read from.
    videos: the selected videos, in order.
    dense_annotations: every frame is annotated (DAVIS): J&F can be computed on all frames.
    seen_categories: YouTube-VOS categories present in its train split (seen/unseen summary).
  """
  name: str
  root: pathlib.Path
  videos: Sequence[Video]
  dense_annotations: bool
  seen_categories: frozenset[str] = frozenset()

  def __iter__(self):
    return iter(self.videos)

  def __len__(self) -> int:
    return len(self.videos)

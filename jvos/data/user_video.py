"""A user's own video: a folder of frames or a video file, and optionally a first-frame mask.

A video file is decoded once into <workdir>/frames/<stem>/00000.jpg, ... The mask may be named
anything: it becomes the annotation of the first frame. A palette PNG holds object ids
(DAVIS-2017 style); a grey or bilevel one is binary: every non-zero pixel is object 1. Without
a mask the video has no objects to follow and only a zero-shot (unsupervised) method can run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

import cv2
import numpy as np
from PIL import Image

from jvos.data.video import Video, VideoDataset, VOID, image_size, list_frames, read_label_map
from jvos.errors import InputError

JPEG_QUALITY = 95


def _decode_video(path: pathlib.Path, folder: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """The frames of a video file, decoded into `folder` unless a full decode is already there."""
  capture = cv2.VideoCapture(str(path))
  try:
    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    done = list_frames(folder) if folder.is_dir() else ()
    if expected > 0 and len(done) == expected:
      return done
    # Decode beside the destination and rename at the end, so a killed run leaves no partial
    # folder that a later run would take for a full decode.
    partial = folder.with_name(folder.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    while True:
      ok, bgr = capture.read()
      if not ok:
        break
      frame_path = partial / f'{count:05d}.jpg'
      if not cv2.imwrite(str(frame_path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f'Could not write {frame_path}.')
      count += 1
  finally:
    capture.release()
  if count == 0:
    shutil.rmtree(partial)
    raise InputError(f'Could not decode any frame from {path}: it is not a video OpenCV can read '
                     '(.mp4, .avi, .mov, ...). Convert it, e.g. `ffmpeg -i IN -c:v libx264 '
                     'OUT.mp4`, or pass a folder of frames as data.frames.')
  shutil.rmtree(folder, ignore_errors=True)
  partial.rename(folder)
  return list_frames(folder)


def _frame_rate(path: pathlib.Path) -> float:
  """A video file's frames per second; 24 when the container does not say."""
  capture = cv2.VideoCapture(str(path))
  try:
    fps = capture.get(cv2.CAP_PROP_FPS)
  finally:
    capture.release()
  return fps if 1 <= fps <= 240 else 24.0


def _is_palette(mask: pathlib.Path) -> bool:
  """Palette masks hold object ids; any other single-channel mask is read as binary."""
  image_size(mask)  # Fails with a message naming the file if it is not an image.
  with Image.open(mask) as image:
    return image.mode == 'P'


def _video_with_mask(name: str, frame_paths: tuple[pathlib.Path, ...],
                     mask: pathlib.Path) -> Video:
  """The video whose first frame is annotated by `mask`; its objects are the ids drawn there."""
  if not mask.is_file():
    raise InputError(f'First-frame mask {mask} does not exist; pass --config.data.mask=<png>, or '
                     'leave data.mask empty to segment the video zero-shot.')
  binary = not _is_palette(mask)
  labels = read_label_map(mask, binary)
  first = frame_paths[0].stem
  objects = sorted(set(np.unique(labels).tolist()) - {0, VOID})
  return Video(name=name, frame_paths=frame_paths, annotation_paths={first: mask},
               first_frames={obj: first for obj in objects}, binary=binary)


def load_user_video(frames: pathlib.Path, mask: pathlib.Path | None,
                    workdir: pathlib.Path) -> VideoDataset:
  """Reads one video given by the user.

  Args:
    frames: a folder of images (sorted by name) or a video file.
    mask: the first frame's mask (PNG), or None to segment zero-shot.
    workdir: where a video file's frames are decoded to (<workdir>/frames/<stem>/).
  """
  if not frames.exists():
    raise InputError(f'data.frames={str(frames)!r} does not exist; pass a folder of frames or '
                     'a video file.')
  if frames.is_dir():
    name, frame_paths = frames.name, list_frames(frames)
  else:
    name, frame_paths = frames.stem, _decode_video(frames, workdir / 'frames' / frames.stem)
  if not frame_paths:
    raise InputError(f'{frames} holds no frames (.jpg, .jpeg or .png files); pass a folder of '
                     'frames or a video file as data.frames.')
  if mask is None:
    video = Video(name=name, frame_paths=frame_paths, annotation_paths={}, first_frames={})
  else:
    video = _video_with_mask(name, frame_paths, mask)
  if not frames.is_dir():  # Overlay videos play at the file's own rate.
    video = dataclasses.replace(video, fps=_frame_rate(frames))
  video.check(require_objects=mask is not None)
  return VideoDataset(name='video', root=frames, videos=(video,), dense_annotations=False)

"""DAVIS folder layout, 2016 and 2017.

    ROOT/JPEGImages/<resolution>/<sequence>/<frame>.jpg
    ROOT/Annotations/<resolution>/<sequence>/<frame>.png
    ROOT/ImageSets/<resolution>/<split>.txt   (2016: lines of "/JPEGImages/... /Annotations/...")
    ROOT/ImageSets/2017/<split>.txt           (2017: one sequence name per line)

DAVIS-2016 masks are 0/255 grey (one object); DAVIS-2017 masks are palette PNGs of object ids
with 255 = void. Frame numbers may have gaps: we read whatever frames are present. As in the
official evaluation, the objects of a sequence are those in its first-frame annotation.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from jvos.data.video import Video, VideoDataset, list_frames, read_label_map, VOID
from jvos.errors import InputError

MASK_FORMATS = ('auto', 'binary', 'palette')


def _split_sequences(root: pathlib.Path, resolution: str, split: str) -> tuple[str, ...]:
  """Sequence names of a split, from whichever ImageSets file the dataset has."""
  names_2017 = root / 'ImageSets' / '2017' / f'{split}.txt'
  if names_2017.is_file():
    return tuple(line.strip() for line in names_2017.read_text().splitlines() if line.strip())
  paths_2016 = root / 'ImageSets' / resolution / f'{split}.txt'
  if paths_2016.is_file():
    names = []
    for line in paths_2016.read_text().splitlines():
      if line.strip():
        name = pathlib.PurePosixPath(line.split()[0]).parent.name
        if name not in names:
          names.append(name)
    return tuple(names)
  raise InputError(
      f'No split file for data.split={split!r}: looked for {names_2017} and {paths_2016}. '
      'Name the sequences with --config.data.sequences=a,b,c instead.')


def _is_binary(mask_path: pathlib.Path) -> bool:
  """DAVIS-2016 masks are grey 0/255; DAVIS-2017 ones are palette PNGs of object ids."""
  try:
    with Image.open(mask_path) as image:
      if image.mode == 'P':
        return False
      if image.mode in ('1', 'L'):
        return set(np.unique(np.asarray(image)).tolist()) <= {0, 255}
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'Mask {mask_path} is not a readable PNG ({e}); re-create or delete it.') from None
  # Anything else (RGB...) is rejected by read_label_map with a message saying how to convert.
  return False


def load_davis(root: pathlib.Path, resolution: str = '480p', split: str = 'val',
               sequences: tuple[str, ...] = (), mask_format: str = 'auto') -> VideoDataset:
  """Reads a DAVIS-2016 or -2017 folder.

  Args:
    root: folder holding JPEGImages/ and Annotations/.
    resolution: '480p' or 'Full-Resolution'.
    split: name of an ImageSets file ('train', 'val', 'test-dev'...); ignored if `sequences`.
    sequences: explicit sequence names, in order.
    mask_format: 'binary' (2016, 0/255), 'palette' (2017, object ids) or 'auto' (by PNG mode).
  """
  if mask_format not in MASK_FORMATS:
    raise InputError(f'data.mask_format={mask_format!r}; use one of {MASK_FORMATS}.')
  frames_root = root / 'JPEGImages' / resolution
  masks_root = root / 'Annotations' / resolution
  if not frames_root.is_dir():
    raise InputError(
        f'{frames_root} does not exist: data.root={str(root)!r} is not a DAVIS folder (it needs '
        f'JPEGImages/{resolution}/ and Annotations/{resolution}/). Pass --config.data.root=<path>.')
  names = sequences or _split_sequences(root, resolution, split)
  missing = [n for n in names if not (frames_root / n).is_dir()]
  if missing:
    available = sorted(p.name for p in frames_root.iterdir() if p.is_dir())
    raise InputError(f'Sequences {missing} are not in {frames_root}; available: {available}.')

  videos = []
  for name in names:
    frame_paths = list_frames(frames_root / name)
    mask_dir = masks_root / name
    annotations = {p.stem: p for p in sorted(mask_dir.glob('*.png'))} if mask_dir.is_dir() else {}
    if not frame_paths:
      raise InputError(f'{frames_root / name} holds no frames (.jpg/.png).')
    first = frame_paths[0].stem
    if first not in annotations:
      raise InputError(
          f'Sequence {name} has no first-frame mask: expected {mask_dir / (first + ".png")}. '
          'DAVIS needs the first frame annotated; add the mask or drop the sequence.')
    binary = _is_binary(annotations[first]) if mask_format == 'auto' else mask_format == 'binary'
    labels = read_label_map(annotations[first], binary)
    # As the official evaluation does: the objects are 1..max(label in the first frame).
    num_objects = int(np.max(labels, initial=0, where=labels != VOID))
    video = Video(name=name, frame_paths=frame_paths, annotation_paths=annotations,
                  first_frames={k: first for k in range(1, num_objects + 1)}, binary=binary)
    video.check()
    videos.append(video)
  return VideoDataset(name='davis', root=root, videos=tuple(videos), dense_annotations=True)

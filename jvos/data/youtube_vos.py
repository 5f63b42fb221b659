"""YouTube-VOS folder layout (2018 and 2019).

    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    ROOT/<split>/Annotations/<video>/<frame>.png   palette PNGs, pixel = object id
    ROOT/<split>/meta.json   {"videos": {<video>: {"objects": {"1": {"category": "cat",
                                                                    "frames": ["00000", ...]}}}}}

Train masks come every 5th frame. Valid masks exist only on the frame where each object first
appears, and objects may appear late, so every object starts on its own frame: the first one
meta.json lists for it. Categories of the train split are the "seen" ones of the benchmark.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

from jvos.data.video import Video, VideoDataset, list_frames
from jvos.errors import InputError


def _read_meta(path: pathlib.Path) -> Mapping[str, Any]:
  """The "videos" entry of a meta.json: video name -> {"objects": {...}}."""
  if not path.is_file():
    raise InputError(f'{path} does not exist: every YouTube-VOS split needs its official '
                     'meta.json; copy it from the download into that folder.')
  try:
    videos = json.loads(path.read_text())['videos']
    if not isinstance(videos, dict):
      raise TypeError('"videos" is not an object')
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InputError(f'{path} is not a YouTube-VOS meta.json ({e!r}); re-download it.') from None
  return videos


def _objects(meta_path: pathlib.Path, name: str,
             entry: Any) -> tuple[dict[int, str], dict[int, str]]:
  """(first_frames, categories) of one video's meta.json entry, keyed by object id."""
  try:
    objects = {int(obj): (info['category'], info['frames'][0])
               for obj, info in entry['objects'].items()}
  except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
    raise InputError(f'{meta_path}: the entry of video {name} is malformed ({e!r}); every object '
                     'needs an integer id, a "category" and a non-empty "frames" list.') from None
  first_frames = {obj: first for obj, (_, first) in objects.items()}
  categories = {obj: category for obj, (category, _) in objects.items()}
  return first_frames, categories


def _load_video(split_dir: pathlib.Path, meta_path: pathlib.Path, name: str,
                entry: Any) -> Video:
  """One video of the split, checked so that a bad one stops the run before any work."""
  first_frames, categories = _objects(meta_path, name, entry)
  mask_dir = split_dir / 'Annotations' / name
  annotations = {p.stem: p for p in sorted(mask_dir.glob('*.png'))}
  for obj, first in sorted(first_frames.items()):
    if first not in annotations:
      raise InputError(
          f'{meta_path} says object {obj} of video {name} first appears on frame {first}, but '
          f'{mask_dir / (first + ".png")} does not exist; restore the annotation or drop the '
          'video from data.sequences.')
  video = Video(name=name, frame_paths=list_frames(split_dir / 'JPEGImages' / name),
                annotation_paths=annotations, first_frames=first_frames, categories=categories)
  video.check()
  return video


def _train_categories(root: pathlib.Path) -> frozenset[str]:
  """Categories of the train split (the benchmark's "seen" ones); empty without train/."""
  meta_path = root / 'train' / 'meta.json'
  if not meta_path.is_file():
    return frozenset()
  return frozenset(category for name, entry in _read_meta(meta_path).items()
                   for category in _objects(meta_path, name, entry)[1].values())


def load_youtube_vos(root: pathlib.Path, split: str = 'valid',
                     sequences: tuple[str, ...] = ()) -> VideoDataset:
  """Reads one split of a YouTube-VOS folder.

  Args:
    root: folder holding train/ and valid/ (and test/).
    split: subfolder to read, e.g. 'train' or 'valid'.
    sequences: explicit video names, in order; empty: every video of meta.json, sorted.
  """
  if not root.is_dir():
    raise InputError(f'data.root={str(root)!r} does not exist; pass --config.data.root=<the '
                     'YouTube-VOS folder holding train/ and valid/>.')
  split_dir = root / split
  if not split_dir.is_dir():
    available = sorted(p.name for p in root.iterdir() if (p / 'meta.json').is_file())
    raise InputError(f'{split_dir} does not exist: data.split={split!r} is not a YouTube-VOS '
                     f'split of {root} (splits there: {available}). Pass --config.data.split=.')
  meta_path = split_dir / 'meta.json'
  meta = _read_meta(meta_path)
  names = sequences or tuple(sorted(meta))
  unknown = [name for name in names if name not in meta]
  if unknown:
    raise InputError(f'Videos {unknown} are not in {meta_path} (it lists {len(meta)}, e.g. '
                     f'{sorted(meta)[:5]}); fix --config.data.sequences.')
  videos = tuple(_load_video(split_dir, meta_path, name, meta[name]) for name in names)
  return VideoDataset(name='youtube_vos', root=root, videos=videos, dense_annotations=False,
                      seen_categories=_train_categories(root))

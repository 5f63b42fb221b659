"""Multi-object videos made of real DAVIS-2016 objects, in the DAVIS-2017 layout.

No real multi-object video data exists on our machines, so this is the multi-object evaluation
and training set: every composite is a real DAVIS-2016 sequence (the background, whose own
object stays as object 1 with its real mask) with 1..max_pasted objects cut out of other
sequences of the same split and pasted over it frame by frame, along their own motion:
composite frame t gets frame t of the donor's object at the donor's own position, under one
fixed scale and integer offset per object. Later objects are drawn over earlier ones and over
the background's object, and the label map records who is visible, so masks are exact.

    python -m jvos.data.composites --davis /data/DAVIS2016 --out /data/composites --split val

Geometry, exactly (what the tests check): composite pixel (x, y) of an object pasted with
scale s and offset (ox, oy) shows donor pixel (floor((x + 0.5 - ox) / s), floor((y + 0.5 - oy)
/ s)) of its mask, i.e. the donor pixel whose area holds its centre; the image is the donor
frame resized by s with area averaging (`cv2.INTER_AREA`) and shifted by the offset. The image
blends the donor in with an alpha that ramps over FEATHER pixels on both sides of the mask edge
(so pastes have no jaggies) and is >= 0.5 exactly on the mask, so the label map equals the
mask. Placements keep the donor frame's edges that cut its object (an object entering the
frame) out of view, keep most of the object inside the frame over the video, and show every
object, the background's too, over at least MIN_VISIBLE_FRACTION of its area in frame 0.

A composite has the background's length and frame names (DAVIS-2016 train keeps every second
frame: 00000, 00002, ...); donors are matched by position in their frame list, and a shorter
donor plays back and forth (ping-pong) so it never vanishes. Its name is
`<background>+<donor1>+<donor2>`, in paste order (object ids 1, 2, 3); no DAVIS name holds a
'+', which is how the generator knows its own videos. The marker file
`jvos_composites_<split>.json`, written last, holds the parameters and each video's recipe
(donor, scale, offset and donor frame of every object); the splits of one folder are separate
sets, so train and val composites can share it as in DAVIS-2017.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import shutil
import sys
import time

import cv2
import numpy as np
from PIL import Image

from jvos.data.davis import load_davis
from jvos.data.video import Video, read_frame, read_label_map, write_label_map
from jvos.errors import InputError

# Bump when the output for the same parameters changes, so old sets are regenerated.
GENERATOR_VERSION = 1
MARKER = 'jvos_composites_{split}.json'
SEPARATOR = '+'
RESOLUTION = '480p'
# Pasted objects keep 60-100% of their size: never upscaled, as that would blur them.
SCALE_RANGE = (0.6, 1.0)
MIN_VISIBLE_FRACTION = 0.3
# Share of a pasted object's area, over all its frames, that must lie inside the composite.
MIN_INSIDE_FRACTION = 0.7
MAX_PLACEMENT_TRIES = 200
MAX_DONOR_TRIES = 1000
FEATHER = 2.0  # Pixels over which alpha ramps from 0.5 to 1 inside and 0.5 to 0 outside.
COARSE = 8  # Placement statistics use masks reduced by this factor.
# Above the source's ~90 and without chroma subsampling, so re-encoding the pixels (which are
# the DAVIS ones inside each object) changes them by 1-2 grey levels on average.
JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a donor object goes: composite xy = scale * donor xy + offset (xy, in pixels)."""
  scale: float
  offset: tuple[int, int]


IDENTITY = Placement(1.0, (0, 0))


def ping_pong(num_frames: int, length: int) -> tuple[int, ...]:
  """The donor frame index of each composite frame: 0, 1, .., length - 1, .., 1, 0, 1, .."""
  if length == 1:
    return (0,) * num_frames
  period = 2 * (length - 1)
  return tuple(t % period if t % period < length else period - t % period
               for t in range(num_frames))


def _source_index(size: int, donor_size: int, offset: int, scale: float) -> np.ndarray:
  """Along one axis, the donor pixel holding each composite pixel's centre; -1 where none."""
  source = np.floor((np.arange(size) + 0.5 - offset) / scale).astype(np.int64)
  return np.where((source >= 0) & (source < donor_size), source, -1)


def place_mask(mask: np.ndarray, placement: Placement, shape: tuple[int, int]) -> np.ndarray:
  """The donor's boolean mask moved into a composite of `shape` (nearest pixel, exact)."""
  rows = _source_index(shape[0], mask.shape[0], placement.offset[1], placement.scale)
  cols = _source_index(shape[1], mask.shape[1], placement.offset[0], placement.scale)
  placed = np.zeros(shape, bool)
  has_row, has_col = rows >= 0, cols >= 0
  placed[np.ix_(has_row, has_col)] = mask[np.ix_(rows[has_row], cols[has_col])]
  return placed


def feathered_alpha(mask: np.ndarray) -> np.ndarray:
  """Float32 alpha that is >= 0.5 exactly on `mask` and ramps to 1 / 0 over FEATHER pixels."""
  inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
  outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
  # Pixels next to the edge are 1 away from it: 0.5 + 1/(2 FEATHER) inside, 0.5 - that outside.
  return np.where(mask, np.minimum(1, 0.5 + inside / (2 * FEATHER)),
                  np.maximum(0, 0.5 - outside / (2 * FEATHER))).astype(np.float32)


def _bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
  """Rows and columns around the mask's pixels, `pad` wider on each side, within the array."""
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  if not rows.size:
    return None
  return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, mask.shape[0])),
          slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, mask.shape[1])))


def paste_object(frame: np.ndarray, labels: np.ndarray, donor_frame: np.ndarray,
                 donor_mask: np.ndarray, obj: int, placement: Placement) -> None:
  """Draws a donor object over `frame` (float32, H x W x 3) and writes `obj` into `labels`.

  `labels` gets `obj` exactly on the placed mask; the image is blended with its feathered alpha.
  """
  shape = labels.shape
  placed = place_mask(donor_mask, placement, shape)
  box = _bounding_box(placed, pad=int(math.ceil(FEATHER)) + 1)
  if box is None:
    return
  if placement.scale != 1:
    donor_frame = cv2.resize(donor_frame, (0, 0), fx=placement.scale, fy=placement.scale,
                             interpolation=cv2.INTER_AREA)
  # Only where the scaled donor frame has pixels (a feathered rim may reach past its edge).
  ox, oy = placement.offset
  rows = slice(max(box[0].start, oy), min(box[0].stop, oy + donor_frame.shape[0]))
  cols = slice(max(box[1].start, ox), min(box[1].stop, ox + donor_frame.shape[1]))
  alpha = feathered_alpha(placed[rows, cols])[:, :, None]
  donor = donor_frame[rows.start - oy:rows.stop - oy, cols.start - ox:cols.stop - ox]
  frame[rows, cols] = frame[rows, cols] * (1 - alpha) + donor.astype(np.float32) * alpha
  labels[placed] = obj


@dataclasses.dataclass(frozen=True)
class _Donor:
  """A sequence's object over the frames one composite uses, summarised for placement."""
  video: Video
  indices: tuple[int, ...]  # Donor frame index of each composite frame.
  first_mask: np.ndarray  # (H, W) bool, frame indices[0] = 0.
  coverage: np.ndarray  # (frames used, H / COARSE, W / COARSE): share of each cell on the object.
  touches: tuple[bool, bool, bool, bool]  # Object on the left, right, top, bottom frame edge.


def _read_mask(video: Video, index: int) -> np.ndarray:
  return read_label_map(video.annotation_paths[video.frame_names[index]], binary=True) > 0


def _donor(video: Video, num_frames: int) -> _Donor:
  """Reads a donor's masks (not its frames) for the first `num_frames` composite frames."""
  indices = ping_pong(num_frames, len(video))
  masks = [_read_mask(video, i) for i in sorted(set(indices))]
  height, width = masks[0].shape
  small = (max(width // COARSE, 1), max(height // COARSE, 1))
  coverage = np.stack([cv2.resize(m.astype(np.float32), small, interpolation=cv2.INTER_AREA)
                       for m in masks])
  touches = tuple(any(bool(edge(m).any()) for m in masks) for edge in (
      lambda m: m[:, 0], lambda m: m[:, -1], lambda m: m[0], lambda m: m[-1]))
  return _Donor(video, indices, masks[0], coverage, touches)


def _axis_offset(rng: np.random.Generator, size: int, donor_size: int, centre: float,
                 scale: float, touches_low: bool, touches_high: bool) -> int | None:
  """A random offset along one axis, or None if the constraints leave none.

  The object's frame-0 centre lands in the frame; a donor frame edge that cuts the object stays
  at or beyond the composite's edge, so no straight cut shows inside the picture.
  """
  low, high = -scale * centre, size - scale * centre
  if touches_low:
    high = min(high, 0)
  if touches_high:
    low = max(low, size - round(donor_size * scale))
  low, high = math.ceil(low), math.floor(high)
  return int(rng.integers(low, high + 1)) if low <= high else None


def _random_placement(rng: np.random.Generator, donor: _Donor,
                      shape: tuple[int, int]) -> Placement | None:
  left, right, top, bottom = donor.touches
  # An object cut by two opposite edges can only keep both out of view at its own size.
  if (left and right) or (top and bottom):
    scale = 1.0
  else:
    scale = round(float(rng.uniform(*SCALE_RANGE)), 2)
  ys, xs = np.nonzero(donor.first_mask)
  height, width = donor.first_mask.shape
  ox = _axis_offset(rng, shape[1], width, xs.mean() + 0.5, scale, left, right)
  oy = _axis_offset(rng, shape[0], height, ys.mean() + 0.5, scale, top, bottom)
  if ox is None or oy is None:
    return None
  return Placement(scale, (ox, oy))


def _inside_fraction(donor: _Donor, placement: Placement, shape: tuple[int, int]) -> float:
  """Share of the placed object's area, summed over its frames, inside the composite."""
  _, small_height, small_width = donor.coverage.shape
  height, width = donor.first_mask.shape
  ox, oy = placement.offset
  ys = placement.scale * (np.arange(small_height) + 0.5) * height / small_height + oy
  xs = placement.scale * (np.arange(small_width) + 0.5) * width / small_width + ox
  inside = donor.coverage[:, (ys >= 0) & (ys < shape[0])][:, :, (xs >= 0) & (xs < shape[1])]
  return float(inside.sum() / donor.coverage.sum())


def _all_visible(background_mask: np.ndarray, donors: list[_Donor],
                 placements: list[Placement]) -> bool:
  """Whether every object shows MIN_VISIBLE_FRACTION of its own area in frame 0."""
  shape = background_mask.shape
  labels = background_mask.astype(np.uint8)
  areas = [background_mask.sum()]
  for obj, (donor, placement) in enumerate(zip(donors, placements), 2):
    labels[place_mask(donor.first_mask, placement, shape)] = obj
    areas.append(donor.first_mask.sum() * placement.scale ** 2)
  counts = np.bincount(labels.ravel(), minlength=len(areas) + 1)
  return all(counts[obj] >= MIN_VISIBLE_FRACTION * area for obj, area in enumerate(areas, 1))


def _place(rng: np.random.Generator, background_mask: np.ndarray, donors: list[_Donor],
           name: str, max_pasted: int, seed: int) -> list[Placement]:
  """Random placements, redrawn until each object is mostly inside and visible in frame 0."""
  shape = background_mask.shape
  for _ in range(MAX_PLACEMENT_TRIES):
    placements = [_random_placement(rng, donor, shape) for donor in donors]
    if all(p is not None and _inside_fraction(d, p, shape) >= MIN_INSIDE_FRACTION
           for d, p in zip(donors, placements)) and _all_visible(background_mask, donors,
                                                                 placements):
      return placements
  raise InputError(
      f'Could not place the objects of composite {name} so that each shows '
      f'{MIN_VISIBLE_FRACTION:.0%} of itself in frame 0 ({MAX_PLACEMENT_TRIES} tries); lower '
      f'max_pasted={max_pasted} or change seed={seed}.')


def _write_video(frames_dir: pathlib.Path, masks_dir: pathlib.Path, background: Video,
                 donors: list[_Donor], placements: list[Placement], num_frames: int) -> None:
  """Renders one composite: JPEG frames and palette masks named as the background's frames."""
  frames_dir.mkdir(parents=True)
  for t, frame_name in enumerate(background.frame_names[:num_frames]):
    frame = background.frame(t).astype(np.float32)
    labels = _read_mask(background, t).astype(np.uint8)
    for obj, (donor, placement) in enumerate(zip(donors, placements), 2):
      index = donor.indices[t]
      # Each donor frame is read when it is pasted: a whole donor would not fit in memory.
      paste_object(frame, labels, read_frame(donor.video.frame_paths[index]),
                   _read_mask(donor.video, index), obj, placement)
    image = Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    image.save(frames_dir / f'{frame_name}.jpg', quality=JPEG_QUALITY, subsampling=0)
    write_label_map(masks_dir / f'{frame_name}.png', labels, binary=False)


def _recipe(background: Video, donors: list[_Donor], placements: list[Placement],
            num_frames: int) -> dict:
  """What the marker records of one composite: each object's sequence, placement, frames."""
  objects = {'1': dict(sequence=background.name, scale=1.0, offset=[0, 0],
                       frames=list(background.frame_names[:num_frames]))}
  for obj, (donor, placement) in enumerate(zip(donors, placements), 2):
    objects[str(obj)] = dict(sequence=donor.video.name, scale=placement.scale,
                             offset=list(placement.offset),
                             frames=[donor.video.frame_names[i] for i in donor.indices])
  return dict(background=background.name, objects=objects)


def _num_combinations(num_sequences: int, max_pasted: int) -> int:
  """Distinct composites: a background, then 1..max_pasted other sequences in paste order."""
  return num_sequences * sum(math.perm(num_sequences - 1, k) for k in range(1, max_pasted + 1))


def _choose(names: tuple[str, ...], num_videos: int, max_pasted: int,
            seed: int) -> list[tuple[str, list[str]]]:
  """(background, donors) of each composite; each sequence is a background once per cycle.

  Video v depends only on the seed and v, so a smaller num_videos gives a prefix of the set.
  """
  backgrounds = []
  for cycle in range(-(-num_videos // len(names))):
    backgrounds += [str(n) for n in np.random.default_rng([seed, 0, cycle]).permutation(names)]
  chosen, used = [], set()
  for v, background in enumerate(backgrounds[:num_videos]):
    rng = np.random.default_rng([seed, 1, v])
    others = [n for n in names if n != background]
    # The first composite has the most objects, so every set has one that crowded.
    num_pasted = max_pasted if v == 0 else int(rng.integers(1, max_pasted + 1))
    for _ in range(MAX_DONOR_TRIES):
      donors = [str(n) for n in rng.choice(others, num_pasted, replace=False)]
      if SEPARATOR.join([background, *donors]) not in used:
        break
    else:
      raise InputError(f'Found no new donors for composite {v} on {background} after '
                       f'{MAX_DONOR_TRIES} tries; lower num_videos={num_videos}.')
    used.add(SEPARATOR.join([background, *donors]))
    chosen.append((background, donors))
  return chosen


def _check_parameters(davis_root: pathlib.Path, out_root: pathlib.Path, split: str,
                      sequences: tuple[str, ...], num_videos: int, max_pasted: int, seed: int,
                      max_frames: int | None) -> None:
  """Fails on parameters that cannot make a usable set, naming the parameter."""
  if out_root.resolve() == davis_root.resolve():
    raise InputError(f'out_root={str(out_root)!r} is the DAVIS-2016 folder itself; write the '
                     'composites to a folder of their own.')
  used = f'the {len(sequences)} sequences used (split={split!r} of {davis_root})'
  if len(sequences) < 2:
    raise InputError(f'{used} are too few: a composite needs a background and another sequence '
                     'to paste; name at least 2 in sequences.')
  if not 1 <= max_pasted < min(len(sequences), 255):
    raise InputError(f'max_pasted={max_pasted}: use 1..{min(len(sequences) - 1, 254)}, as '
                     f'{used} give each background that many other donors.')
  most = _num_combinations(len(sequences), max_pasted)
  if not 1 <= num_videos <= most:
    raise InputError(f'num_videos={num_videos}: use 1..{most}, the distinct composites of {used} '
                     f'with max_pasted={max_pasted}.')
  if seed < 0:
    raise InputError(f'seed={seed}: use a non-negative integer.')
  if max_frames is not None and max_frames < 1:
    raise InputError(f'max_frames={max_frames}: use at least 1, or None for whole videos.')


def _source_videos(davis_root: pathlib.Path, split: str,
                   sequences: tuple[str, ...]) -> tuple[dict[str, Video], tuple[str, ...]]:
  """The chosen DAVIS-2016 sequences of the split (all if none are named), and all its names."""
  dataset = load_davis(davis_root, resolution=RESOLUTION, split=split)
  split_names = tuple(video.name for video in dataset)
  unknown = [name for name in sequences if name not in split_names]
  if unknown:
    raise InputError(f'sequences={list(unknown)} are not in split={split!r} of {davis_root}; '
                     f'it has {list(split_names)}.')
  videos = {}
  for video in dataset:
    if sequences and video.name not in sequences:
      continue
    if not video.binary:
      raise InputError(f'davis_root={str(davis_root)!r}: sequence {video.name} has palette '
                       'masks; composites are made of DAVIS-2016 sequences (0/255 masks, one '
                       'object each). Pass the DAVIS-2016 folder.')
    missing = [name for name in video.frame_names if name not in video.annotation_paths]
    if missing:
      raise InputError(f'{video.frame_paths[0].parent} has frames without masks ({missing[:3]}'
                       f' in {davis_root / "Annotations" / RESOLUTION / video.name}); a donor '
                       'needs every frame annotated. Restore the masks.')
    videos[video.name] = video
  return videos, split_names


def read_marker(out_root: pathlib.Path, split: str = 'val') -> dict | None:
  """The marker of a complete composite set: {'parameters': ..., 'videos': {name: recipe}}."""
  try:
    return json.loads((out_root / MARKER.format(split=split)).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def ensure_composites(davis_root: pathlib.Path, out_root: pathlib.Path, split: str = 'val',
                      num_videos: int | None = None, max_pasted: int = 2, seed: int = 0,
                      max_frames: int | None = None,
                      sequences: tuple[str, ...] = ()) -> pathlib.Path:
  """Generates the composite set of one split into `out_root` unless it is already there.

  The same parameters always give the same bytes. The marker, holding the parameters, is
  written last, so an interrupted or differently parametrised set is regenerated; only this
  split's composites are removed then.

  Args:
    davis_root: a DAVIS-2016 folder (JPEGImages/480p, Annotations/480p, ImageSets/480p).
    out_root: where to write; it becomes a DAVIS-2017 folder (ImageSets/2017/<split>.txt).
    split: the DAVIS-2016 split whose sequences are backgrounds and donors ('val', 'train').
    num_videos: number of composites; None: one per sequence of the split, each its background.
    max_pasted: most objects pasted into one composite (the first composite has this many, the
      others 1..max_pasted).
    seed: random seed of the backgrounds, donors and placements.
    max_frames: keep only the first frames of each composite (quick tests); None: all.
    sequences: the sequences of the split to use as backgrounds and donors; (): all of them.

  Returns:
    `out_root`, ready for `jvos.data.davis.load_davis(out_root, split=split)`.
  """
  davis_root, out_root = pathlib.Path(davis_root), pathlib.Path(out_root)
  sources, split_names = _source_videos(davis_root, split, tuple(sequences))
  num_videos = len(sources) if num_videos is None else num_videos
  _check_parameters(davis_root, out_root, split, tuple(sources), num_videos, max_pasted, seed,
                    max_frames)
  parameters = dict(version=GENERATOR_VERSION, split=split, num_videos=num_videos,
                    max_pasted=max_pasted, seed=seed, max_frames=max_frames,
                    sources={name: len(video) for name, video in sources.items()})
  marker = out_root / MARKER.format(split=split)
  old = read_marker(out_root, split)
  if old is not None and old.get('parameters') == parameters:
    return out_root
  marker.unlink(missing_ok=True)
  frames_root = out_root / 'JPEGImages' / RESOLUTION
  masks_root = out_root / 'Annotations' / RESOLUTION
  # Only this split's composites go: their names hold a '+' and start with one of its sequences.
  for stale in [*frames_root.glob(f'*{SEPARATOR}*'), *masks_root.glob(f'*{SEPARATOR}*')]:
    if stale.name.split(SEPARATOR)[0] in split_names:
      shutil.rmtree(stale)
  recipes = {}
  for v, (background_name, donor_names) in enumerate(_choose(tuple(sources), num_videos,
                                                             max_pasted, seed)):
    background = sources[background_name]
    name = SEPARATOR.join([background_name, *donor_names])
    num_frames = min(len(background), max_frames or len(background))
    donors = [_donor(sources[d], num_frames) for d in donor_names]
    placements = _place(np.random.default_rng([seed, 2, v]), _read_mask(background, 0), donors,
                        name, max_pasted, seed)
    _write_video(frames_root / name, masks_root / name, background, donors, placements,
                 num_frames)
    recipes[name] = _recipe(background, donors, placements, num_frames)
  split_file = out_root / 'ImageSets' / '2017' / f'{split}.txt'
  split_file.parent.mkdir(parents=True, exist_ok=True)
  split_file.write_text(''.join(name + '\n' for name in sorted(recipes)))
  tmp = marker.with_name(marker.name + '.tmp')
  tmp.write_text(json.dumps(dict(parameters=parameters, videos=recipes), indent=1,
                            sort_keys=True))
  tmp.replace(marker)
  return out_root


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m jvos.data.composites',
      description='Writes multi-object composites of DAVIS-2016 sequences in the DAVIS-2017 '
                  'layout (see the module docstring).')
  parser.add_argument('--davis', required=True, type=pathlib.Path, help='DAVIS-2016 folder')
  parser.add_argument('--out', required=True, type=pathlib.Path, help='output folder')
  parser.add_argument('--split', default='val', help='DAVIS-2016 split (val, train)')
  parser.add_argument('--num_videos', type=int, default=None,
                      help='number of composites (default: one per sequence of the split)')
  parser.add_argument('--max_pasted', type=int, default=2, help='most pasted objects per video')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_frames', type=int, default=None,
                      help='keep only the first frames of each video (default: all)')
  parser.add_argument('--sequences', default='',
                      help='comma-separated sequences of the split to use (default: all)')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    ensure_composites(args.davis, args.out, split=args.split, num_videos=args.num_videos,
                      max_pasted=args.max_pasted, seed=args.seed, max_frames=args.max_frames,
                      sequences=tuple(n.strip() for n in args.sequences.split(',') if n.strip()))
  except InputError as e:
    print(f'jvos: error: {e}', file=sys.stderr)
    return 2
  videos = read_marker(args.out, args.split)['videos']
  for name, recipe in sorted(videos.items()):
    objects = recipe['objects']
    placed = ', '.join(f'{obj} {o["sequence"]} x{o["scale"]:.2f} at {tuple(o["offset"])}'
                       for obj, o in sorted(objects.items()))
    print(f'{name}: {len(objects["1"]["frames"])} frames, objects {placed}')
  print(f'{len(videos)} composites of split {args.split!r} in {args.out} '
        f'(ImageSets/2017/{args.split}.txt), {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())

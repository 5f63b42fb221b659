"""A generated multi-object video set with exact masks, in the DAVIS-2017 layout.

The embedded default config runs on it, so a fresh checkout works end to end without data.
Each video is a slowly panning textured background with 1..max_objects textured blobs that
move along smooth (Lissajous) paths, rotate, change shape and pass over each other: later
objects are drawn over earlier ones and the mask records who is visible. Textures are smooth
noise plus stripes, so optical flow and learned features have something to match.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import pathlib
import shutil

import cv2
import numpy as np
from PIL import Image

from jvos.data.video import write_label_map
from jvos.errors import InputError

MARKER = 'jvos_synthetic.json'
VIDEO_PREFIX = 'synthetic-'
# An object must show at least this fraction of its area in frame 0, so its first mask is usable.
MIN_VISIBLE_FRACTION = 0.3
MAX_PLACEMENT_TRIES = 100


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int,
                  channels: int) -> np.ndarray:
  """(height, width, channels) float32 noise of std ~1 that varies over about `cell` pixels."""
  coarse = rng.standard_normal((height // cell + 2, width // cell + 2, channels), np.float32)
  fine = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
  return fine.reshape(height, width, channels)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Tinted gradient, large blotches and fine grain, float32 (H, W, 3) in about 0..255.

  Mostly grey variation, so the saturated objects stand out from it.
  """
  ramp_x = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None] * rng.uniform(-30, 30, 3)
  ramp_y = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None] * rng.uniform(-30, 30, 3)
  cell = max(height, width) // 6
  blotches = (30 * _smooth_noise(rng, height, width, cell, 1) +
              10 * _smooth_noise(rng, height, width, cell, 3))
  grain = 20 * _smooth_noise(rng, height, width, 6, 1)
  return (rng.uniform(90, 160, 3) + ramp_x + ramp_y + blotches + grain).astype(np.float32)


def _object_texture(rng: np.random.Generator, size: int, hue: float) -> np.ndarray:
  """A saturated base colour with blotches and stripes, float32 (size, size, 3)."""
  colour = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95)))
  coords = np.arange(size, dtype=np.float32)
  stripe_angle = rng.uniform(0, np.pi)
  stripes = np.sin((coords[None, :] * np.cos(stripe_angle) + coords[:, None] *
                    np.sin(stripe_angle)) * 2 * np.pi / rng.uniform(6, 14))
  texture = (colour + 30 * _smooth_noise(rng, size, size, 5, 1) +
             25 * stripes[:, :, None])
  return texture.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Blob:
  """One object: a wobbly ellipse whose texture moves, turns and stretches with it."""
  texture: np.ndarray  # (T, T, 3), in the blob's own (rotated) coordinates.
  radius: float
  aspect: float
  path_centre: np.ndarray  # (2,) x, y: the centre moves on a Lissajous curve around it.
  path_amplitude: np.ndarray  # (2,)
  path_frequency: np.ndarray  # (2,) radians per frame.
  path_phase: np.ndarray  # (2,)
  angle: float
  spin: float  # Radians per frame.
  wobble: float  # Relative depth of the three bumps on the outline.
  shape_phase: np.ndarray  # (3,) phases of the two axes' breathing and of the bumps.

  def pose(self, t: int) -> tuple[np.ndarray, float, float, float, float]:
    """(centre xy, angle, semi-axis u, semi-axis v, bump phase) at frame t."""
    centre = self.path_centre + self.path_amplitude * np.sin(
        self.path_frequency * t + self.path_phase)
    semi_u = self.radius * (1 + 0.15 * np.sin(0.2 * t + self.shape_phase[0]))
    semi_v = self.radius * self.aspect * (1 + 0.15 * np.sin(0.17 * t + self.shape_phase[1]))
    return centre, self.angle + self.spin * t, semi_u, semi_v, self.shape_phase[2] + 0.15 * t

  def draw(self, frame: np.ndarray, labels: np.ndarray, obj: int, t: int) -> None:
    """Paints the blob over `frame` and writes `obj` into `labels` wherever it is visible."""
    height, width = labels.shape
    (cx, cy), angle, semi_u, semi_v, bump_phase = self.pose(t)
    reach = max(semi_u, semi_v) * (1 + self.wobble)
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, width)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, height)
    if x0 >= x1 or y0 >= y1:
      return
    dx, dy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - cx,
                         np.arange(y0, y1, dtype=np.float32) - cy)
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    theta = np.arctan2(v / semi_v, u / semi_u)
    inside = np.hypot(u / semi_u, v / semi_v) < 1 + self.wobble * np.sin(3 * theta + bump_phase)
    half = self.texture.shape[0] / 2
    colours = cv2.remap(self.texture, (u + half).astype(np.float32),
                        (v + half).astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    frame[y0:y1, x0:x1][inside] = colours[inside]
    labels[y0:y1, x0:x1][inside] = obj


def _random_blob(rng: np.random.Generator, height: int, width: int, hue: float) -> _Blob:
  """A blob of 10-18% of the frame's short side, moving 2-5 px per frame at 240 px."""
  scale = min(height, width)
  radius = rng.uniform(0.1, 0.18) * scale
  amplitude = rng.uniform(0.1, 0.32, 2) * (width, height)
  speed = rng.uniform(0.008, 0.02, 2) * scale  # Peak pixels per frame, per axis.
  # Inside pixels lie within radius * 1.15 (breathing) * 1.2 (bumps) of the centre.
  texture_size = int(2 * 1.4 * radius) + 2
  return _Blob(
      texture=_object_texture(rng, texture_size, hue), radius=radius,
      aspect=rng.uniform(0.55, 1.0),
      path_centre=np.array([width, height]) * rng.uniform(0.4, 0.6, 2),
      path_amplitude=amplitude, path_frequency=speed / amplitude,
      path_phase=rng.uniform(0, 2 * np.pi, 2), angle=rng.uniform(0, 2 * np.pi),
      spin=rng.uniform(-0.06, 0.06), wobble=rng.uniform(0.05, 0.2),
      shape_phase=rng.uniform(0, 2 * np.pi, 3))


def _all_visible(blobs: list[_Blob], height: int, width: int) -> bool:
  """Whether each blob shows enough of itself in frame 0 (none hidden or out of view)."""
  labels = np.zeros((height, width), np.uint8)
  scratch = np.zeros((height, width, 3), np.float32)
  for obj, blob in enumerate(blobs, 1):
    blob.draw(scratch, labels, obj, 0)
  counts = np.bincount(labels.ravel(), minlength=len(blobs) + 1)
  areas = [np.pi * blob.radius ** 2 * blob.aspect for blob in blobs]
  return all(counts[obj] >= MIN_VISIBLE_FRACTION * area for obj, area in enumerate(areas, 1))


def _place_blobs(rng: np.random.Generator, num_objects: int, height: int,
                 width: int) -> list[_Blob]:
  """Random blobs with distinct hues, redrawn until every one is visible in frame 0."""
  for _ in range(MAX_PLACEMENT_TRIES):
    hue_offset = rng.uniform()
    blobs = [_random_blob(rng, height, width, (hue_offset + k / num_objects) % 1)
             for k in range(num_objects)]
    if _all_visible(blobs, height, width):
      return blobs
  raise InputError(f'Could not place {num_objects} visible objects in {width}x{height} frames; '
                   'lower data.synthetic.max_objects or raise data.synthetic.height/width.')


def _write_video(frames_dir: pathlib.Path, masks_dir: pathlib.Path, rng: np.random.Generator,
                 num_objects: int, num_frames: int, height: int, width: int) -> None:
  """Renders one video: JPEG frames and palette masks named 00000, 00001, ..."""
  blobs = _place_blobs(rng, num_objects, height, width)
  pan = rng.uniform(-1, 1, 2) * rng.uniform(0.3, 1.2)  # Background pixels per frame, xy.
  margin = int(np.ceil(np.abs(pan).max() * num_frames)) + 2
  background = _background(rng, height + 2 * margin, width + 2 * margin)
  centre = np.array([width, height], np.float32) / 2 + margin
  frames_dir.mkdir(parents=True)
  for t in range(num_frames):
    view = centre + pan * t
    frame = cv2.getRectSubPix(background, (width, height), (float(view[0]), float(view[1])))
    labels = np.zeros((height, width), np.uint8)
    for obj, blob in enumerate(blobs, 1):
      blob.draw(frame, labels, obj, t)
    image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))
    image.save(frames_dir / f'{t:05d}.jpg', quality=95)
    write_label_map(masks_dir / f'{t:05d}.png', labels, binary=False)


def _check_parameters(num_videos: int, num_frames: int, height: int, width: int,
                      max_objects: int, seed: int) -> None:
  """Fails on parameters that cannot make a usable set, naming the config field."""
  if num_videos < 1 or num_frames < 1:
    raise InputError(f'data.synthetic.num_videos={num_videos} and num_frames={num_frames} must '
                     'both be at least 1.')
  if min(height, width) < 32:
    raise InputError(f'data.synthetic.height={height}, width={width}: use at least 32 pixels.')
  if not 1 <= max_objects < 255:
    raise InputError(f'data.synthetic.max_objects={max_objects}: use 1..254 (255 is void).')
  if seed < 0:
    raise InputError(f'data.synthetic.seed={seed}: use a non-negative integer.')


def ensure_synthetic_davis(root: pathlib.Path, num_videos: int, num_frames: int, height: int,
                           width: int, max_objects: int, seed: int) -> pathlib.Path:
  """Generates the synthetic set into `root` (DAVIS-2017 layout, split 'val') unless it is there.

  The same parameters always give the same bytes. A marker file holding the parameters is
  written last, so an interrupted or differently parametrised set is regenerated.

  Args:
    root: the generator's own folder; its synthetic videos are replaced when regenerating.
    num_videos: number of videos; the first has `max_objects` objects, the others 1..max_objects.
    num_frames: frames per video.
    height: frame height in pixels.
    width: frame width in pixels.
    max_objects: most objects in one video.
    seed: random seed.

  Returns:
    `root`, ready for `jvos.data.davis.load_davis(root)`.
  """
  _check_parameters(num_videos, num_frames, height, width, max_objects, seed)
  parameters = json.dumps(dict(num_videos=num_videos, num_frames=num_frames, height=height,
                               width=width, max_objects=max_objects, seed=seed), sort_keys=True)
  marker = root / MARKER
  if marker.is_file() and marker.read_text() == parameters:
    return root
  marker.unlink(missing_ok=True)
  frames_root = root / 'JPEGImages' / '480p'
  masks_root = root / 'Annotations' / '480p'
  # Only our own videos are removed: stale frames or videos of an older set would be read back.
  for stale in [*frames_root.glob(VIDEO_PREFIX + '*'), *masks_root.glob(VIDEO_PREFIX + '*')]:
    shutil.rmtree(stale)
  names = [f'{VIDEO_PREFIX}{v:03d}' for v in range(num_videos)]
  for v, name in enumerate(names):
    rng = np.random.default_rng([seed, v])
    num_objects = max_objects if v == 0 else int(rng.integers(1, max_objects + 1))
    _write_video(frames_root / name, masks_root / name, rng, num_objects, num_frames, height,
                 width)
  split_file = root / 'ImageSets' / '2017' / 'val.txt'
  split_file.parent.mkdir(parents=True, exist_ok=True)
  split_file.write_text(''.join(name + '\n' for name in names))
  marker.write_text(parameters)
  return root

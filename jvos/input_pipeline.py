"""Training input: batches of augmented clips from a `VideoDataset`, for every system.

An example is a clip: T frames of one video with their label maps, the frames chosen by the
sampler the system names (`ClipSpec.sampler`):

  'frame'        one annotated frame (OSVOS);
  'guided_pair'  a random annotated frame of the video as the guide, then an annotated frame
                 and the annotated frame before it (OSMN);
  'pair'         two annotated frames of the video (COSNet);
  'consecutive'  T consecutive frames from an annotated one; frames without a mask are kept,
                 flagged in 'annotated', for systems that step a recurrence over them (RVOS, S2S).

Objects are those of the clip's first frame: up to `ClipSpec.max_objects` of them, chosen at
random when there are more, renumbered 1..K; the others become background. Every frame of a
clip gets the same random scale, flip, crop and colour change. A batch of B clips holds

  'image'      (B, T, h, w, 3) uint8 RGB;
  'labels'     (B, T, h, w) uint8: 0 background, k object k, VOID (255) on void pixels, crop
               padding and frames without a mask, which losses ignore;
  'annotated'  (B, T) bool, the frame has a mask;
  'objects'    (B, K) bool, slot k holds an object;
  'example'    (B,) int32, which anchor the clip came from (stays on the host);

plus what a system's `ClipSpec.prepare` adds (OSMN's guide crops).

Per process, the pipeline is

    anchors (random access over (video, frame) pairs the sampler can start a clip from)
      -> this process's shard: anchors shard_index, shard_index + shard_count, ...
      -> shuffle (seeded, a new permutation every epoch) -> repeat forever
      -> make_clip: sample the other frames, read, choose objects, prepare, augment
      -> read + augment in `data_threads` threads, ahead of the train step
      -> batch to the local batch size

Why grain rather than TFDS/tf.data: it needs no TensorFlow; it reads through a random-access
source, so a shuffle is an index permutation rather than a buffer, and the iterator's position
is a small dict (`get_state`/`set_state`) saved with every checkpoint, so a restarted run sees
exactly the batches it would have seen; per-process sharding (`grain.sharding.ShardOptions`,
`ShardByJaxProcess`) is built in. All randomness (which frames, which objects, augmentation)
comes from `random_map`, which seeds each element from (seed, element position): batches do
not depend on thread timing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import cv2
import grain
import ml_collections
import numpy as np

from jvos.data.video import VOID, Video, VideoDataset
from jvos.errors import InputError

# cv2 runs its own thread pool inside each call; our reader threads already run in parallel.
cv2.setNumThreads(1)

Clip = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """How a system's training examples are made.

  Attributes:
    sampler: one of SAMPLERS.
    length: frames per clip as sampled (the 'consecutive' sampler's T; the others fix theirs).
    max_objects: K, objects kept per clip.
    prepare: (clip, rng) -> clip, run on the full-size clip before augmentation; None: none.
  """
  sampler: str
  length: int = 1
  max_objects: int = 1
  prepare: Callable[[Clip, np.random.Generator], Clip] | None = None


def _annotated(video: Video) -> list[int]:
  return [i for i, name in enumerate(video.frame_names) if name in video.annotation_paths]


def _frame_anchors(video: Video, length: int) -> list[int]:
  del length
  return _annotated(video)


def _frame_clip(video, anchor, rng, length):
  del video, rng, length
  return (anchor,)


def _guided_pair_anchors(video: Video, length: int) -> list[int]:
  del length
  return _annotated(video)[1:]


def _guided_pair_clip(video, anchor, rng, length):
  del length
  annotated = _annotated(video)
  previous = annotated[annotated.index(anchor) - 1]
  return (int(rng.choice(annotated)), previous, anchor)


def _pair_anchors(video: Video, length: int) -> list[int]:
  del length
  annotated = _annotated(video)
  return annotated if len(annotated) > 1 else []


def _pair_clip(video, anchor, rng, length):
  del length
  others = [i for i in _annotated(video) if i != anchor]
  return (anchor, int(rng.choice(others)))


def _consecutive_anchors(video: Video, length: int) -> list[int]:
  return [i for i in _annotated(video) if i + length <= len(video)]


def _consecutive_clip(video, anchor, rng, length):
  del video, rng
  return tuple(range(anchor, anchor + length))


# name -> (anchors(video, length): the frames a clip may start from,
#          frames(video, anchor, rng, length): the frame indices of one clip).
SAMPLERS = {
    'frame': (_frame_anchors, _frame_clip),
    'guided_pair': (_guided_pair_anchors, _guided_pair_clip),
    'pair': (_pair_anchors, _pair_clip),
    'consecutive': (_consecutive_anchors, _consecutive_clip),
}


def _check_spec(spec: ClipSpec) -> None:
  if spec.sampler not in SAMPLERS:
    raise InputError(f'Clip sampler {spec.sampler!r} is not one of {sorted(SAMPLERS)}.')
  if spec.length < 1:
    raise InputError(f'train.clip_length={spec.length} must be at least 1.')
  if not 1 <= spec.max_objects < VOID:
    raise InputError(f'train.max_objects={spec.max_objects} must be in 1..{VOID - 1}.')


class ClipAnchors:
  """grain random-access source: element i is the i-th (video, frame) a clip can start from."""

  def __init__(self, dataset: VideoDataset, spec: ClipSpec):
    _check_spec(spec)
    anchors_of = SAMPLERS[spec.sampler][0]
    self.videos = tuple(dataset.videos)
    self._anchors = tuple((v, i) for v, video in enumerate(self.videos)
                          for i in anchors_of(video, spec.length))
    if not self._anchors:
      longest = max((len(video) for video in self.videos), default=0)
      raise InputError(
          f'The dataset at {dataset.root} has no clips to train on: the {spec.sampler!r} sampler '
          f'needs annotated frames (and clips of {spec.length} frames; the longest video has '
          f'{longest}). Check data.split, or lower train.clip_length.')

  def __len__(self) -> int:
    return len(self._anchors)

  def __getitem__(self, index: int) -> tuple[int, int, int]:
    return (*self._anchors[index], index)

  def __repr__(self) -> str:
    return f'ClipAnchors({len(self)} clips of {len(self.videos)} videos)'


def _read_labels(video: Video, index: int, shape: tuple[int, int]) -> np.ndarray:
  """A frame's label map; all VOID for a frame without a mask (no loss there)."""
  name = video.frame_names[index]
  if name not in video.annotation_paths:
    return np.full(shape, VOID, np.uint8)
  labels = video.annotation(name)
  if labels.shape != shape:
    raise InputError(
        f'Mask {video.annotation_paths[name]} is {labels.shape[::-1]} (WxH) but its frame is '
        f'{shape[::-1]}; resize the mask (nearest neighbour) to the frame.')
  return labels


def choose_objects(labels: np.ndarray, max_objects: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Label maps with up to `max_objects` objects of the first frame renumbered 1..K.

  Returns (labels, objects): the others become background (void stays void), and objects (K,)
  says which slots hold one.
  """
  first = labels[0]
  present = np.flatnonzero(np.bincount(first.ravel(), minlength=VOID + 1)[1:VOID]) + 1
  if len(present) > max_objects:
    present = np.sort(rng.choice(present, max_objects, replace=False))
  lookup = np.zeros(VOID + 1, np.uint8)
  lookup[VOID] = VOID
  lookup[present] = np.arange(1, len(present) + 1)
  return lookup[labels], np.arange(max_objects) < len(present)


def make_clip(anchor: tuple[int, int, int], rng: np.random.Generator, *,
              videos: Sequence[Video], spec: ClipSpec) -> Clip:
  """One raw clip at the frames' own size: frames, label maps, flags (see module docstring)."""
  video_index, frame_index, example = anchor
  video = videos[video_index]
  indices = SAMPLERS[spec.sampler][1](video, frame_index, rng, spec.length)
  images = np.stack([video.frame(i) for i in indices])
  labels = np.stack([_read_labels(video, i, images.shape[1:3]) for i in indices])
  labels, objects = choose_objects(labels, spec.max_objects, rng)
  clip = {'image': images, 'labels': labels,
          'annotated': np.array([video.frame_names[i] in video.annotation_paths
                                 for i in indices]),
          'objects': objects, 'example': np.int32(example)}
  return spec.prepare(clip, rng) if spec.prepare else clip


def crop_size(train_config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`train.crop_size` as (height, width); a single int means a square crop."""
  size = train_config.crop_size
  height, width = (size, size) if isinstance(size, int) else tuple(size)
  if height < 1 or width < 1:
    raise InputError(f'train.crop_size={size!r} must be positive, e.g. 384 or (384, 640).')
  return height, width


def _pad_and_crop(images: np.ndarray, labels: np.ndarray, size: tuple[int, int],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """The same random `size` window of every frame; a short side is padded (labels VOID)."""
  (height, width), (crop_height, crop_width) = labels.shape[1:], size
  pad_y, pad_x = max(crop_height - height, 0), max(crop_width - width, 0)
  if pad_y or pad_x:
    # Centred padding; the image padding is black, but its VOID labels give it no loss.
    padding = ((0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
    images = np.pad(images, padding + ((0, 0),))
    labels = np.pad(labels, padding, constant_values=VOID)
  top = rng.integers(labels.shape[1] - crop_height + 1)
  left = rng.integers(labels.shape[2] - crop_width + 1)
  window = np.s_[:, top:top + crop_height, left:left + crop_width]
  return images[window], labels[window]


def adjust_colour(pixels, brightness, contrast, saturation):
  """Pixels (..., 3), float, numpy or jax, with brightness, contrast and saturation scaled by
  the given factors, clipped to [0, 255]: the colour jitter of training and of fine-tuning.

  Each is an increasing function of the pixel value, so what is brighter stays brighter.
  """
  pixels = pixels * brightness
  mean = pixels.mean()
  pixels = (pixels - mean) * contrast + mean
  grey = pixels.mean(axis=-1, keepdims=True)
  return ((pixels - grey) * saturation + grey).clip(0, 255)


def _jitter_colour(images: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Random brightness, contrast and saturation, each a factor in [1 - s, 1 + s]."""
  factors = rng.uniform(1 - strength, 1 + strength, size=3)
  return np.rint(adjust_colour(images.astype(np.float32), *factors)).astype(np.uint8)


def augment(clip: Clip, rng: np.random.Generator, *, size: tuple[int, int],
            scale_range: tuple[float, float], flip: bool, colour_jitter: float) -> Clip:
  """The same random crop of the same randomly scaled, maybe flipped, frames; every other key
  of the clip is passed through. 'image' becomes (T, h, w, 3) and 'labels' (T, h, w), (h, w)
  being `size`."""
  images, labels = clip['image'], clip['labels']
  scale = rng.uniform(*scale_range)
  height, width = labels.shape[1:]
  scaled = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (w, h).
  images = np.stack([cv2.resize(image, scaled, interpolation=cv2.INTER_LINEAR)
                     for image in images])
  # Nearest neighbour: a label map must not blend object ids into other ids.
  labels = np.stack([cv2.resize(label_map, scaled, interpolation=cv2.INTER_NEAREST)
                     for label_map in labels])
  if flip and rng.random() < 0.5:
    images, labels = images[:, :, ::-1], labels[:, :, ::-1]
  images, labels = _pad_and_crop(images, labels, size, rng)
  if colour_jitter:
    images = _jitter_colour(images, colour_jitter, rng)
  return {**clip, 'image': np.ascontiguousarray(images),
          'labels': np.ascontiguousarray(labels)}


def train_clips(dataset: VideoDataset, train_config: ml_collections.ConfigDict, seed: int,
                shard: grain.sharding.ShardOptions, spec: ClipSpec) -> grain.MapDataset:
  """This process's endless, shuffled stream of augmented clips (not yet batched)."""
  source = ClipAnchors(dataset, spec)
  if len(source) < shard.shard_count:
    raise InputError(f'{len(source)} training clips cannot feed {shard.shard_count} '
                     'processes; train on more sequences or on fewer hosts.')
  anchors = grain.MapDataset.source(source)
  # Strided shards stay balanced (sizes differ by at most one) and are disjoint.
  anchors = anchors[shard.shard_index::shard.shard_count]
  # Each shard gets its own seed: with one seed, every host would draw the same frames,
  # scale, flip and crop at the same position of its stream.
  shard_seed = int(np.random.SeedSequence([seed, shard.shard_index]).generate_state(1)[0])
  load = functools.partial(make_clip, videos=source.videos, spec=spec)
  transform = functools.partial(
      augment, size=crop_size(train_config), scale_range=tuple(train_config.scale_range),
      flip=train_config.flip, colour_jitter=train_config.colour_jitter)
  return anchors.seed(shard_seed).shuffle().repeat().random_map(
      lambda anchor, rng: transform(load(anchor, rng), rng))


def train_iterator(dataset: VideoDataset, train_config: ml_collections.ConfigDict, seed: int,
                   local_batch_size: int, shard: grain.sharding.ShardOptions,
                   spec: ClipSpec) -> grain.DatasetIterator:
  """Batches of `local_batch_size` clips; checkpoint its position with `get_state()`."""
  clips = train_clips(dataset, train_config, seed, shard, spec)
  read_options = grain.ReadOptions(num_threads=train_config.data_threads,
                                   prefetch_buffer_size=train_config.data_prefetch)
  batches = clips.to_iter_dataset(read_options).batch(local_batch_size, drop_remainder=True)
  return iter(batches)

"""Training input: augmented batches of (frame, foreground mask) from a `VideoDataset`.

One example is one annotated frame of one video (every frame in DAVIS val, every 2nd in our
DAVIS-2016 train copy, every 5th in YouTube-VOS train); its target is the foreground mask: 1 on
any object, 0 on background, and VOID (255) where the label map says void or the crop padded,
which losses ignore (as `jvos.models.osvos.loss_fn` does for every value above 1).

Per process, the pipeline is

    AnnotatedFrames (random access over (video, annotated frame))
      -> this process's shard: examples shard_index, shard_index + shard_count, ...
      -> shuffle (seeded, a new permutation every epoch) -> repeat forever
      -> augment: random scale, horizontal flip, pad + random crop, colour jitter (numpy/cv2)
      -> read + augment in `data_threads` threads, ahead of the train step
      -> batch to the local batch size

Why grain rather than TFDS/tf.data: it needs no TensorFlow; it reads through a random-access
source, so a shuffle is an index permutation rather than a buffer, and the iterator's position
is a small dict (`get_state`/`set_state`) saved with every checkpoint, so a restarted run sees
exactly the batches it would have seen; per-process sharding (`grain.sharding.ShardOptions`,
`ShardByJaxProcess`) is built in. Augmentation randomness comes from `random_map`, which seeds
each element from (seed, element position): batches do not depend on thread timing.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import grain
import ml_collections
import numpy as np

from jvos.data.video import VOID, VideoDataset
from jvos.errors import InputError

# cv2 runs its own thread pool inside each call; our reader threads already run in parallel.
cv2.setNumThreads(1)


class AnnotatedFrames:
  """grain random-access source: element i is the i-th annotated frame of the dataset.

  Elements are dicts: 'image' (H, W, 3) uint8 RGB, 'labels' (H, W) uint8 label map, 'example'
  the index i (kept through augmentation and batching, to tell which frames a batch holds).
  """

  def __init__(self, dataset: VideoDataset):
    self._videos = tuple(dataset.videos)
    self._examples = tuple(
        (v, i) for v, video in enumerate(self._videos)
        for i, name in enumerate(video.frame_names) if name in video.annotation_paths)
    if not self._examples:
      raise InputError(f'The dataset at {dataset.root} has no annotated frames to train on; '
                       'training needs frames with a mask in Annotations/ (check data.split).')

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> dict[str, Any]:
    video_index, frame_index = self._examples[index]
    video = self._videos[video_index]
    frame_name = video.frame_names[frame_index]
    image = video.frame(frame_index)
    labels = video.annotation(frame_name)
    if labels.shape != image.shape[:2]:
      raise InputError(
          f'Mask {video.annotation_paths[frame_name]} is {labels.shape[::-1]} (WxH) but its '
          f'frame is {image.shape[1::-1]}; resize the mask (nearest neighbour) to the frame.')
    return {'image': image, 'labels': labels, 'example': np.int32(index)}

  def __repr__(self) -> str:
    return f'AnnotatedFrames({len(self)} frames of {len(self._videos)} videos)'


def crop_size(train_config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`train.crop_size` as (height, width); a single int means a square crop."""
  size = train_config.crop_size
  height, width = (size, size) if isinstance(size, int) else tuple(size)
  if height < 1 or width < 1:
    raise InputError(f'train.crop_size={size!r} must be positive, e.g. 384 or (384, 640).')
  return height, width


def _pad_and_crop(image: np.ndarray, labels: np.ndarray, size: tuple[int, int],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """A random `size` window; a side shorter than the window is padded (labels with VOID)."""
  (height, width), (crop_height, crop_width) = labels.shape, size
  pad_y, pad_x = max(crop_height - height, 0), max(crop_width - width, 0)
  if pad_y or pad_x:
    # Centred padding; the image padding is black, but its VOID labels give it no loss.
    padding = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
    image = np.pad(image, padding + ((0, 0),))
    labels = np.pad(labels, padding, constant_values=VOID)
  top = rng.integers(labels.shape[0] - crop_height + 1)
  left = rng.integers(labels.shape[1] - crop_width + 1)
  window = np.s_[top:top + crop_height, left:left + crop_width]
  return image[window], labels[window]


def _jitter_colour(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Random brightness, contrast and saturation, each a factor in [1 - s, 1 + s].

  Each is an increasing function of the pixel value, so what is brighter stays brighter.
  """
  brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
  pixels = image.astype(np.float32) * brightness
  mean = pixels.mean()
  pixels = (pixels - mean) * contrast + mean
  grey = pixels.mean(axis=-1, keepdims=True)
  pixels = (pixels - grey) * saturation + grey
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def augment(example: dict[str, Any], rng: np.random.Generator, *, size: tuple[int, int],
            scale_range: tuple[float, float], flip: bool,
            colour_jitter: float) -> dict[str, Any]:
  """One training example: a random crop of a randomly scaled, maybe flipped, frame.

  Returns 'image' (h, w, 3) uint8, 'mask' (h, w) uint8 (1 any object, 0 background, VOID on
  void and padding) and 'example' unchanged; (h, w) is `size`.
  """
  image, labels = example['image'], example['labels']
  scale = rng.uniform(*scale_range)
  height, width = labels.shape
  scaled = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (w, h).
  image = cv2.resize(image, scaled, interpolation=cv2.INTER_LINEAR)
  # Nearest neighbour: a label map must not blend object ids into other ids.
  labels = cv2.resize(labels, scaled, interpolation=cv2.INTER_NEAREST)
  if flip and rng.random() < 0.5:
    image, labels = image[:, ::-1], labels[:, ::-1]
  image, labels = _pad_and_crop(image, labels, size, rng)
  if colour_jitter:
    image = _jitter_colour(image, colour_jitter, rng)
  return {
      'image': np.ascontiguousarray(image),
      'mask': np.where(labels == VOID, VOID, labels > 0).astype(np.uint8),
      'example': example['example'],
  }


def train_examples(dataset: VideoDataset, train_config: ml_collections.ConfigDict, seed: int,
                   shard: grain.sharding.ShardOptions) -> grain.MapDataset:
  """This process's endless, shuffled stream of augmented examples (not yet batched)."""
  frames = grain.MapDataset.source(AnnotatedFrames(dataset))
  if len(frames) < shard.shard_count:
    raise InputError(f'{len(frames)} annotated frames cannot feed {shard.shard_count} '
                     'processes; train on more sequences or on fewer hosts.')
  # Strided shards stay balanced (sizes differ by at most one) and are disjoint.
  frames = frames[shard.shard_index::shard.shard_count]
  # Each shard gets its own seed: with one seed, every host would draw the same scale, flip and
  # crop at the same position of its stream.
  shard_seed = int(np.random.SeedSequence([seed, shard.shard_index]).generate_state(1)[0])
  return frames.seed(shard_seed).shuffle().repeat().random_map(functools.partial(
      augment, size=crop_size(train_config), scale_range=tuple(train_config.scale_range),
      flip=train_config.flip, colour_jitter=train_config.colour_jitter))


def train_iterator(dataset: VideoDataset, train_config: ml_collections.ConfigDict, seed: int,
                   local_batch_size: int,
                   shard: grain.sharding.ShardOptions) -> grain.DatasetIterator:
  """Batches of `local_batch_size` examples; checkpoint its position with `get_state()`."""
  examples = train_examples(dataset, train_config, seed, shard)
  read_options = grain.ReadOptions(num_threads=train_config.data_threads,
                                   prefetch_buffer_size=train_config.data_prefetch)
  batches = examples.to_iter_dataset(read_options).batch(local_batch_size, drop_remainder=True)
  return iter(batches)

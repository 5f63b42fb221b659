r"""What tests/test_train.py trains: a tiny model, its loss, a config, a tiny real dataset.

Also a command line, so a test can run (and SIGKILL) training in a separate process:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python tests/train_helper.py --workdir /tmp/run --data /tmp/tiny_davis --steps 12

With --coordinator_address, --num_processes and --process_id, it is one process of a
multi-process run (tests/test_multihost.py starts two on localhost).
"""

import argparse
import json
import pathlib
import time

from absl import logging
import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jvos import input_pipeline
from jvos import train
from jvos.data.video import VOID, read_frame, read_label_map, write_label_map

SEQUENCES = ('bear', 'boat')
FRAMES_PER_SEQUENCE = 4
FRAME_SIZE = (112, 64)  # (width, height): DAVIS 854x480 shrunk about 7.6 times.
# Seconds each train step sleeps, so that a test can kill a run between two checkpoints.
# Read when the step runs, not when it is traced: every run compiles the same program.
step_delay_s = 0.0


def _sleep() -> None:
  time.sleep(step_delay_s)


class TinyNet(nn.Module):
  """Three convolutions from RGB 0..255 to one foreground logit per pixel."""
  features: int = 8

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    jax.debug.callback(_sleep)
    x = images / 255.0 - 0.5
    x = nn.relu(nn.Conv(self.features, (3, 3))(x))
    x = nn.relu(nn.Conv(self.features, (3, 3))(x))
    return nn.Conv(1, (1, 1))(x)[..., 0]


def masked_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of 'any object' over the pixels that are not void."""
  valid = (labels != VOID).astype(jnp.float32)
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, (labels > 0) & (labels != VOID))
  return jnp.sum(per_pixel * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def tiny_loss(params, batch, rng, model=TinyNet()):
  """What jvos.train minimises: TinyNet's masked BCE on one-frame clips."""
  del rng
  logits = model.apply({'params': params}, batch['image'][:, 0].astype(jnp.float32))
  return masked_bce(logits, batch['labels'][:, 0])


CLIP = input_pipeline.ClipSpec('frame', max_objects=8)


def initial_params(seed: int = 0):
  return TinyNet().init(jax.random.PRNGKey(seed), jnp.zeros((1, 48, 48, 3)))['params']


def run(config, workdir, loss_fn=tiny_loss, params=None):
  """jvos.train.train on the tiny set, from TinyNet's initialisation unless `params`."""
  return train.train(config, workdir, loss_fn, initial_params() if params is None else params,
                     CLIP)


def make_config(data_root: pathlib.Path, num_steps: int, **train_overrides) -> (
    ml_collections.ConfigDict):
  """Adam on 48x48 crops, batches of 4, a checkpoint every 3 steps."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      name='davis', root=str(data_root), resolution='480p', split='train',
      sequences=','.join(SEQUENCES), mask_format='auto'))
  config.train = ml_collections.ConfigDict(dict(
      batch_size=4, num_steps=num_steps, optimizer='adam', learning_rate=1e-2, momentum=0.9,
      schedule='cosine', warmup_steps=2, weight_decay=1e-4, grad_clip=1.0,
      checkpoint_every=3, keep_checkpoints=2, log_every=1,
      crop_size=(48, 48), scale_range=(0.7, 1.3), flip=True, colour_jitter=0.2,
      data_threads=2, data_prefetch=8))
  config.train.update(train_overrides)
  config.model = ml_collections.ConfigDict(dict(name='tiny', features=8))
  return config


def make_tiny_davis(davis_root: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
  """The first annotated frames of two real DAVIS-2016 train sequences, shrunk, in the DAVIS
  layout (binary 0/255 masks)."""
  for sequence in SEQUENCES:
    masks = sorted((davis_root / 'Annotations' / '480p' / sequence).glob('*.png'))
    for mask_path in masks[:FRAMES_PER_SEQUENCE]:
      frame = read_frame(davis_root / 'JPEGImages' / '480p' / sequence / (mask_path.stem + '.jpg'))
      frame_path = root / 'JPEGImages' / '480p' / sequence / (mask_path.stem + '.jpg')
      frame_path.parent.mkdir(parents=True, exist_ok=True)
      cv2.imwrite(str(frame_path), cv2.resize(frame, FRAME_SIZE, interpolation=cv2.INTER_AREA)
                  [..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
      labels = cv2.resize(read_label_map(mask_path, binary=True), FRAME_SIZE,
                          interpolation=cv2.INTER_NEAREST)
      write_label_map(root / 'Annotations' / '480p' / sequence / mask_path.name,
                      labels, binary=True)
  return root


def record_examples(path: pathlib.Path) -> None:
  """Makes the trainer append the example ids of each local batch it loads to `path`, one JSON
  list a line, so that a test can tell which frames each process read."""
  global_batch = train.global_batch

  def recording_global_batch(local_batch, *args):
    with path.open('a') as f:
      f.write(json.dumps(local_batch['example'].tolist()) + '\n')
    return global_batch(local_batch, *args)

  train.global_batch = recording_global_batch


def main() -> None:
  global step_delay_s
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--workdir', type=pathlib.Path, required=True)
  parser.add_argument('--data', type=pathlib.Path, required=True)
  parser.add_argument('--steps', type=int, required=True)
  parser.add_argument('--step_delay_s', type=float, default=0.0)
  parser.add_argument('--examples_log', type=pathlib.Path,
                      help='Where to log the example ids of each local batch.')
  parser.add_argument('--coordinator_address', help='host:port of process 0.')
  parser.add_argument('--num_processes', type=int)
  parser.add_argument('--process_id', type=int)
  args = parser.parse_args()
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  if args.examples_log:
    record_examples(args.examples_log)
  step_delay_s = args.step_delay_s
  logging.set_verbosity(logging.INFO)
  run(make_config(args.data, args.steps), args.workdir)
  print(f'devices={jax.device_count()} done')


if __name__ == '__main__':
  main()

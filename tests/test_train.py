"""The shared trainer (jvos/train.py) and its input pipeline (jvos/input_pipeline.py).

Training runs use train_helper.py: a tiny conv net on 48x48 crops of 8 real DAVIS-2016 train
frames shrunk to 112x64. Runs that need their own device count, or a SIGKILL, run it as a
separate process.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy import ndimage

from jvos import input_pipeline
from jvos import train
from jvos.data import build_dataset
from jvos.data.video import VOID
from jvos.errors import InputError
import train_helper

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 12  # Of the runs in separate processes; they checkpoint every 3 steps.
# 1 vs 4 devices: same batches, same maths, but the gradient all-reduce adds in another order.
# After 12 Adam steps the parameters (|p| < 0.5) were seen to differ by at most 3e-8.
DEVICE_COUNT_RTOL, DEVICE_COUNT_ATOL = 1e-5, 1e-6


@pytest.fixture(scope='session')
def tiny_davis(davis2016_root, tmp_path_factory) -> pathlib.Path:
  return train_helper.make_tiny_davis(davis2016_root, tmp_path_factory.mktemp('tiny_davis'))


def start_run(workdir: pathlib.Path, data: pathlib.Path, devices: int = 1,
              step_delay_s: float = 0.0) -> subprocess.Popen:
  """`NUM_STEPS` steps of train_helper.py in a new process with `devices` CPU devices."""
  env = dict(os.environ, PYTHONPATH=str(REPO),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  command = [sys.executable, str(REPO / 'tests' / 'train_helper.py'), '--workdir', str(workdir),
             '--data', str(data), '--steps', str(NUM_STEPS), '--step_delay_s', str(step_delay_s)]
  return subprocess.Popen(command, env=env, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen) -> str:
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 0, output[-5000:]
  return output


def finished_steps(workdir: pathlib.Path) -> list[int]:
  """Checkpoints orbax has completed: it renames <step>.orbax-checkpoint-tmp to <step> last."""
  checkpoints = workdir / 'checkpoints'
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def assert_trees_equal(actual, expected) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


@pytest.fixture(scope='module')
def uninterrupted_runs(tmp_path_factory, tiny_davis) -> dict[int, pathlib.Path]:
  """Device count -> workdir of a run never interrupted; the two run side by side."""
  workdirs = {devices: tmp_path_factory.mktemp(f'{devices}_devices') for devices in (1, 4)}
  processes = [start_run(workdir, tiny_davis, devices) for devices, workdir in workdirs.items()]
  for process, devices in zip(processes, workdirs):
    assert f'devices={devices} done' in finish(process)
  return workdirs


def test_loss_decreases_and_curves_are_written(tmp_path, tiny_davis):
  config = train_helper.make_config(tiny_davis, num_steps=40, checkpoint_every=40)
  train_helper.run(config, tmp_path)

  rows = [json.loads(line) for line in (tmp_path / 'train_metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in rows] == list(range(1, 41))
  losses = np.array([row['loss'] for row in rows])
  assert 0.6 < losses[:5].mean() < 0.8  # About log(2): the untrained net guesses 0.5.
  assert losses[-5:].mean() < 0.75 * losses[:5].mean(), losses
  learning_rates = [row['learning_rate'] for row in rows]
  assert learning_rates[0] == 0.0 and learning_rates[2] == pytest.approx(1e-2)  # 2 warm-up steps.
  assert learning_rates[-1] < 1e-4  # Cosine decay to 0.
  assert all(row['steps_per_s'] > 0 for row in rows)
  assert (tmp_path / 'loss_curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert finished_steps(tmp_path) == [40]


def test_same_params_on_one_and_four_devices(uninterrupted_runs):
  one_device = train.load_params(uninterrupted_runs[1] / train.PARAMS_FILE)
  four_devices = train.load_params(uninterrupted_runs[4] / train.PARAMS_FILE)
  initial = train_helper.initial_params()
  # The runs moved the parameters far beyond the tolerance, and agree within it.
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), one_device, initial)
  assert min(jax.tree.leaves(moved)) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=DEVICE_COUNT_RTOL, atol=DEVICE_COUNT_ATOL), four_devices, one_device)


def test_checkpoint_restores_state_and_data_position(tmp_path, tiny_davis):
  config = train_helper.make_config(tiny_davis, num_steps=4, checkpoint_every=2)
  final = train_helper.run(config, tmp_path)
  manager = train.checkpoint_manager(tmp_path, config.train)
  assert manager.all_steps() == [2, 4]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          final)

  def fresh_iterator():
    return input_pipeline.train_iterator(build_dataset(config.data, tmp_path), config.train,
                                         config.seed, 4, grain.sharding.NoSharding(),
                                         train_helper.CLIP)

  restored_iterator = fresh_iterator()
  restored = train.restore_checkpoint(manager, 4, abstract, restored_iterator)
  manager.close()
  assert int(restored.step) == 4
  assert_trees_equal(restored, final)  # Params, optimizer state, step and RNG key, bitwise.
  assert int(jax.tree.leaves(restored.opt_state)[0]) == 4  # Updates counted by the optimizer.

  expected_iterator = fresh_iterator()
  for _ in range(4):  # The batches the 4 steps took.
    next(expected_iterator)
  expected, actual = next(expected_iterator), next(restored_iterator)
  assert_trees_equal(actual, expected)

  exported = train.load_params(tmp_path / train.PARAMS_FILE)
  assert_trees_equal(exported, train.to_host(final.params))
  model_config = json.loads((tmp_path / train.MODEL_CONFIG_FILE).read_text())
  assert model_config == {'name': 'tiny', 'features': 8}


def test_resume_after_sigkill_is_exact_and_ignores_unfinished_checkpoints(
    tmp_path, tiny_davis, uninterrupted_runs):
  workdir = tmp_path / 'run'
  process = start_run(workdir, tiny_davis, step_delay_s=0.3)
  deadline = time.monotonic() + 120
  while not ((workdir / 'checkpoints').is_dir() and finished_steps(workdir)):
    assert process.poll() is None, process.communicate()[0][-5000:]
    assert time.monotonic() < deadline, 'no checkpoint within 120 s'
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.communicate()
  assert process.returncode == -signal.SIGKILL
  kept = finished_steps(workdir)
  assert max(kept) < NUM_STEPS
  # One row a step (log_every=1), each appended whole: the steps the killed run got through.
  metrics_path = workdir / train.METRICS_FILE
  killed_rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  assert [row['step'] for row in killed_rows] == list(range(1, len(killed_rows) + 1))
  assert len(killed_rows) >= max(kept)
  # What a kill during a save leaves: a later step, still under orbax's temporary name, its
  # files cut short.
  unfinished = workdir / 'checkpoints' / f'{NUM_STEPS - 1}.orbax-checkpoint-tmp-1234567'
  (unfinished / 'state').mkdir(parents=True)
  (unfinished / 'state' / '_METADATA').write_text('{"tree_metadata": {"par')
  (unfinished / 'data').mkdir()
  (unfinished / 'data' / 'process_0-of-1.json').write_text('{"next_index": 10')

  output = finish(start_run(workdir, tiny_davis))
  assert f'Resuming from the checkpoint of step {max(kept)} ' in output
  # The rerun ran only the steps after the checkpoint (a run from scratch would end with the
  # same parameters, so only this shows that it resumed).
  rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  assert rows[:len(killed_rows)] == killed_rows
  assert [row['step'] for row in rows[len(killed_rows):]] == list(range(max(kept) + 1,
                                                                        NUM_STEPS + 1))
  assert_trees_equal(train.load_params(workdir / train.PARAMS_FILE),
                     train.load_params(uninterrupted_runs[1] / train.PARAMS_FILE))
  assert finished_steps(workdir) == [NUM_STEPS - 3, NUM_STEPS]


class DriftingNet(nn.Module):
  """TinyNet plus a scalar `drift` that SGD at learning rate 1 raises by exactly 1 a step."""

  @nn.compact
  def __call__(self, images):
    drift = self.param('drift', nn.initializers.zeros, ())
    return train_helper.TinyNet()(images), drift


def drifting_loss(params, batch, rng):
  """d loss / d drift = -1; NaN once drift reaches 2, i.e. from step 3 on."""
  del rng
  logits, drift = DriftingNet().apply({'params': params}, batch['image'][:, 0] * 1.0)
  blow_up = jnp.where(drift > 1.5, jnp.nan, 0.0)
  return train_helper.masked_bce(logits, batch['labels'][:, 0]) - drift + blow_up


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, tiny_davis):
  # Metrics are read every 10 steps or at a checkpoint: the NaN of step 3 is found at step 4.
  config = train_helper.make_config(
      tiny_davis, num_steps=6, checkpoint_every=2, log_every=10, optimizer='sgd',
      learning_rate=1.0, momentum=0.0, schedule='constant', warmup_steps=0, weight_decay=0.0,
      grad_clip=0.0)
  with pytest.raises(InputError, match=r'diverged at step 3: loss nan.*last good checkpoint, '
                                       r'step 2, is kept'):
    params = DriftingNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3)))['params']
    train_helper.run(config, tmp_path, drifting_loss, params)
  assert finished_steps(tmp_path) == [2]
  assert not (tmp_path / train.PARAMS_FILE).exists()
  manager = train.checkpoint_manager(tmp_path, config.train)
  restored = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  manager.close()
  assert float(restored['params']['drift']) == 2.0
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored))


def colour_coded_clip() -> dict:
  """Two 40x60 frames, bright exactly where the label map has an object: two objects forming
  a wedge that grows taller to the right (so a flip shows), cut by a void band; the second
  frame is the first shifted right by 5 pixels."""
  rows, columns = np.mgrid[:40, :60]
  labels = np.where(rows >= 40 - 0.6 * columns, np.where(columns < 30, 1, 2), 0).astype(np.uint8)
  labels[:, 45:48] = VOID
  image = np.where(labels[..., None] == 0, 40, 200).astype(np.uint8).repeat(3, axis=-1)
  image[labels == VOID] = 120
  shift = lambda x, fill: np.concatenate([np.full_like(x[:, :5], fill), x[:, :-5]], axis=1)
  return {'image': np.stack([image, shift(image, 40)]),
          'labels': np.stack([labels, shift(labels, 0)]),
          'annotated': np.array([True, True]), 'example': np.int32(7)}


def test_augmented_clips_have_the_crop_size_and_keep_masks_aligned():
  clip = colour_coded_clip()
  flipped = unflipped = padded = 0
  for seed in range(100):
    out = input_pipeline.augment(clip, np.random.default_rng(seed), size=(32, 48),
                                 scale_range=(0.5, 1.5), flip=True, colour_jitter=0.3)
    assert out['image'].shape == (2, 32, 48, 3) and out['image'].dtype == np.uint8
    assert out['labels'].shape == (2, 32, 48) and set(np.unique(out['labels'])) <= {0, 1, 2, VOID}
    assert out['example'] == 7 and out['annotated'].all()
    for image, labels in zip(out['image'], out['labels']):
      mask, void = np.isin(labels, (1, 2)), labels == VOID
      # Away from label edges (where the image was interpolated), brightness tells the mask.
      brightness = image.mean(axis=-1)
      interior = ndimage.binary_erosion(mask, iterations=2, border_value=1)
      exterior = ndimage.binary_erosion(~mask & ~void, iterations=2, border_value=1)
      if interior.any() and exterior.any():
        assert brightness[interior].min() > brightness[exterior].max()
      # Object 1 stays on the narrow end of the wedge, object 2 on the tall one.
      if (labels == 1).any() and (labels == 2).any():
        heights = [np.sum(labels == k, axis=0).max() for k in (1, 2)]
        assert heights[0] <= heights[1] + 1
    padded += (out['labels'][0] == VOID).all(axis=1).any()
    # The wedge grows taller to the right, or to the left once flipped; both frames alike.
    slopes = []
    for labels in out['labels']:
      heights = np.isin(labels, (1, 2)).sum(axis=0)
      visible = np.nonzero(heights)[0]
      slopes.append(np.corrcoef(visible, heights[visible])[0, 1]
                    if len(set(heights[visible])) > 1 else 0.0)
    if slopes[0] and slopes[1]:
      assert np.sign(slopes[0]) == np.sign(slopes[1])  # One flip for the whole clip.
      flipped += slopes[0] < 0
      unflipped += slopes[0] > 0
  assert flipped > 20 and unflipped > 20
  assert padded > 0  # At scale < 0.8 the frame is smaller than the crop.


def test_same_transform_for_every_frame_of_a_clip():
  # A clip of one frame twice: whatever the random scale, flip, crop and colour, both match.
  clip = colour_coded_clip()
  clip = {**clip, 'image': clip['image'][[0, 0]], 'labels': clip['labels'][[0, 0]]}
  for seed in range(10):
    out = input_pipeline.augment(clip, np.random.default_rng(seed), size=(32, 48),
                                 scale_range=(0.5, 1.5), flip=True, colour_jitter=0.3)
    np.testing.assert_array_equal(out['image'][0], out['image'][1])
    np.testing.assert_array_equal(out['labels'][0], out['labels'][1])


def test_choose_objects_keeps_at_most_k_of_the_first_frame_renumbered():
  labels = np.zeros((2, 4, 6), np.uint8)
  labels[0, 0, :3] = [3, 5, 9]
  labels[1, 1, :4] = [9, 3, 7, VOID]  # 7 is not in the first frame: background.
  chosen_sets = set()
  for seed in range(20):
    out, objects = input_pipeline.choose_objects(labels, 2, np.random.default_rng(seed))
    assert objects.tolist() == [True, True]
    assert set(np.unique(out)) <= {0, 1, 2, VOID} and (out[1, 1, 3] == VOID)
    assert out[1, 1, 2] == 0  # Object 7 became background.
    kept = tuple(int(labels[0, 0, i]) for i in range(3) if out[0, 0, i])
    chosen_sets.add(kept)
    # Renumbered in id order, the same in both frames.
    assert [out[0, 0, list(labels[0, 0, :3]).index(obj)] for obj in kept] == [1, 2]
    for obj, new in zip(kept, (1, 2)):
      assert out[1][labels[1] == obj].tolist() == [new] * int((labels[1] == obj).sum())
  assert len(chosen_sets) == 3  # Every pair of the three gets chosen for some seed.
  out, objects = input_pipeline.choose_objects(labels, 5, np.random.default_rng(0))
  assert objects.tolist() == [True, True, True, False, False]


def test_shards_are_disjoint_and_cover_the_data(tiny_davis):
  config = train_helper.make_config(tiny_davis, num_steps=1, colour_jitter=0.0)
  dataset = build_dataset(config.data, tiny_davis)
  num_frames = len(input_pipeline.ClipAnchors(dataset, train_helper.CLIP))
  assert num_frames == len(train_helper.SEQUENCES) * train_helper.FRAMES_PER_SEQUENCE
  epochs = []
  for index in range(2):
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=2)
    stream = input_pipeline.train_clips(dataset, config.train, seed=0, shard=shard,
                                        spec=train_helper.CLIP)
    half = num_frames // 2
    examples = [int(stream[i]['example']) for i in range(2 * half)]  # Two epochs.
    epochs.append(examples)
    # Every epoch is a permutation of the shard.
    assert sorted(examples[:half]) == sorted(examples[half:])
    assert len(set(examples[:half])) == half
  assert set(epochs[0]).isdisjoint(epochs[1])
  assert set(epochs[0]) | set(epochs[1]) == set(range(num_frames))


def test_batches_are_deterministic_by_seed(tiny_davis):
  config = train_helper.make_config(tiny_davis, num_steps=1)
  dataset = build_dataset(config.data, tiny_davis)

  def first_batch(seed):
    return next(input_pipeline.train_iterator(dataset, config.train, seed, 4,
                                              grain.sharding.NoSharding(), train_helper.CLIP))

  assert_trees_equal(first_batch(0), first_batch(0))
  assert not np.array_equal(first_batch(0)['image'], first_batch(1)['image'])

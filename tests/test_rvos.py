"""RVOS: the ConvLSTM cell, both recurrences, slot matching, the loss, and its bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import rvos_davis17, rvos_zeroshot_davis16
from jvos import systems
from jvos.errors import InputError
from jvos.models import rvos
from jvos.models.layers import ConvLSTMCell
from jvos.segment import VideoInput
from jvos.systems import rvos as rvos_system

SIZE = (64, 96)


def test_conv_lstm_cell_follows_the_lstm_equations():
  cell = ConvLSTMCell(4, forget_bias=1.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 6, 3))
  h, c = jnp.zeros((1, 5, 6, 4)), jax.random.normal(jax.random.PRNGKey(1), (1, 5, 6, 4))
  params = cell.init(jax.random.PRNGKey(2), x, (h, c))
  # With every gate pre-activation 0: i = o = 1/2, f = sigmoid(1), g = tanh(0) = 0.
  zeros = jax.tree.map(jnp.zeros_like, params)
  new_h, new_c = cell.apply(zeros, x, (h, c))
  np.testing.assert_allclose(new_c, jax.nn.sigmoid(1.0) * c, rtol=1e-6)
  np.testing.assert_allclose(new_h, 0.5 * jnp.tanh(new_c), rtol=1e-6)
  relu_cell = ConvLSTMCell(4, activation=jax.nn.relu)
  _, relu_c = relu_cell.apply(zeros, x, (h, c))
  np.testing.assert_allclose(relu_c, 0.5 * c, rtol=1e-6)


def test_mask_pyramid_keeps_a_one_pixel_object_at_every_scale():
  masks = jnp.zeros((1, 64, 96)).at[0, 37, 50].set(1.0)
  sizes = [(2, 3), (4, 6), (8, 12), (16, 24)]
  for level, size in zip(rvos.mask_pyramid(masks, sizes), sizes):
    assert level.shape == (1, *size, 1) and float(level.sum()) == 1.0
    y, x = np.unravel_index(int(jnp.argmax(level)), size)
    assert (y, x) == (37 * size[0] // 64, 50 * size[1] // 96)


def small(config, **model):
  config.model.update(width_multiplier=0.35, hidden=32, **model)
  return config


@pytest.fixture(scope='module')
def one_shot():
  config = small(rvos_davis17.get_config())
  model = rvos_system.create(config.model)
  return config, model, rvos_system.initial_params(model, config.model, 0)


def decode(model, params, masks, temporal=None):
  images = jax.random.uniform(jax.random.PRNGKey(3), (1, *SIZE, 3), maxval=255)
  if temporal is None:
    temporal = rvos.initial_temporal(model, masks.shape[0], 1, SIZE)
  return model.apply({'params': params}, images, temporal, masks)


@pytest.mark.parametrize('spatial', [True, False])
def test_spatial_recurrence_lets_a_slot_see_the_slots_before_it(spatial):
  config = small(rvos_davis17.get_config(), spatial=spatial)
  model = rvos_system.create(config.model)
  params = rvos_system.initial_params(model, config.model, 0)
  masks = jnp.zeros((2, 1, *SIZE))
  other = masks.at[0, 0, 10:30, 10:40].set(1.0)  # Only slot 0's previous mask changes.
  (base, _), (changed, _) = decode(model, params, masks), decode(model, params, other)
  assert float(jnp.abs(base[0] - changed[0]).max()) > 1e-4  # Slot 0 sees its own mask.
  slot1 = float(jnp.abs(base[1] - changed[1]).max())
  assert slot1 > 1e-5 if spatial else slot1 == 0.0


@pytest.mark.parametrize('temporal', [True, False])
def test_temporal_recurrence_carries_a_slot_from_frame_to_frame(temporal):
  config = small(rvos_davis17.get_config(), temporal=temporal)
  model = rvos_system.create(config.model)
  params = rvos_system.initial_params(model, config.model, 0)
  masks = jnp.zeros((2, 1, *SIZE))
  _, state = decode(model, params, masks.at[:, :, 20:40, 30:60].set(1.0))
  fresh, _ = decode(model, params, masks)
  carried, _ = decode(model, params, masks, temporal=state)
  difference = float(jnp.abs(fresh - carried).max())
  assert difference > 1e-5 if temporal else difference == 0.0


def test_extra_objects_cost_the_decoder_only(one_shot):
  _, model, params = one_shot
  images = jnp.zeros((1, *SIZE, 3))

  def flops(slots):
    temporal = rvos.initial_temporal(model, slots, 1, SIZE)
    masks = jnp.zeros((slots, 1, *SIZE))
    compiled = jax.jit(lambda p: model.apply({'params': p}, images, temporal, masks)).lower(
        params).compile()
    return compiled.cost_analysis()['flops']

  one, two, five = flops(1), flops(2), flops(5)
  decoder = two - one
  encoder = one - decoder
  assert five == pytest.approx(one + 4 * decoder, rel=0.02)  # Linear in slots...
  assert encoder > 2 * decoder  # ...from a fixed encoder cost that dominates one slot.


def test_hungarian_matching_is_optimal_where_greedy_is_not():
  # Slot 0 overlaps object 0 best (IoU 0.6 against 0.5), but giving object 0 to slot 0 leaves
  # slot 1 with object 1 at IoU ~0; the optimum gives slot 0 object 1 and slot 1 object 0.
  targets = np.zeros((2, 1, 10, 10), np.float32)
  targets[0, 0, :, :6] = 1
  targets[1, 0, :, 6:] = 1
  probabilities = np.zeros((2, 1, 10, 10), np.float32)
  probabilities[0, 0, :, 2:10] = 1  # Covers 4 columns of object 0 and all 4 of object 1.
  probabilities[1, 0, :, 0:5] = 1  # Inside object 0.
  order = np.asarray(rvos_system.match_slots(jnp.asarray(probabilities), jnp.asarray(targets),
                                             jnp.ones((1, 2), bool)))
  assert order.tolist() == [[1, 0]]
  # An object that is not there goes to whichever slot is left.
  order = np.asarray(rvos_system.match_slots(jnp.asarray(probabilities), jnp.asarray(targets),
                                             jnp.array([[False, True]])))
  assert order.tolist() == [[1, 0]]


def clip_batch(slots, annotated=(True, False, True)):
  labels = np.zeros((1, 3, *SIZE), np.uint8)
  labels[:, :, 8:30, 10:40] = 1
  labels[:, :, 35:60, 50:90] = 2
  labels[:, [t for t, a in enumerate(annotated) if not a]] = 255
  rng = np.random.default_rng(0)
  return {'image': rng.integers(0, 255, (1, 3, *SIZE, 3)).astype(np.uint8), 'labels': labels,
          'annotated': np.array([annotated]), 'objects': np.arange(slots)[None] < 2}


def test_frames_without_masks_add_no_loss_and_teacher_forcing_changes_it(one_shot):
  config, model, params = one_shot
  batch = clip_batch(config.model.max_objects)
  loss = lambda b, forcing: float(rvos_system.loss(model, params, b, jax.random.PRNGKey(0),
                                                   teacher_forcing=forcing,
                                                   empty_slot_weight=0.0))
  base = loss(batch, 1.0)
  garbage = {**batch, 'labels': batch['labels'].copy()}
  garbage['image'] = batch['image'].copy()
  assert 0 < base < 3
  # Frame 1 has no mask: whatever its labels would say, the loss is the same...
  garbage['labels'][:, 1] = 255
  assert loss(garbage, 1.0) == pytest.approx(base, rel=1e-6)
  # ...and own predictions instead of the ground truth change what later frames are given.
  dense = clip_batch(config.model.max_objects, annotated=(True, True, True))
  assert abs(loss(dense, 0.0) - loss(dense, 1.0)) > 1e-3


def test_zero_shot_loss_does_not_depend_on_the_object_order():
  config = small(rvos_zeroshot_davis16.get_config())
  model = rvos_system.create(config.model)
  params = rvos_system.initial_params(model, config.model, 0)
  batch = clip_batch(config.model.max_objects, annotated=(True, True, True))
  swapped = {**batch, 'labels': np.where(batch['labels'] == 1, 2,
                                         np.where(batch['labels'] == 2, 1, batch['labels']))}
  loss = lambda b: float(rvos_system.loss(model, params, b, jax.random.PRNGKey(0),
                                          teacher_forcing=0.0, empty_slot_weight=1.0))
  assert loss(swapped) == pytest.approx(loss(batch), rel=1e-5)


def test_more_objects_than_slots_names_the_limit(one_shot):
  config, model, params = one_shot
  config = config.copy_and_resolve_references()
  config.model.max_objects = 2
  segmenter = rvos_system.RecurrentSegmenter(model, params, config)
  given = {k: (0, np.ones(SIZE, bool)) for k in range(3)}
  with pytest.raises(InputError, match=r'3 objects.*2 slots.*model.max_objects=3'):
    segmenter.start(VideoInput('v', (), SIZE, given))


@pytest.mark.parametrize('task', ['semi-supervised', 'unsupervised'])
def test_weights_of_the_other_task_are_refused(task, tmp_path, one_shot):
  from jvos import train  # pylint: disable=g-import-not-at-top
  config, model, params = one_shot
  model_config = config.model.to_dict()
  model_config['one_shot'] = task == 'unsupervised'  # The wrong variant for the task.
  train.export_params(tmp_path, params, model_config)
  run = rvos_davis17.get_config() if task == 'semi-supervised' else (
      rvos_zeroshot_davis16.get_config())
  run.weights = str(tmp_path / train.PARAMS_FILE)
  with pytest.raises(InputError, match='RVOS weights .* asks for'):
    systems.build_segmenter(run)


def test_online_learning_fits_the_given_frame_with_the_encoder_frozen(one_shot):
  config, model, params = one_shot
  frame = np.random.default_rng(0).integers(0, 255, (*SIZE, 3)).astype(np.uint8)
  masks = np.zeros((2, *SIZE), bool)
  masks[0, 10:40, 20:50] = True
  masks[1, 30:60, 60:90] = True

  def first_step(steps):
    tuning = config.copy_and_resolve_references()
    tuning.finetune.update(steps=steps, learning_rate=1e-2)
    segmenter = rvos_system.RecurrentSegmenter(model, params, tuning)
    state = segmenter.start(VideoInput('v', (), SIZE, {k: (0, masks[k]) for k in range(2)}))
    state = segmenter.add_objects(state, frame, [0, 1], masks)
    _, probabilities = segmenter.step(state, frame)
    return state['params'], probabilities

  iou = lambda p: float(np.mean(rvos_system.soft_iou(p, masks.astype(np.float32), 1.0)))
  _, before = first_step(0)
  tuned, after = first_step(20)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), tuned, params)
  assert not any(jax.tree.leaves(changed['encoder']))
  assert all(jax.tree.leaves({k: v for k, v in changed.items() if k != 'encoder'}))
  assert iou(after) > iou(before) + 0.1


def test_zero_shot_refuses_online_fine_tuning(tmp_path, one_shot):
  from jvos import train  # pylint: disable=g-import-not-at-top
  config, _, params = one_shot
  train.export_params(tmp_path, params, {**config.model.to_dict(), 'one_shot': False})
  run = rvos_zeroshot_davis16.get_config()
  run.weights = str(tmp_path / train.PARAMS_FILE)
  run.finetune.steps = 50
  with pytest.raises(InputError, match=r'finetune.steps=50.*zero-shot.*steps=0'):
    systems.build_segmenter(run)

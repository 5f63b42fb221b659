"""OSMN: its priors, guide crops, modulation, training clips and batched segmenting."""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import osmn_davis16
from jvos import finetune
from jvos import input_pipeline
from jvos import systems
from jvos import train
from jvos.data.davis import load_davis
from jvos.data.synthetic import ensure_synthetic_davis
from jvos.errors import InputError
from jvos.models import osmn
from jvos.segment import VideoInput, segment_video
from jvos.systems import osmn as osmn_system

GUIDE = 32


def small_config() -> ml_collections.ConfigDict:
  """The released config's architecture, narrowed so that tests run in seconds."""
  config = osmn_davis16.get_config()
  config.model.update(width_multiplier=0.35, guide_width_multiplier=0.35, guide_size=GUIDE,
                      segmentation_weights='', dropout=0.0)
  config.finetune.update(steps=0)
  return config


@pytest.fixture(scope='module')
def small_model():
  config = small_config()
  model = osmn_system.create(config.model)
  return config, model, osmn_system.initial_params(model, config.model, seed=0)


def test_prior_is_the_robust_centre_and_spread_of_the_mask():
  mask = np.zeros((60, 80), bool)
  mask[10:31, 20:61] = True
  mask[55, 79] = True  # A stray pixel far away moves neither the median nor the MAD.
  cy, cx, sy, sx = np.asarray(osmn.prior_from_mask(jnp.asarray(mask)))
  assert (cy, cx) == (20, 40)  # The medians of rows 10..30 and of columns 20..60.
  # |row - 20| over rows 10..30 has median 5; |column - 40| over columns 20..60, 10.
  assert sy == pytest.approx(osmn.MAD_TO_SIGMA * 5) and sx == pytest.approx(osmn.MAD_TO_SIGMA * 10)
  thin = np.zeros((60, 80), bool)
  thin[40, 5:75] = True
  assert float(osmn.prior_from_mask(jnp.asarray(thin))[2]) == osmn.MIN_SIGMA
  empty = osmn.prior_from_mask(jnp.zeros((60, 80)))
  assert np.asarray(empty).tolist() == [0, 0, 0, 0]


def test_gaussian_map_peaks_at_the_centre_on_any_grid_and_is_zero_when_empty():
  priors = jnp.array([[30.0, 50.0, 8.0, 12.0], [0.0, 0.0, 0.0, 0.0]])
  full = np.asarray(osmn.gaussian_map(priors, (64, 96), (64, 96)))
  assert np.unravel_index(full[0].argmax(), full[0].shape) == (30, 50)
  assert full[0].max() == pytest.approx(1.0)
  assert full[0, 30, 50 + 12] == pytest.approx(np.exp(-0.5), rel=1e-5)  # One sigma along x.
  assert np.all(full[1] == 0) and np.all(np.isfinite(full))
  # At stride 8, feature pixel (3, 6) covers image pixels 24..31 x 48..55: it holds the peak.
  coarse = np.asarray(osmn.gaussian_map(priors, (8, 12), (64, 96)))
  assert np.unravel_index(coarse[0].argmax(), coarse[0].shape) == (3, 6)


def test_visual_guide_crops_the_object_and_fills_the_background():
  image = np.zeros((100, 120, 3), np.uint8)
  image[...] = (0, 0, 255)
  mask = np.zeros((100, 120), bool)
  mask[20:60, 30:50] = True
  image[mask] = (255, 0, 0)
  crop = osmn_system.visual_guide(image, mask, 64)
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  red = np.all(crop == (255, 0, 0), axis=-1)
  fill = np.all(crop == osmn_system.GUIDE_FILL, axis=-1)
  # The box fills the crop, less the 3% padding on each side, which shows the fill colour
  # (the 1.2 rows above the 40-row box become the crop's first row).
  assert red.mean() > 0.8 and fill[0].all() and fill[-1].all()
  assert not np.any(np.all(crop == (0, 0, 255), axis=-1))  # No background pixel survives.
  # Jittered crops differ from one another but still show mostly the object.
  rng = np.random.default_rng(0)
  jittered = [osmn_system.visual_guide(image, mask, 64, rng) for _ in range(4)]
  assert len({j.tobytes() for j in jittered}) == 4
  assert all(np.all(j == (255, 0, 0), axis=-1).mean() > 0.6 for j in jittered)


@pytest.mark.parametrize('where', ['tiny', 'border', 'empty'])
def test_visual_guide_of_tiny_border_and_empty_objects(where):
  image = np.full((50, 70, 3), 200, np.uint8)
  mask = np.zeros((50, 70), bool)
  if where == 'tiny':
    mask[25, 30] = True
  elif where == 'border':
    mask[0:20, 60:70] = True
  crop = osmn_system.visual_guide(image, mask, GUIDE)
  assert crop.shape == (GUIDE, GUIDE, 3)
  grey = np.all(crop == 200, axis=-1).mean()
  if where == 'empty':
    assert np.all(crop == osmn_system.GUIDE_FILL)
  elif where == 'tiny':
    # One pixel: the box is widened to 4, and the object shows at the crop's centre.
    centre = crop[GUIDE // 2 - 2:GUIDE // 2 + 2, GUIDE // 2 - 2:GUIDE // 2 + 2]
    assert np.abs(centre.astype(int) - 200).max() < 40 and grey < 0.5
  else:
    assert grey > 0.5  # Cut by the frame's edge, the object still fills most of its crop.


def test_bad_architecture_fields_are_named():
  config = small_config()
  config.model.modulated_layers = 'block3,conv4_1'
  with pytest.raises(InputError, match=r"model.modulated_layers names \['conv4_1'\].*block16"):
    osmn_system.create(config.model)
  config = small_config()
  config.model.guide_size = 16
  with pytest.raises(InputError, match='model.guide_size=16'):
    osmn_system.create(config.model)


def test_untrained_modulators_leave_the_osvos_network_unchanged(small_model):
  _, model, params = small_model
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 40, 56, 3), maxval=255)
  guides = jax.random.uniform(jax.random.PRNGKey(2), (2, GUIDE, GUIDE, 3), maxval=255)
  priors = jnp.array([[20.0, 28.0, 6.0, 9.0], [5.0, 5.0, 5.0, 5.0]])
  modulated = model.apply({'params': params}, images, guides, priors)
  plain = model.segmentation.apply({'params': params['segmentation']}, images)
  np.testing.assert_allclose(modulated['fused'], plain['fused'], atol=1e-5)

  # Once the modulators have weights, the guide changes the scales, and the scales and the
  # prior each change the output.
  changed = jax.tree.map(lambda x: x, params)
  changed['visual_modulator']['scales']['kernel'] = jax.random.normal(
      jax.random.PRNGKey(3), params['visual_modulator']['scales']['kernel'].shape)
  changed['shift_kernel'] = jnp.ones_like(params['shift_kernel'])
  scales = model.apply({'params': changed}, guides, method=osmn.OSMN.scales)
  other_scales = model.apply({'params': changed}, 255 - guides, method=osmn.OSMN.scales)
  # (A random backbone's pooled features are small, about 5e-3: so is the difference.)
  assert float(jnp.abs(scales - other_scales).mean()) > 5e-4
  segment = lambda s, p: model.apply({'params': changed}, images, s, p,
                                     method=osmn.OSMN.segment)['fused']
  base = segment(scales, priors)
  assert float(jnp.abs(base - segment(scales * 0.5, priors)).mean()) > 1e-3
  assert float(jnp.abs(base - segment(scales, priors[::-1])).mean()) > 1e-3


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
  return ensure_synthetic_davis(tmp_path_factory.mktemp('synthetic'), num_videos=2,
                                num_frames=8, height=72, width=96, max_objects=3, seed=5)


def test_guided_pair_clips_hold_a_guide_crop_and_the_previous_and_current_frame(synthetic_root):
  config = small_config()
  dataset = load_davis(pathlib.Path(synthetic_root))
  spec = osmn_system.clip(config)
  source = input_pipeline.ClipAnchors(dataset, spec)
  assert len(source) == sum(len(v) - 1 for v in dataset)  # Every annotated frame but the first.
  seen_guides = set()
  for index in range(len(source)):
    rng = np.random.default_rng(index)
    video_index, frame_index, _ = source[index]
    frames = input_pipeline.SAMPLERS['guided_pair'][1](
        dataset.videos[video_index], frame_index, np.random.default_rng(index), 1)
    assert frames[1:] == (frame_index - 1, frame_index)
    seen_guides.add(frames[0])
    clip = input_pipeline.make_clip(source[index], rng, videos=source.videos, spec=spec)
    assert clip['image'].shape[0] == 2 and clip['labels'].shape[0] == 2
    assert clip['guide'].shape == (GUIDE, GUIDE, 3) and clip['objects'].tolist() == [True]
    assert set(np.unique(clip['labels'])) <= {0, 1}  # One object kept, the others background.
  assert len(seen_guides) > 3  # Guides come from all over the videos, not frame 0 alone.


def test_training_lowers_the_loss(synthetic_root, tmp_path):
  config = small_config()
  config.data.root, config.data.split = str(synthetic_root), 'val'
  config.train.update(split='val', batch_size=4, num_steps=30, learning_rate=3e-3,
                      warmup_steps=0, crop_size=(64, 64), scale_range=(0.8, 1.0),
                      checkpoint_every=30, log_every=1, data_threads=2)
  model = osmn_system.create(config.model)
  config.data.split, config.data.sequences = config.train.split, ''
  train.train(config, tmp_path, osmn_system.make_loss(config, model),
              osmn_system.initial_params(model, config.model, 0), osmn_system.clip(config))
  losses = [json.loads(line)['loss']
            for line in (tmp_path / train.METRICS_FILE).read_text().splitlines()]
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  assert json.loads((tmp_path / train.MODEL_CONFIG_FILE).read_text())['name'] == 'osmn'


def test_segmenter_follows_every_object_in_one_batch_and_survives_an_empty_mask(
    small_model, synthetic_root, tmp_path):
  config, model, params = small_model
  segmenter = osmn_system.ModulatedSegmenter(model, params, config)
  video = load_davis(pathlib.Path(synthetic_root)).videos[0]
  assert len(video.object_ids) == 3
  segment_video(segmenter, video, tmp_path, 'semi-supervised')
  assert sorted(p.stem for p in tmp_path.glob('*.png')) == list(video.frame_names)
  # An untrained network may lose an object: its prior then stays where it was, finite.
  frame = np.zeros((72, 96, 3), np.uint8)
  masks = np.zeros((3, 72, 96), bool)
  masks[:, 10:30, 10:30] = True
  state = segmenter.start(VideoInput('v', (), (72, 96), {k: (0, masks[k]) for k in range(3)}))
  state = segmenter.add_objects(state, frame, [0, 1, 2], masks)
  before = np.asarray(state['priors'])
  assert before[:, 2:].min() >= osmn.MIN_SIGMA
  # A fused bias of -100 makes every probability 0: every object is lost.
  state['params']['segmentation']['fuse_bias'] = jnp.full_like(
      state['params']['segmentation']['fuse_bias'], -100.0)
  state, scores = segmenter.step(state, frame)
  assert scores.shape == (3, 72, 96) and np.isfinite(scores).all()
  np.testing.assert_array_equal(np.asarray(state['priors']), before)


def test_objects_sharing_one_network_score_as_with_a_copy_each(small_model):
  # Without fine-tuning the segmenter holds one network for all objects (finetune.ObjectParams):
  # the same answers as the stacked copies a fine-tuned segmenter holds, at a fraction of the cost.
  config, model, params = small_model
  segmenter = osmn_system.ModulatedSegmenter(model, params, config)
  state = segmenter.start(VideoInput('v', (), (64, 96), {k: (0, None) for k in range(3)}))
  assert state['params'] is segmenter.params  # One network, not three copies.
  rng = np.random.default_rng(0)
  frame = jnp.asarray(rng.uniform(0, 255, (64, 96, 3)), jnp.float32)
  scales = jnp.asarray(rng.uniform(0.5, 1.5, state['scales'].shape), jnp.float32)
  priors = jnp.array([[20, 30, 8, 8], [40, 60, 10, 6], [30, 10, 5, 12]], jnp.float32)
  step = jax.jit(osmn_system._step, static_argnums=(0, 1))  # pylint: disable=protected-access
  shared = step(model, None, params, scales, priors, frame)
  copies = step(model, 0, finetune.ObjectParams(per_object=True).start(params, 3), scales,
                priors, frame)
  assert np.abs(np.asarray(shared[1][0] - shared[1][1])).max() > 1e-3  # Objects differ...
  for got, want in zip(shared, copies):  # ...and each is what its own copy gives.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_a_shared_network_cannot_be_given_to_one_object():
  tree = {'w': jnp.ones(3)}
  shared = finetune.ObjectParams(per_object=False)
  held = shared.start(tree, 2)
  assert held is tree and shared.get(held, 1) is tree and shared.set(held, 1, tree) is tree
  with pytest.raises(ValueError, match='per_object=True'):
    shared.set(held, 1, {'w': jnp.zeros(3)})
  copies = finetune.ObjectParams(per_object=True)
  held = copies.set(copies.start(tree, 2), 1, {'w': jnp.zeros(3)})
  np.testing.assert_array_equal(copies.get(held, 0)['w'], np.ones(3))
  np.testing.assert_array_equal(copies.get(held, 1)['w'], np.zeros(3))


def test_weights_of_another_system_are_refused_naming_both(tmp_path):
  released = pathlib.Path(osmn_davis16.get_config().model.segmentation_weights)
  (tmp_path / train.PARAMS_FILE).write_bytes(released.read_bytes())
  (tmp_path / train.MODEL_CONFIG_FILE).write_bytes(
      (released.parent / train.MODEL_CONFIG_FILE).read_bytes())
  config = osmn_davis16.get_config()
  config.weights = str(tmp_path / train.PARAMS_FILE)
  with pytest.raises(InputError, match=r"weights of 'osvos'.*model.name='osmn'"):
    systems.build_segmenter(config)

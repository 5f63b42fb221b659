"""COSNet: reference frames, cached reference features, short videos, and its bad input."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cosnet_davis16, osvos_davis16
from jvos import systems, train
from jvos.data.davis import load_davis
from jvos.data.synthetic import ensure_synthetic_davis
from jvos.errors import InputError
from jvos.models import cosnet
from jvos.segment import segment_video
from jvos.systems import cosnet as cosnet_system


def test_references_spread_over_the_video_and_never_outnumber_it():
  assert cosnet_system.reference_indices(50, 5) == [0, 12, 24, 37, 49]
  assert cosnet_system.reference_indices(3, 5) == [0, 1, 2]
  assert cosnet_system.reference_indices(1, 5) == [0]


@pytest.fixture(scope='module')
def small():
  config = cosnet_davis16.get_config()
  config.model.update(width_multiplier=0.35)
  model = cosnet_system.create(config.model)
  return config, model, cosnet_system.initial_params(model, config.model, 0)


def test_a_frame_attends_to_what_its_reference_holds(small):
  _, model, params = small
  a, b = (jax.random.uniform(jax.random.PRNGKey(k), (1, 64, 96, 3), maxval=255) for k in (0, 1))
  head = jax.tree.map(lambda x: x, params)
  head['head']['gate']['kernel'] = jnp.ones_like(params['head']['gate']['kernel'])
  # The classifier prior's head starts at zero; any weights make it answer.
  head['head']['logits']['kernel'] = jnp.ones_like(params['head']['logits']['kernel'])
  features = lambda x: model.apply({'params': head}, x, method=cosnet.COSNet.features)
  attend = lambda f, r: model.apply({'params': head}, f, r, (64, 96), method=cosnet.COSNet.attend)
  logits_ab = attend(features(a), features(b))
  assert logits_ab.shape == (1, 64, 96)
  assert float(jnp.abs(logits_ab - attend(features(a), features(a))).max()) > 1e-5


@pytest.fixture(scope='module')
def video(tmp_path_factory):
  root = ensure_synthetic_davis(tmp_path_factory.mktemp('synthetic'), num_videos=1,
                                num_frames=4, height=64, width=96, max_objects=1, seed=2)
  return load_davis(pathlib.Path(root)).videos[0]


@pytest.mark.parametrize('num_frames', [1, 4])
def test_reference_features_are_computed_once_per_video(small, video, num_frames, tmp_path):
  config, model, params = small
  assert config.segment.references == 5
  segmenter = cosnet_system.CoAttentionSegmenter(model, params, config.segment)
  counted = {'references': 0, 'frames': 0}
  features, probabilities = segmenter._features, segmenter._probabilities
  segmenter._features = lambda *a: counted.__setitem__('references', counted['references'] + 1) or (
      features(*a))
  segmenter._probabilities = lambda *a: counted.__setitem__('frames', counted['frames'] + 1) or (
      probabilities(*a))
  short = type(video)(video.name, video.frame_paths[:num_frames], {}, {})
  segment_video(segmenter, short, tmp_path, 'unsupervised')
  # min(5, frames) references, encoded once; then one pass per frame, which encodes that frame.
  assert counted == {'references': num_frames, 'frames': num_frames}
  assert len(list(tmp_path.glob('*.png'))) == num_frames


def test_a_one_shot_config_given_cosnet_weights_names_both(small, tmp_path):
  config, _, params = small
  train.export_params(tmp_path, params, config.model.to_dict())
  one_shot = osvos_davis16.get_config()
  one_shot.weights = str(tmp_path / train.PARAMS_FILE)
  with pytest.raises(InputError, match=r"weights of 'cosnet'.*model.name='osvos'"):
    systems.build_segmenter(one_shot)
  zero_shot = cosnet_davis16.get_config()
  zero_shot.update(task='semi-supervised', weights=str(tmp_path / train.PARAMS_FILE))
  with pytest.raises(InputError, match=r"segments only \('unsupervised',\)"):
    systems.build_segmenter(zero_shot)


def test_deeplab_alone_finds_the_dog(davis2016_root, weights_dir):
  from configs import deeplab_davis16  # pylint: disable=g-import-not-at-top
  config = deeplab_davis16.get_config()
  config.model.pretrained = str(weights_dir / 'deeplabv3_mnv2_pascal_257_float.tflite')
  config.model.output_stride = 16
  segmenter = systems.build_segmenter(config)
  from jvos.data.video import read_frame, read_label_map  # pylint: disable=g-import-not-at-top
  frame = read_frame(davis2016_root / 'JPEGImages' / '480p' / 'dog' / '00020.jpg')
  truth = read_label_map(davis2016_root / 'Annotations' / '480p' / 'dog' / '00020.png', True) > 0
  _, scores = segmenter.step(segmenter.start(None), frame)
  found = scores[0] > 0.5
  assert (found & truth).sum() / (found | truth).sum() > 0.6


def test_with_the_classifier_prior_training_starts_from_deeplab(davis2016_root, weights_dir):
  # The head's correction starts at zero, so an untrained COSNet answers as DeepLabV3 does.
  from configs import deeplab_davis16  # pylint: disable=g-import-not-at-top
  from jvos.data.video import read_frame  # pylint: disable=g-import-not-at-top
  tflite = str(weights_dir / 'deeplabv3_mnv2_pascal_257_float.tflite')
  config = cosnet_davis16.get_config()
  config.model.pretrained = tflite
  assert config.model.classifier_prior
  model = cosnet_system.create(config.model)
  config.segment.update(references=1, flip=False)
  segmenter = cosnet_system.CoAttentionSegmenter(
      model, cosnet_system.initial_params(model, config.model, 0), config.segment)
  frame = read_frame(davis2016_root / 'JPEGImages' / '480p' / 'dog' / '00020.jpg')
  _, untrained = segmenter.step(segmenter._features(segmenter.params, frame[None] * 1.0), frame)
  baseline_config = deeplab_davis16.get_config()
  baseline_config.model.update(pretrained=tflite, output_stride=config.model.output_stride)
  baseline = systems.build_segmenter(baseline_config)
  _, expected = baseline.step(baseline.start(None), frame)
  # Only the upsampling differs (half-pixel centres here, align-corners in the TFLite export).
  assert np.mean(np.abs(untrained - expected)) < 0.01
  assert np.mean((untrained > 0.5) != (expected > 0.5)) < 0.005


def test_flip_averages_the_frame_and_its_mirror_against_the_same_references(small, video):
  config, model, params = small
  params = jax.tree.map(lambda x: x, params)
  params['head']['logits']['kernel'] = jnp.ones_like(params['head']['logits']['kernel'])
  frames = [np.asarray(f, np.float32) for f in (video.frame(0), video.frame(1))]
  answers = {}
  for flip in (False, True):
    segment = config.segment.copy_and_resolve_references()
    segment.update(references=1, flip=flip)
    segmenter = cosnet_system.CoAttentionSegmenter(model, params, segment)
    references = segmenter._features(segmenter.params, jnp.asarray(frames[0][None]))
    answers[flip] = [segmenter.step(references, f)[1][0] for f in (frames[1], frames[1][:, ::-1])]
  plain, mirrored = answers[False]
  np.testing.assert_allclose(answers[True][0], (plain + mirrored[:, ::-1]) / 2, atol=1e-5)
  assert np.abs(mirrored[:, ::-1] - plain).max() > 1e-4  # The flip changes something.

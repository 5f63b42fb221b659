"""Shared fixtures: the real DAVIS-2016 subset that sits beside the checkout in ../shared."""

import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
DAVIS2016 = SHARED / 'data' / 'davis2016'
WEIGHTS = SHARED / 'weights'
# The 10 val sequences present in ../shared/data/davis2016.
DAVIS2016_VAL = ('camel', 'car-roundabout', 'dog', 'drift-chicane', 'drift-straight', 'goat',
                 'horsejump-high', 'motocross-jump', 'paragliding-launch', 'soapbox')


@pytest.fixture(scope='session')
def davis2016_root() -> pathlib.Path:
  assert DAVIS2016.is_dir(), f'the real DAVIS-2016 subset is expected at {DAVIS2016}'
  return DAVIS2016


@pytest.fixture(scope='session')
def weights_dir() -> pathlib.Path:
  assert WEIGHTS.is_dir(), f'the TFLite weights are expected at {WEIGHTS}'
  return WEIGHTS


# Fine-tuning steps of `released_osvos_120`: the released parent on DAVIS goat at 120 rows
# scores J&F 0.20 alone, 0.37 after 30 steps, 0.49 after 100 (tests/test_osvos.py).
SMALL_OSVOS_STEPS = 100
SMALL_OSVOS_HEIGHT = 120


@pytest.fixture(scope='session')
def released_osvos_120():
  """(config, segmenter): configs/osvos_davis16.py, the released parent fine-tuned
  SMALL_OSVOS_STEPS steps, segmenting at SMALL_OSVOS_HEIGHT rows (120x214 for DAVIS frames).

  Built once: compiling its fine-tuning loop takes about a minute on 2 cores, and every test
  that segments 120x214 frames with it reuses the compiled loop.
  """
  from configs import osvos_davis16  # pylint: disable=g-import-not-at-top
  from jvos import systems  # pylint: disable=g-import-not-at-top
  config = osvos_davis16.get_config()
  config.finetune.steps = SMALL_OSVOS_STEPS
  config.segment.max_height = SMALL_OSVOS_HEIGHT
  # The network's own answers: the tests compare networks; TTA and online adaptation are
  # tested on their own.
  config.segment.flip = False
  config.online.every = 0
  return config, systems.build_segmenter(config)

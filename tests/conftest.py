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

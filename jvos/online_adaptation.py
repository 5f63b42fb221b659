"""Online adaptation (OnAVOS, Voigtlaender and Leibe 2017): a fine-tuned network keeps learning
during the video from its own confident answers.

After every `every`-th frame each object's network takes `steps` more fine-tuning steps, half
on the given first frame and half on the frame just scored, whose targets (`pseudo_labels`)
are the confident pixels near the object's previous mask as the object and everything far from
that mask as background. `jvos.finetune.ObjectTuning` runs it for the segmenters that tune one
network per object (OSVOS, S2S) in the shared compiled fine-tuning loop; this module holds what
needs no JAX: the `online` config section and the targets, so configs import it without
importing JAX.
"""

from __future__ import annotations

import math

import cv2
import ml_collections
import numpy as np

from jvos import errors
from jvos.data.video import VOID
from jvos.errors import with_defaults


def default_config() -> ml_collections.ConfigDict:
  """The `online` section: online adaptation during the video (OnAVOS; off by default).

  every: adapt each object's network after every `every` frames (0: never); steps: fine-tuning
  steps per adaptation (half of them on the given frame, so the network does not drift onto
  its own mistakes), with the `finetune` optimizer at `learning_rate` (each adaptation starts
  Adam afresh, whose first steps move every weight by about the learning rate: OnAVOS adapts
  more gently than it fine-tunes); positive: probability above which a pixel is taken as the
  object; negative_distance: pixels (at the working size) further than this from the object's
  previous mask are taken as background, whatever the network says.
  """
  return ml_collections.ConfigDict(dict(every=0, steps=10, learning_rate=1e-5, positive=0.97,
                                        negative_distance=220))


def settings(section: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
  """The `online` section, checked, with its defaults (a config without one: off)."""
  defaults = default_config()
  section = with_defaults(section or ml_collections.ConfigDict(), defaults, 'online')
  for field, low, high, whole in (('every', 0, math.inf, True), ('steps', 1, math.inf, True),
                                  ('learning_rate', 0, 1, False), ('positive', 0.5, 1, False),
                                  ('negative_distance', 0, math.inf, False)):
    errors.number(section, 'online', field, defaults, low, high, whole=whole)
  return section


def pseudo_labels(probabilities: np.ndarray, previous: np.ndarray, positive: float,
                  negative_distance: float) -> np.ndarray | None:
  """OnAVOS's training targets for one object on the frame just scored, or None (object lost).

  1 where the network is confident (probability > `positive`) and the pixel is not far from
  the object's previous mask; 0 further than `negative_distance` from that mask (a distractor
  there is background, however object-like); VOID (no loss) in between.
  """
  if not previous.any():
    return None
  far = cv2.distanceTransform((~previous).astype(np.uint8), cv2.DIST_L2, 5) > negative_distance
  confident = (probabilities > positive) & ~far
  if not confident.any():
    return None
  labels = np.full(probabilities.shape, VOID, np.float32)
  labels[far] = 0
  labels[confident] = 1
  return labels

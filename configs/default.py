"""The fields every config has; on its own, the flow baseline on a generated multi-object set.

    python launch.py --config configs/default.py   # generates data in runs/default/synthetic_data
    python launch.py --config configs/default.py --config.data.root=/data/DAVIS

(`python launch.py` with no --config runs configs/quickstart.py, OSVOS fine-tuned.)

Every experiment config is a `get_config()` file like this one; any field can be overridden
on the command line with --config.<field>=<value>.
"""

import ml_collections

from jvos import postprocess
from jvos import temporal_prior


# Validation while training, shared by every trainable system's `train` section: every
# validate_every steps (0: never) the weights so far segment validate_sequences (comma-separated,
# of data.root's val split) at validate_height rows, and their J&F joins the training curves.
TRAIN_VALIDATION = dict(validate_every=0, validate_sequences='', validate_height=240)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = 'segment'  # segment | evaluate | train | finetune; --mode overrides.
  # 'semi-supervised' (one-shot: first masks given) or 'unsupervised' (zero-shot).
  config.task = 'semi-supervised'
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'davis'  # davis | youtube_vos | video
  config.data.root = ''  # Empty: generate the synthetic demo set into <workdir>/synthetic_data.
  config.data.resolution = '480p'
  config.data.split = 'val'
  config.data.sequences = ''  # Comma-separated names; empty: the whole split.
  config.data.mask_format = 'auto'  # auto | binary (DAVIS-2016 0/255) | palette (object ids)
  config.data.synthetic = ml_collections.ConfigDict(dict(
      num_videos=3, num_frames=20, height=240, width=320, max_objects=3, seed=0))

  # The system (jvos/systems/<name>.py) and its architecture; learned systems also name
  # `weights`, the params.msgpack they segment with.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'flow'
  config.model.preset = 'medium'  # OpenCV DIS preset: ultrafast | fast | medium.

  config.segment = ml_collections.ConfigDict()
  # Frames taller than this are segmented at this height (masks are still written at the
  # frame's size): full-resolution DAVIS costs what 480p costs. 0: the frame's own size.
  config.segment.max_height = 480
  # Compute dtype of a learned system's network ('bfloat16' on GPU/TPU); empty: the weights'.
  config.segment.dtype = ''
  # Per-frame scorers (OSVOS, COSNet): test-time augmentation, jvos/test_time_augmentation.py.
  # flip: the mirrored frame scored too; scales: image scales averaged ((1.0,): the frame as is).
  config.segment.flip = False
  config.segment.scales = (1.0,)

  # Refinement of every method's per-object scores before they are merged: the dense CRF
  # (postprocess.crf=True); the fields are documented in jvos/postprocess.py (CRFParams).
  config.postprocess = postprocess.default_config()
  # One-shot systems: each object's scores kept near its previous mask (method mask | flow;
  # none: off); the fields are documented in jvos/temporal_prior.py.
  config.temporal_prior = temporal_prior.default_config()

  config.output = ml_collections.ConfigDict()
  config.output.overlays = False  # Also write <workdir>/overlays/<video>/<frame>.jpg.

  config.evaluation = ml_collections.ConfigDict()
  config.evaluation.workers = 2  # Processes scoring sequences in parallel.
  return config

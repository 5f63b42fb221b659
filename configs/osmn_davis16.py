"""OSMN on DAVIS-2016: one modulated forward pass per frame from the released weights.

Each frame's scores then pass the shared test-time levers (flow prior, dense CRF; both off with
--config.temporal_prior.method=none --config.postprocess.crf=False).

    # Segment with the released weights (experiments/osmn_davis16/), no fine-tuning:
    python launch.py --config configs/osmn_davis16.py --config.data.root=/data/DAVIS2016 \
        --config.data.sequences=dog,goat --workdir runs/osmn
    # Train your own (resumes if rerun), from the released OSVOS parent and the ImageNet
    # MobileNetV2 as the guide backbone, e.g. on composites of DAVIS-2016 train:
    python launch.py --config configs/osmn_davis16.py --mode train --config.data.root=COMPOSITES \
        --config.model.guide_pretrained=/weights/mobilenet_v2_1.0_224_imagenet_uint8.tflite
    # The paper's online variant: fine-tune on each object's first frame before segmenting.
    python launch.py --config configs/osmn_davis16.py --config.finetune.steps=50 ...

The same config segments a DAVIS-2017-layout root (palette masks, several objects): every
object is followed in one batched forward per frame and the objects are merged by argmax.
experiments/osmn_davis16/README.md says how the released weights were trained.
"""

import os

import ml_collections

from configs import default

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = default.get_config()
  config.weights = os.path.join(_REPO, 'experiments', 'osmn_davis16', 'params.msgpack')

  # Architecture of weights trained with --mode train (segmenting reads the weights' own).
  config.model = ml_collections.ConfigDict(dict(
      name='osmn',
      # The segmentation network: OSVOS's, as its parent.
      backbone='mobilenet_v2', width_multiplier=0.5, output_stride=16, input_style='tflite',
      dtype='float32',
      # Start from an OSVOS parent (params.msgpack), or else a backbone file (as OSVOS's
      # model.pretrained); empty: random.
      segmentation_weights=os.path.join(_REPO, 'experiments', 'osvos_parent', 'params.msgpack'),
      pretrained='',
      # The visual modulator's backbone, its weights (.tflite for mobilenet_v2, .pth/.h5 for
      # vgg16) and the guide crop's side in pixels.
      guide_backbone='mobilenet_v2', guide_width_multiplier=1.0, guide_input_style='tflite',
      guide_pretrained='', guide_size=224,
      # Layers modulated (comma-separated); empty: conv3_1..conv5_3 for vgg16, block3..block16
      # for mobilenet_v2. visual/spatial off: without that modulator (ablations).
      modulated_layers='', visual=True, spatial=True, dropout=0.2))

  config.train = ml_collections.ConfigDict(dict(
      **default.TRAIN_VALIDATION,
      split='train', sequences='',
      batch_size=8, num_steps=2000, optimizer='adam', learning_rate=3e-4, momentum=0.9,
      schedule='cosine', warmup_steps=100, weight_decay=1e-4, grad_clip=1.0,
      checkpoint_every=250, keep_checkpoints=2, log_every=50,
      crop_size=(256, 256), scale_range=(0.5, 1.0), flip=True, colour_jitter=0.2,
      data_threads=4, data_prefetch=16,
      # The previous mask's prior is perturbed so the network copes with its own errors:
      # centre by up to +-prior_shift sigma, spread by a factor up to x/ prior_spread.
      prior_shift=0.2, prior_spread=1.4,
      # Param path prefixes left as they are (e.g. 'segmentation': train the modulators only).
      frozen='',
      init_weights=''))  # Continue from trained OSMN weights (params.msgpack).

  # Optional online fine-tuning on each object's given frame (0: none, the default).
  config.finetune = ml_collections.ConfigDict(dict(
      steps=0, batch_size=1, optimizer='adam', learning_rate=1e-4, momentum=0.9,
      schedule='constant', warmup_steps=0, weight_decay=0.0, grad_clip=0.0,
      max_scale=1.2, max_shift=0.1, max_rotation=0.0, colour_jitter=0.0))

  # Test-time levers shared with OSVOS and RVOS: each object kept near its flow-carried
  # previous mask (jvos/temporal_prior.py) and the dense CRF on the scores
  # (jvos/postprocess.py). They pay on DAVIS-2016 and on the composites alike: the rows
  # osmn and osmn-no-levers of experiments/results.md.
  config.temporal_prior.method = 'flow'
  config.postprocess.crf = True
  return config

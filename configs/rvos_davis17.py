"""RVOS one-shot (RVOS-Mask) on a DAVIS-2017-layout set: every object in one recurrent pass.

    # Segment with the released weights (experiments/rvos_davis17/): palette masks on a
    # DAVIS-2017 root, 0/255 masks on a DAVIS-2016 one.
    python launch.py --config configs/rvos_davis17.py --config.data.root=/data/DAVIS2017 \
        --config.data.sequences=a,b --workdir runs/rvos
    # The same with the network first fine-tuned on each video's first frame (OL, ~2 s a step
    # on 2 CPU cores at 480p with three objects):
    python launch.py --config configs/rvos_davis17.py --config.finetune.steps=100 ...
    # Train your own (resumes if rerun), e.g. on the composites of DAVIS-2016 train
    # (python -m jvos.data.composites ... --split train), backbone from the ImageNet TFLite file:
    python launch.py --config configs/rvos_davis17.py --mode train --config.data.root=COMPOSITES \
        --config.model.pretrained=/weights/mobilenet_v2_1.0_224_imagenet_uint8.tflite

experiments/rvos_davis17/README.md says how the released weights were trained.
"""

import os

import ml_collections

from configs import default

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = default.get_config()
  config.weights = os.path.join(_REPO, 'experiments', 'rvos_davis17', 'params.msgpack')

  # Architecture of weights trained with --mode train (segmenting reads the weights' own).
  config.model = ml_collections.ConfigDict(dict(
      name='rvos', backbone='mobilenet_v2', width_multiplier=1.0, input_style='tflite',
      pretrained='',  # Backbone weights (.tflite for mobilenet_v2, .pth for resnet50/101).
      hidden=128,  # Decoder size: layers of 128, 64, 32, 16 channels, as the paper.
      one_shot=True,
      max_objects=10,  # Slots: objects per clip in training, at most per video one-shot.
      spatial=True, temporal=True,  # The two recurrences (off: the paper's ablations).
      dtype='float32'))

  config.train = ml_collections.ConfigDict(dict(
      **default.TRAIN_VALIDATION,
      split='train', sequences='',
      batch_size=4, num_steps=1500, optimizer='adam', learning_rate=1e-3, momentum=0.9,
      schedule='cosine', warmup_steps=50, weight_decay=1e-6, grad_clip=1.0,
      checkpoint_every=250, keep_checkpoints=2, log_every=25,
      # Slots per training clip (0: model.max_objects); the composites hold 1-3 objects.
      max_objects=0,
      clip_length=5, crop_size=(256, 256), scale_range=(0.5, 1.0), flip=True,
      colour_jitter=0.2, data_threads=4, data_prefetch=8,
      # The official code trains the backbone at lr 1e-6: frozen here, which also spares its
      # backward pass. Empty to train it too.
      frozen='encoder',
      # Probability that a clip's previous masks are the ground truth rather than the model's
      # own detached predictions (1: teacher forcing, the paper's first stage).
      teacher_forcing=1.0,
      empty_slot_weight=0.0,  # Zero-shot only (see jvos/systems/rvos.py).
      init_weights=''))  # Continue from a trained run of RVOS (a curriculum's next stage).

  # Online fine-tuning of the video's network on its first frame, every object at once
  # (jvos/systems/rvos.py; not in the paper); 0: none. Adam at 1e-3 beat 1e-4 on the composites
  # by 0.09 J&F, for 100 steps (experiments/rvos_davis17/README.md).
  config.finetune = ml_collections.ConfigDict(dict(
      steps=0, batch_size=1, optimizer='adam', learning_rate=1e-3, momentum=0.9,
      schedule='constant', warmup_steps=0, weight_decay=0.0, grad_clip=0.0,
      max_scale=1.2, max_shift=0.1, max_rotation=0.0, colour_jitter=0.0, frozen='encoder'))

  # Test-time levers shared with OSVOS: each object kept near its flow-carried previous mask
  # (jvos/temporal_prior.py) and the dense CRF on the scores (jvos/postprocess.py); J&F and
  # their cost with and without in experiments/rvos_davis17/README.md.
  config.temporal_prior.method = 'flow'
  config.postprocess.crf = True
  return config

"""YouTube-VOS seq2seq (S2S) on DAVIS-2016: a ConvLSTM per object, started from its first mask.

Each frame's scores then pass the shared test-time levers (flow prior, dense CRF; both off with
--config.temporal_prior.method=none --config.postprocess.crf=False).

    # Segment with the released weights (experiments/s2s_davis16/), no online learning:
    python launch.py --config configs/s2s_davis16.py --config.data.root=/data/DAVIS2016 \
        --config.data.sequences=dog,goat --workdir runs/s2s
    # Online learning (OL): fine-tune on each object's first frame, ConvLSTM and backbone frozen:
    python launch.py --config configs/s2s_davis16.py --config.finetune.steps=100 ...
    # Train your own (resumes if rerun), backbones from the ImageNet TFLite file:
    python launch.py --config configs/s2s_davis16.py --mode train --config.data.root=/data/DAVIS2016 \
        --config.model.pretrained=/weights/mobilenet_v2_1.0_224_imagenet_uint8.tflite

The same config segments a DAVIS-2017-layout root (one state per object, merged by argmax);
configs/s2s_ytvos.py runs it on a YouTube-VOS root. experiments/s2s_davis16/README.md says how
the released weights were trained.
"""

import os

import ml_collections

from configs import default
from jvos import online_adaptation

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = default.get_config()
  config.weights = os.path.join(_REPO, 'experiments', 's2s_davis16', 'params.msgpack')

  # Architecture of weights trained with --mode train (segmenting reads the weights' own).
  config.model = ml_collections.ConfigDict(dict(
      name='s2s', backbone='mobilenet_v2', width_multiplier=1.0, input_style='tflite',
      pretrained='',  # Backbone weights (.tflite, .pth, .h5), for initializer and encoder.
      hidden=128,  # ConvLSTM channels at 1/32 (the paper: 512 on VGG-16).
      # State activation: 'relu' is the paper's, but its unbounded state drifted over videos
      # longer than the training clips (J&F 0.225 against 0.519 for the released tanh weights,
      # experiments/s2s_davis16/README.md).
      lstm_activation='tanh',
      skips=True,  # Decoder stages take the encoder's features at their scale.
      initializer=True,  # Off: zero state and the previous mask into the encoder (ablation).
      dtype='float32'))

  config.train = ml_collections.ConfigDict(dict(
      **default.TRAIN_VALIDATION,
      split='train', sequences='',
      batch_size=4, num_steps=1500, optimizer='adam', learning_rate=3e-4, momentum=0.9,
      schedule='cosine', warmup_steps=50, weight_decay=1e-5, grad_clip=1.0,
      checkpoint_every=250, keep_checkpoints=2, log_every=25,
      # Clips of 8 frames, at crops of DAVIS frames scaled by 0.5-1 (the paper: 5-11 frames at
      # 256x448); what 2 CPU cores train in an hour.
      clip_length=8, crop_size=(224, 224), scale_range=(0.5, 1.0), flip=True,
      colour_jitter=0.2, data_threads=4, data_prefetch=8,
      # The backbones stay as pretrained (also spares their backward pass); empty: train them.
      frozen='backbone',
      init_weights=''))

  # Online learning (the paper's OL row) on each object's given frame; 0: none. The paper tunes
  # everything but the ConvLSTM (frozen='lstm'; Adam at 1e-4 scored 0.696 with the levers below,
  # 1e-3 worse); leaving the backbone as pretrained too and tuning the rest at 1e-3, as RVOS's OL
  # does, scored 0.714 and 0.728 over two seeds of OL's random copies
  # (experiments/s2s_davis16/README.md).
  config.finetune = ml_collections.ConfigDict(dict(
      steps=0, batch_size=1, optimizer='adam', learning_rate=1e-3, momentum=0.9,
      schedule='constant', warmup_steps=0, weight_decay=0.0, grad_clip=0.0,
      max_scale=1.2, max_shift=0.1, max_rotation=0.0, colour_jitter=0.0,
      frozen='lstm,backbone'))

  # Online adaptation during the video (OnAVOS, as OSVOS's; off: 0): each object's network
  # tuned again after every `every`-th frame on its confident pixels and its given frame, the
  # same parameters frozen as OL. After OL, every=5 scored 0.702 against 0.714 / 0.728 without:
  # +0.07-0.21 on the three sequences where the object changes, -0.02 to -0.16 on the other
  # seven (experiments/s2s_davis16/README.md). Fields: jvos/online_adaptation.py.
  config.online = online_adaptation.default_config()
  config.online.learning_rate = 1e-4

  # Test-time levers shared with OSVOS, OSMN and RVOS: each object kept near its flow-carried
  # previous mask (jvos/temporal_prior.py) and the dense CRF on the scores
  # (jvos/postprocess.py). J&F on DAVIS-2016 val 0.519 -> 0.582 without OL, 0.678 -> 0.696
  # with the paper's OL; composites 0.225 -> 0.279 (rows s2s* of experiments/results.md).
  config.temporal_prior.method = 'flow'
  config.postprocess.crf = True
  return config

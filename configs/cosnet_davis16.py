"""COSNet on DAVIS-2016: zero-shot primary-object segmentation by co-attention, no mask given.

    # Segment with the released weights (experiments/cosnet_davis16/): 0/255 foreground masks,
    # scored with the unsupervised protocol on every frame.
    python launch.py --config configs/cosnet_davis16.py --config.data.root=/data/DAVIS2016 \
        --config.data.sequences=dog,goat --workdir runs/cosnet
    # Train your own on DAVIS-2016 train (resumes if rerun), from the DeepLabV3 TFLite file:
    python launch.py --config configs/cosnet_davis16.py --mode train --config.data.root=/data/DAVIS2016 \
        --config.model.pretrained=/weights/deeplabv3_mnv2_pascal_257_float.tflite
    # Without the test-time levers (the mirrored frame, the dense CRF): twice as fast.
    python launch.py --config configs/cosnet_davis16.py --config.segment.flip=False \
        --config.postprocess.crf=False ...

experiments/cosnet_davis16/README.md says how the released weights were trained.
"""

import os

import ml_collections

from configs import default

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = default.get_config()
  config.task = 'unsupervised'
  config.data.mask_format = 'binary'
  config.weights = os.path.join(_REPO, 'experiments', 'cosnet_davis16', 'params.msgpack')

  # Architecture of weights trained with --mode train (segmenting reads the weights' own).
  config.model = ml_collections.ConfigDict(dict(
      name='cosnet',
      # DeepLabV3 on mobilenet_v2 (the TFLite file: width 0.5, no atrous ASPP branches), or
      # resnet50 / resnet101 (torchvision's deeplabv3_resnet*: aspp_rates (12, 24, 36)).
      backbone='mobilenet_v2', width_multiplier=0.5, aspp_rates=(), input_style='tflite',
      # The file's output stride 8 (DeepLabV3 alone: J&F 0.628 at 8, 0.556 at 16); the
      # co-attention runs on features pooled to 16, where it costs 16x less.
      output_stride=8, attention_pool=2,
      # The head corrects DeepLabV3's own foreground logit instead of replacing its
      # classifier (jvos/models/cosnet.py): no saliency data here to teach it objects.
      classifier_prior=True,
      pretrained='', dtype='float32'))

  config.train = ml_collections.ConfigDict(dict(
      **default.TRAIN_VALIDATION,
      split='train', sequences='',
      # Unweighted BCE: the class-balanced one (OSVOS's, the official code's) trained on
      # DAVIS alone doubles the predicted area of small objects.
      loss='bce',
      batch_size=4, num_steps=1500, optimizer='adam', learning_rate=1e-3, momentum=0.9,
      schedule='cosine', warmup_steps=50, weight_decay=1e-5, grad_clip=1.0,
      checkpoint_every=250, keep_checkpoints=2, log_every=25,
      crop_size=(320, 320), scale_range=(0.5, 1.0), flip=True, colour_jitter=0.2,
      data_threads=4, data_prefetch=8,
      # DeepLabV3 and its classifier keep their COCO + VOC training (and spare their backward
      # pass): the co-attention head learns its correction. Without model.classifier_prior,
      # 'deeplab/backbone' (the ASPP then trains too). Empty: train everything.
      frozen='deeplab,classifier', init_weights=''))

  config.segment.references = 5  # Reference frames each frame attends to, averaged.
  # Test-time levers, together J&F 0.704 against 0.67 without (experiments/cosnet_davis16/),
  # about 40 s per 50 frames on 2 CPU cores: the mirrored frame scored too (flip,
  # jvos/test_time_augmentation.py) and the dense CRF on the scores (jvos/postprocess.py).
  config.segment.flip = True
  config.postprocess.crf = True
  return config

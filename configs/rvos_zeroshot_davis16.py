"""RVOS zero-shot on DAVIS-2016: no mask at all; the slots' union is the foreground.

    python launch.py --config configs/rvos_zeroshot_davis16.py --config.data.root=/data/DAVIS2016 \
        --config.data.sequences=a,b --workdir runs/rvos_zeroshot
    # Train your own on DAVIS-2016 train:
    python launch.py --config configs/rvos_zeroshot_davis16.py --mode train \
        --config.data.root=/data/DAVIS2016 \
        --config.model.pretrained=/weights/mobilenet_v2_1.0_224_imagenet_uint8.tflite

On a DAVIS-2016 root the masks are 0/255 (the union of the slots, DAVIS-2016's unsupervised
protocol) scored on every frame; on a DAVIS-2017 root they are palette proposals, matched to
the objects by Hungarian assignment as the unsupervised benchmark does.
"""

import os

from configs import rvos_davis17

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = rvos_davis17.get_config()
  config.task = 'unsupervised'
  config.weights = os.path.join(_REPO, 'experiments', 'rvos_zeroshot_davis16', 'params.msgpack')
  config.model.update(one_shot=False, max_objects=5)
  config.train.update(teacher_forcing=0.0, empty_slot_weight=1.0)
  # The one-shot config's test-time levers: the temporal prior follows given objects, of which
  # zero-shot has none (it would do nothing), and the dense CRF is unmeasured on zero-shot
  # slots; both off, so the config says what runs.
  config.temporal_prior.method = 'none'
  config.postprocess.crf = False
  return config

"""S2S on YouTube-VOS: objects start on their own frame; writes the server's submission zip.

    python launch.py --config configs/s2s_ytvos.py --config.data.root=/data/YouTubeVOS \
        --workdir runs/s2s_ytvos          # valid split: <workdir>/submission.zip
    # Train on YouTube-VOS train (every 5th frame annotated: the others step the ConvLSTM):
    python launch.py --config configs/s2s_ytvos.py --mode train --config.data.root=/data/YouTubeVOS \
        --config.model.pretrained=/weights/mobilenet_v2_1.0_224_imagenet_uint8.tflite
"""

from configs import s2s_davis16


def get_config():
  config = s2s_davis16.get_config()
  config.data.name = 'youtube_vos'
  config.data.split = 'valid'
  # Clips of 11 frames hold 2-3 masks at YouTube-VOS train's one mask every 5 frames.
  config.train.update(clip_length=11, batch_size=2)
  return config

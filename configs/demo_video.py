"""Demo on your own video: a folder of frames or a video file, plus the first frame's mask.

    python launch.py --config configs/demo_video.py \\
        --config.data.frames=my_video.mp4 --config.data.mask=first_frame_mask.png

Writes <workdir>/masks/<video>/<frame>.png and coloured overlays in <workdir>/overlays/<video>/.
The mask is a PNG of the first frame's size: grey (any non-zero pixel is the object) or a palette
PNG whose values are object ids, for several objects.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='video', frames='', mask=''))
  config.output.overlays = True
  return config

"""Demo on your own video with any system: a folder of frames or a video file.

    # One-shot (the default system, OSVOS fine-tuned): give the first frame's mask.
    python launch.py --config configs/demo_video.py \\
        --config.data.frames=my_video.mp4 --config.data.mask=first_frame_mask.png
    # Another system after the colon: osvos | osmn | rvos | s2s | flow (one-shot),
    # cosnet | rvos_zeroshot (zero-shot: no mask, the video's salient objects are found).
    python launch.py --config configs/demo_video.py:osmn --config.data.frames=... --config.data.mask=...
    python launch.py --config configs/demo_video.py:cosnet --config.data.frames=my_video.mp4

Writes <workdir>/masks/<video>/<frame>.png, coloured overlays in <workdir>/overlays/<video>/ and
<workdir>/overlay.mp4 (H.264). The mask is a PNG of the first frame's size: grey (any non-zero
pixel is the object) or a palette PNG whose values are object ids, for several objects. Each
system runs with its released weights and its own config's settings (configs/<system>_*.py).
"""

import importlib

import ml_collections

# The config each system's demo starts from (its released weights and settings).
SYSTEM_CONFIGS = {
    'osvos': 'osvos_davis16', 'osmn': 'osmn_davis16', 'rvos': 'rvos_davis17',
    's2s': 's2s_davis16', 'flow': 'flow_davis16', 'cosnet': 'cosnet_davis16',
    'rvos_zeroshot': 'rvos_zeroshot_davis16',
}


def get_config(system: str = 'osvos'):
  if system not in SYSTEM_CONFIGS:
    raise ValueError(f'configs/demo_video.py:{system}: no such system; use one of '
                     f'{sorted(SYSTEM_CONFIGS)}, e.g. configs/demo_video.py:osmn.')
  config = importlib.import_module(f'configs.{SYSTEM_CONFIGS[system]}').get_config()
  config.mode = 'segment'
  # data.mask empty: zero-shot, which only cosnet and rvos_zeroshot do.
  config.data = ml_collections.ConfigDict(dict(name='video', frames='', mask=''))
  config.output.overlays = True
  return config

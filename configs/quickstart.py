"""The project's main job, what `python launch.py` runs with no arguments.

The best released one-shot system, OSVOS from experiments/osvos_parent/, fine-tuned on each
object's first mask, on the embedded default: a generated multi-object set (written to
<workdir>/synthetic_data; nothing to download), then J&F printed and written to metrics.json.

    python launch.py                                   # about a minute on 2 CPU cores
    python launch.py --config.data.root=/data/DAVIS2016 --config.data.sequences=dog,goat

A generated set rather than a shipped real clip: it costs nothing in the repository, has any
number of objects (so the multi-object path runs too) and exactly known masks; the real-data
contracts are the system configs (configs/osvos_davis16.py and the others).
"""

from configs import osvos_davis16


def get_config():
  config = osvos_davis16.get_config()
  config.data.root = ''  # The generated set.
  config.data.mask_format = 'auto'  # Palette: several objects per video.
  config.data.synthetic.update(num_videos=2, num_frames=20)
  # Frames of 240x320 with flat-coloured shapes: fewer steps than DAVIS's 200 suffice.
  config.finetune.steps = 100
  return config

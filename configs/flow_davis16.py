"""Baseline: DIS optical-flow mask propagation on DAVIS-2016 val (the row every result sits beside).

    python launch.py --config configs/flow_davis16.py --config.data.root=/path/to/DAVIS
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.mask_format = 'binary'
  return config

"""Datasets: each reads one on-disk layout into a `VideoDataset` of `Video`s (see video.py)."""

import pathlib

import ml_collections

from jvos.data import davis, synthetic, user_video, youtube_vos
from jvos.data.video import Video, VideoDataset, read_frame, read_label_map, write_label_map
from jvos.errors import InputError


def parse_sequences(sequences) -> tuple[str, ...]:
  """`--config.data.sequences=a,b,c` arrives as a string; configs may also give a list."""
  if isinstance(sequences, str):
    return tuple(s.strip() for s in sequences.split(',') if s.strip())
  return tuple(sequences or ())


def build_dataset(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> VideoDataset:
  """The dataset `config.data` names. An empty `data.root` means the synthetic demo set."""
  name = config.name
  sequences = parse_sequences(config.get('sequences', ''))
  root = config.get('root', '')
  if name == 'davis':
    if not root:
      root = synthetic.ensure_synthetic_davis(workdir / 'synthetic_data', **config.synthetic)
    return davis.load_davis(pathlib.Path(root), resolution=config.resolution, split=config.split,
                            sequences=sequences, mask_format=config.mask_format)
  if name == 'youtube_vos':
    if not root:
      raise InputError('data.root is empty: pass --config.data.root=<YouTube-VOS folder holding '
                       'train/ and valid/>.')
    return youtube_vos.load_youtube_vos(pathlib.Path(root), split=config.split, sequences=sequences)
  if name == 'video':
    if not config.get('frames'):
      raise InputError('data.frames is empty: pass --config.data.frames=<folder of frames or '
                       'video file> and --config.data.mask=<first-frame mask PNG>.')
    return user_video.load_user_video(pathlib.Path(config.frames), pathlib.Path(config.mask)
                                      if config.get('mask') else None, workdir=workdir)
  raise InputError(f'Unknown data.name={name!r}; use one of: davis, youtube_vos, video.')

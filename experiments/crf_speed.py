r"""Times `jvos.postprocess.dense_crf` on 480x854 DAVIS frames, and scores it on degraded masks.

    taskset -c 0 python experiments/crf_speed.py --davis_root=/path/to/DAVIS2016

Speed: one frame (dog 00010) with 1 object (2 labels) and with 3 objects (4 labels), at the
default parameters and with the appearance kernel at full resolution (bilateral_stride=1).
Each call is timed as process CPU time and wall time; the first calls are discarded (they
page in fresh memory), the median of the rest is reported.

Quality (--quality): the ground truth of 6 val frames, degraded three ways (dilated or eroded
by 6 pixels then blurred, or seen at 1/16 resolution), refined by the CRF under COSNet's
parameter grid; mean J and F before and after. This is a stand-in for a method's output, so
it shows what the CRF repairs, not what it adds to any one method.
"""

import pathlib
import time

from absl import app
from absl import flags
import cv2
import numpy as np
from PIL import Image

from jvos import postprocess
from jvos.evaluation.metrics import boundary_f_measure, region_similarity

_DAVIS_ROOT = flags.DEFINE_string('davis_root', None, 'DAVIS-2016 folder (JPEGImages/, ...).',
                                  required=True)
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed calls per setting (2 more are discarded).')
_QUALITY = flags.DEFINE_bool('quality', True, 'Also run the parameter comparison.')

FRAMES = (('dog', '00010'), ('camel', '00020'), ('goat', '00030'), ('horsejump-high', '00015'),
          ('soapbox', '00040'), ('car-roundabout', '00030'))
SETTINGS = {
    'default (sxy 20, compat 10, stride 2)': {},
    'stride 1 (full-resolution lattice)': dict(bilateral_stride=1),
    'sxy 10, compat 8': dict(bilateral_sxy=10.0, bilateral_compat=8.0),
    'sxy 10, compat 10': dict(bilateral_sxy=10.0, bilateral_compat=10.0),
    'sxy 15, compat 9': dict(bilateral_sxy=15.0, bilateral_compat=9.0),
    'sxy 20, compat 8': dict(bilateral_sxy=20.0, bilateral_compat=8.0),
}


def load(root: pathlib.Path, video: str, frame: str) -> tuple[np.ndarray, np.ndarray]:
  image = np.asarray(Image.open(root / 'JPEGImages/480p' / video / f'{frame}.jpg').convert('RGB'))
  truth = np.asarray(Image.open(root / 'Annotations/480p' / video / f'{frame}.png')) > 0
  return image, truth


def degrade(truth: np.ndarray, kind: str) -> np.ndarray:
  mask = truth.astype(np.float32)
  if kind == 'low-res':
    small = cv2.resize(mask, None, fx=1 / 16, fy=1 / 16, interpolation=cv2.INTER_AREA)
    return np.clip(cv2.GaussianBlur(cv2.resize(small, mask.shape[::-1]), (0, 0), 2), 0, 1)
  grow = cv2.dilate if kind == 'dilated' else cv2.erode
  return cv2.GaussianBlur(grow(mask, np.ones((13, 13), np.uint8)), (0, 0), 4)


def time_calls(image: np.ndarray, scores: np.ndarray, params: postprocess.CRFParams
               ) -> tuple[float, float]:
  cpu, wall = [], []
  for _ in range(_REPEATS.value + 2):
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    postprocess.dense_crf(image, scores, params)
    cpu.append(time.process_time() - start_cpu)
    wall.append(time.perf_counter() - start_wall)
  return float(np.median(cpu[2:])), float(np.median(wall[2:]))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  root = pathlib.Path(_DAVIS_ROOT.value)
  image, truth = load(root, 'dog', '00010')
  one = degrade(truth, 'dilated')[None]
  three = np.stack([one[0], np.roll(one[0], 100, axis=1), np.roll(one[0], -100, axis=1)])
  print('| setting | labels | CPU (s) | wall (s) |\n|---|---|---|---|')
  for name in list(SETTINGS)[:2]:
    params = postprocess.CRFParams(**SETTINGS[name])
    for scores in (one, three):
      cpu, wall = time_calls(image, scores, params)
      print(f'| {name} | {len(scores) + 1} | {cpu:.3f} | {wall:.3f} |')
  if not _QUALITY.value:
    return
  print('\n| degradation | setting | J | F |\n|---|---|---|---|')
  frames = [load(root, *frame) for frame in FRAMES]
  for kind in ('dilated', 'eroded', 'low-res'):
    rows = {'input': []} | {name: [] for name in SETTINGS}
    for image, truth in frames:
      scores = degrade(truth, kind)[None]
      rows['input'].append(scores[0])
      for name, setting in SETTINGS.items():
        rows[name].append(postprocess.dense_crf(image, scores, postprocess.CRFParams(**setting))[0])
    for name, maps in rows.items():
      j = np.mean([region_similarity(t, m > 0.5) for (_, t), m in zip(frames, maps)])
      f = np.mean([boundary_f_measure(t, m > 0.5) for (_, t), m in zip(frames, maps)])
      print(f'| {kind} | {name} | {j:.3f} | {f:.3f} |')


if __name__ == '__main__':
  app.run(main)

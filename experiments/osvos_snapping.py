r"""The OSVOS paper's boundary snapping, measured on the masks a run wrote (issue 13).

    python experiments/osvos_snapping.py --davis ../shared/data/davis2016 \
      --run runs/results/osvos-hard2 --out runs/osvos_snapping

OSVOS (Caelles et al., CVPR 2017, Sec. 3.3) snaps its final masks to image contours: the frame
is cut into superpixels and each superpixel takes the label most of its pixels have. The paper
built its superpixels from a learned contour branch (UCM); no contour network is trained here,
so these are SLIC's colour superpixels (scikit-image), the usual stand-in. Snapping works on
written masks alone and feeds nothing back into the video, so it is measured here, after the
fact, on every frame of a finished run, and scored with the benchmark `launch.py` uses.

Writes <out>/<setting>/masks and metrics.json for each setting and
experiments/results/osvos_snapping.json (command, date, machine, J, F and J&F per setting and
per sequence, seconds of SLIC per frame).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

import numpy as np
from skimage.segmentation import slic

from configs import osvos_davis16
from jvos import evaluation
from jvos.data import build_dataset
from jvos.data.video import read_label_map, write_label_map
import results


def snap(image: np.ndarray, labels: np.ndarray, superpixels: int,
         compactness: float) -> tuple[np.ndarray, float]:
  """Each SLIC superpixel of `image` relabelled with its most frequent value in `labels`.

  Works on any label map (0/255 masks, palette indices). Returns the snapped map and the
  seconds SLIC took.
  """
  start = time.perf_counter()
  segments = slic(image, n_segments=superpixels, compactness=compactness, start_label=0)
  seconds = time.perf_counter() - start
  values, index = np.unique(labels, return_inverse=True)
  votes = np.bincount(segments.ravel() * len(values) + index.ravel(),
                      minlength=(segments.max() + 1) * len(values))
  winner = votes.reshape(-1, len(values)).argmax(axis=1)
  return values[winner[segments]].astype(labels.dtype), seconds


def snap_run(dataset, run_masks: pathlib.Path, out_masks: pathlib.Path, superpixels: int,
             compactness: float) -> float:
  """Writes the snapped copy of every mask of `run_masks`; returns mean SLIC seconds/frame."""
  seconds = []
  for video in dataset.videos:
    for index, name in enumerate(video.frame_names):
      labels = read_label_map(run_masks / video.name / f'{name}.png', video.binary)
      snapped, took = snap(video.frame(index), labels, superpixels, compactness)
      seconds.append(took)
      write_label_map(out_masks / video.name / f'{name}.png', snapped, video.binary)
  return float(np.mean(seconds))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--davis', type=pathlib.Path, required=True, help='DAVIS-2016 root.')
  parser.add_argument('--run', type=pathlib.Path, required=True,
                      help='A finished segment run: its masks/ and config.json are read.')
  parser.add_argument('--out', type=pathlib.Path, required=True)
  parser.add_argument('--settings', default='1000:10,3000:10,3000:20,8000:10',
                      help='Comma-separated superpixels:compactness pairs.')
  args = parser.parse_args()
  run_config = json.loads((args.run / 'config.json').read_text())
  config = osvos_davis16.get_config()
  config.data.root = str(args.davis)
  config.data.sequences = run_config['data']['sequences']
  dataset = build_dataset(config.data, args.out)
  baseline = json.loads((args.run / 'metrics.json').read_text())
  record = {'command': ' '.join(['python', *sys.argv]), 'date': datetime.date.today().isoformat(),
            'machine': results.machine(), 'run': str(args.run), 'baseline': baseline,
            'settings': {}}
  for setting in args.settings.split(','):
    superpixels, compactness = setting.split(':')
    folder = args.out / f'slic{superpixels}-c{compactness}'
    seconds = snap_run(dataset, args.run / 'masks', folder / 'masks', int(superpixels),
                       float(compactness))
    metrics = evaluation.evaluate(dataset, folder / 'masks', folder)
    record['settings'][setting] = {'slic_seconds_per_frame': seconds, 'metrics': metrics}
    print(f'{setting}: J&F {metrics["JF_mean"]:.4f} (J {metrics["J_mean"]:.4f}, '
          f'F {metrics["F_mean"]:.4f}; baseline {baseline["JF_mean"]:.4f}), '
          f'SLIC {seconds:.2f} s/frame', flush=True)
  (results.RESULTS / 'osvos_snapping.json').write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
  main()

r"""Times `launch.py --mode evaluate` against the independent vos-benchmark on the same masks.

    python experiments/eval_speed.py --davis_root=../shared/data/davis2016 --workers=2

Both run as a user runs them, in a fresh Python process each (interpreter start and imports
included: that is where jvos once lost most of its time, importing JAX it does not need to
score), on the ground truth of the split shifted by (7, -12) pixels written as results.
Prints one line per tool and repeat; experiments/eval_speed.md holds the measurements.
"""

import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from jvos.data.davis import load_davis
from jvos.data.video import write_label_map

_DAVIS_ROOT = flags.DEFINE_string('davis_root', None, 'DAVIS-2016 folder (JPEGImages/, ...).',
                                  required=True)
_SPLIT = flags.DEFINE_string('split', 'val', 'ImageSets split to score.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Processes scoring sequences in parallel.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed runs of each tool.')
_SHIFT = (7, -12)  # (rows, columns): beyond the 8-pixel boundary tolerance at 480p.
_REPO = pathlib.Path(__file__).resolve().parents[1]
# vos-benchmark's own entry point, with the DAVIS protocol's first and last frames left out.
_VOS_BENCHMARK = ('import sys; from vos_benchmark.benchmark import benchmark; '
                  'benchmark([sys.argv[1]], [sys.argv[2]], strict=False, '
                  'num_processes=int(sys.argv[3]), verbose=False, skip_first_and_last=True)')


def write_shifted_ground_truth(dataset, masks_dir: pathlib.Path) -> int:
  """Writes every frame's ground truth, shifted, as results; returns the number of frames."""
  for video in dataset:
    for name in video.frame_names:
      shifted = np.roll(video.annotation(name), _SHIFT, axis=(0, 1))
      write_label_map(masks_dir / video.name / f'{name}.png', shifted, video.binary)
  return sum(len(video) for video in dataset)


def timed(command: list[str]) -> float:
  start = time.perf_counter()
  subprocess.run(command, check=True, capture_output=True)
  return time.perf_counter() - start


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  root = pathlib.Path(_DAVIS_ROOT.value).resolve()
  dataset = load_davis(root, split=_SPLIT.value)
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(tmp)
    num_frames = write_shifted_ground_truth(dataset, workdir / 'masks')
    gt_root = workdir / 'gt'  # vos-benchmark reads one folder per sequence, nothing else.
    gt_root.mkdir()
    for video in dataset:
      (gt_root / video.name).symlink_to(root / 'Annotations' / '480p' / video.name)
    tools = {
        'jvos launch.py --mode evaluate': [
            sys.executable, str(_REPO / 'launch.py'), '--mode', 'evaluate',
            f'--config.data.root={root}', f'--config.data.split={_SPLIT.value}',
            f'--config.evaluation.workers={_WORKERS.value}', f'--workdir={workdir}'],
        'vos-benchmark': [sys.executable, '-c', _VOS_BENCHMARK, str(gt_root),
                          str(workdir / 'masks'), str(_WORKERS.value)],
    }
    print(f'{len(dataset)} sequences, {num_frames} frames, workers={_WORKERS.value}')
    for repeat in range(_REPEATS.value):
      for tool, command in tools.items():
        print(f'  {tool}: {timed(command):.2f} s (run {repeat + 1})', flush=True)


if __name__ == '__main__':
  app.run(main)

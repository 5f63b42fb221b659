r"""Times `jvos.evaluation.evaluate` on the DAVIS-2016 val sequences.

    python experiments/eval_speed.py --davis_root=/path/to/DAVIS2016 --workers=2

The results scored are the ground truth shifted by a few pixels (written to a temporary folder
first, not timed), so J and F are below 1 and every code path of the scoring runs.
"""

import pathlib
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from jvos.data.davis import load_davis
from jvos.data.video import write_label_map
from jvos.evaluation import evaluate

_DAVIS_ROOT = flags.DEFINE_string('davis_root', None, 'DAVIS-2016 folder (JPEGImages/, ...).',
                                  required=True)
_SPLIT = flags.DEFINE_string('split', 'val', 'ImageSets split to score.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Processes scoring sequences in parallel.')
_SHIFT = (7, -12)  # (rows, columns): beyond the 8-pixel boundary tolerance at 480p.


def write_shifted_ground_truth(dataset, masks_dir: pathlib.Path) -> int:
  """Writes every frame's ground truth, shifted, as results; returns the number of frames."""
  for video in dataset:
    for name in video.frame_names:
      shifted = np.roll(video.annotation(name), _SHIFT, axis=(0, 1))
      write_label_map(masks_dir / video.name / f'{name}.png', shifted, video.binary)
  return sum(len(video) for video in dataset)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  dataset = load_davis(pathlib.Path(_DAVIS_ROOT.value), split=_SPLIT.value)
  with tempfile.TemporaryDirectory() as tmp:
    masks_dir = pathlib.Path(tmp) / 'masks'
    num_frames = write_shifted_ground_truth(dataset, masks_dir)
    start = time.perf_counter()
    metrics = evaluate(dataset, masks_dir, pathlib.Path(tmp), workers=_WORKERS.value)
    seconds = time.perf_counter() - start
  print(f'{len(dataset)} sequences, {num_frames} frames, workers={_WORKERS.value}: '
        f'evaluate took {seconds:.2f} s (J {metrics["J_mean"]:.3f}, F {metrics["F_mean"]:.3f})')


if __name__ == '__main__':
  app.run(main)

r"""Peak memory of segmenting one long video: stateful systems stream frames, so it stays flat.

    python experiments/stream_memory.py --frames=200,2000 --systems=osmn,rvos

For each system and length, one generated video (jvos.data.synthetic, 2 objects, 240x320) is
segmented by `launch.py --mode segment` with the system's config and released weights, in a
fresh process; its peak resident memory (ru_maxrss) and frames/s are printed. Memory that does
not grow from 200 to 2,000 frames shows the runner keeps no per-frame state beyond the masks
it writes. experiments/stream_memory.md holds the measurements.
"""

import argparse
import pathlib
import tempfile
import time

from configs.demo_video import SYSTEM_CONFIGS
from jvos.data import synthetic
import segment_runs

# Measured in a child that only runs launch.py, so each peak is that run's own.
_CHILD = ('import resource, runpy, sys\n'
          'sys.argv = sys.argv[1:]\n'
          'try:\n'
          '  runpy.run_path(sys.argv[0], run_name="__main__")\n'
          'finally:\n'
          '  print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--frames', default='200,2000')
  parser.add_argument('--systems', default='osmn,rvos')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    for frames in (int(f) for f in args.frames.split(',')):
      root = synthetic.ensure_synthetic_davis(pathlib.Path(tmp) / f'video_{frames}', 1, frames,
                                              240, 320, 2, 0)
      for system in args.systems.split(','):
        command = segment_runs.segment_command(
            f'configs/{SYSTEM_CONFIGS[system]}.py', f'--config.data.root={root}',
            '--config.data.mask_format=palette', workdir=pathlib.Path(tmp) / f'{system}_{frames}')
        command[1:1] = ['-c', _CHILD]  # python -c _CHILD launch.py ...
        start = time.perf_counter()
        result = segment_runs.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = next(int(line.split()[1]) for line in result.stdout.splitlines()
                    if line.startswith('PEAK_KB'))
        print(f'{system}: {frames} frames, peak RSS {peak / 1024:.0f} MB, '
              f'{seconds:.0f} s wall (start-up and scoring included)', flush=True)


if __name__ == '__main__':
  main()

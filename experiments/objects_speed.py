r"""Frames per second at 480p with 1, 2 and 5 objects, each one-shot system's network alone.

    python experiments/objects_speed.py --objects=1,2,5 --systems=osmn,rvos,s2s

For each object count, one generated video (jvos.data.synthetic, 854x480, --frames frames) is
segmented by `launch.py --mode segment` with each system's config and released weights, the
network alone (temporal prior and dense CRF off: experiments/crf_speed.md and the results rows
`*-prior`, `*-crf` time those); frames/s is the video's frames over the seconds the runner spent
on it (timing.json: compiling the per-frame step is in it, start-up and scoring are not).
experiments/objects_speed.md holds the measurements.
"""

import argparse
import os
import pathlib
import tempfile

from configs.demo_video import SYSTEM_CONFIGS
from jvos.data import synthetic
import segment_runs

_NETWORK_ALONE = ('--config.temporal_prior.method=none', '--config.postprocess.crf=False')


def frames_per_second(system: str, root: pathlib.Path, workdir: pathlib.Path) -> float:
  segment_runs.run(segment_runs.segment_command(
      f'configs/{SYSTEM_CONFIGS[system]}.py', f'--config.data.root={root}',
      '--config.data.mask_format=palette', *_NETWORK_ALONE, workdir=workdir),
                   capture_output=True, text=True)
  _, frames, seconds = segment_runs.timing(workdir)
  return frames / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--objects', default='1,2,5')
  parser.add_argument('--systems', default='osmn,rvos,s2s')
  parser.add_argument('--frames', type=int, default=30)
  args = parser.parse_args()
  print(f'{os.cpu_count()} cores; {args.frames} frames at 854x480')
  print('| system | objects | frames/s |')
  print('|---|---|---|')
  with tempfile.TemporaryDirectory() as tmp:
    for objects in (int(n) for n in args.objects.split(',')):
      root = synthetic.ensure_synthetic_davis(pathlib.Path(tmp) / f'objects_{objects}', 1,
                                              args.frames, 480, 854, objects, 0)
      for system in args.systems.split(','):
        speed = frames_per_second(system, root, pathlib.Path(tmp) / f'{system}_{objects}')
        print(f'| {system} | {objects} | {speed:.2f} |', flush=True)


if __name__ == '__main__':
  main()

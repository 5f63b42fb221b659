"""What the experiments that time `launch.py --mode segment` share: its command, run from the
repository's root, and the totals of the timing.json it writes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def segment_command(config_file: str | pathlib.Path, *overrides: str,
                    workdir: str | pathlib.Path) -> list[str]:
  """`python launch.py --config <config_file> --mode segment <overrides> --workdir=<workdir>`,
  launch.py and the config file as paths from the repository's root where they are in it."""
  return [sys.executable, 'launch.py', '--config', str(config_file), '--mode', 'segment',
          *overrides, f'--workdir={workdir}']


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
  """`command` in the repository's root; fails if it does."""
  return subprocess.run(command, cwd=REPO, check=True, **kwargs)


def timing(workdir: str | pathlib.Path) -> tuple[int, int, float]:
  """(videos, frames, seconds) the runner spent in `workdir` (its timing.json: the per-frame
  step's compilation is in it; start-up and scoring are not)."""
  videos = json.loads((pathlib.Path(workdir) / 'timing.json').read_text()).values()
  return (len(videos), sum(t['frames'] for t in videos), sum(t['seconds'] for t in videos))

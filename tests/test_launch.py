"""launch.py end to end, as users (and the acceptance checks) run it."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# The flow baseline on the generated set: every config's base, and the cheapest job there is.
FLOW_CONFIG = REPO / 'configs' / 'default.py'
# COSNet's mean IoU on the first 8 frames of DAVIS dog, zero-shot; seen: 0.79.
ZERO_SHOT_DOG_IOU = 0.6
METRIC_KEYS = ('J_mean', 'F_mean', 'J_recall', 'F_recall', 'J_decay', 'F_decay')


def launch(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(REPO / 'launch.py'), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def check_metrics(metrics: dict, sequences) -> None:
  for key in ('J_mean', 'F_mean', 'JF_mean'):
    assert 0 <= metrics[key] <= 1
  assert set(metrics['sequences']) == set(sequences)
  for name in sequences:
    for key in METRIC_KEYS:
      # Decay is a difference of means: negative when a method gets better along the video.
      low = -1 if key.endswith('decay') else 0
      assert low <= metrics['sequences'][name][key] <= 1, (name, key)


def test_default_job_runs_end_to_end_with_no_arguments(tmp_path):
  """`python launch.py`: the released OSVOS parent, fine-tuned on each object of the generated
  set. Seen: J&F 0.79 (flow propagation on the same two videos: 0.56)."""
  result = launch(cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  workdir = tmp_path / 'runs' / 'quickstart'
  metrics = json.loads((workdir / 'metrics.json').read_text())
  videos = sorted(p.name for p in (workdir / 'masks').iterdir())
  check_metrics(metrics, videos)
  assert 'J&F' in result.stderr
  assert metrics['JF_mean'] > 0.7
  assert json.loads((workdir / 'config.json').read_text())['model']['name'] == 'osvos'


def test_flow_contract_on_real_davis2016(tmp_path, davis2016_root):
  sequences = ('dog', 'car-roundabout')
  workdir = tmp_path / 'w'
  result = launch('--config', str(REPO / 'configs' / 'flow_davis16.py'), '--mode', 'segment',
                  f'--config.data.root={davis2016_root}',
                  f'--config.data.sequences={",".join(sequences)}', f'--workdir={workdir}',
                  cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  for name in sequences:
    frames = sorted((davis2016_root / 'JPEGImages' / '480p' / name).glob('*.jpg'))
    masks = sorted((workdir / 'masks' / name).glob('*.png'))
    assert [m.stem for m in masks] == [f.stem for f in frames]
    for mask_path in (masks[0], masks[-1]):
      with Image.open(mask_path) as mask, Image.open(frames[0]) as frame:
        assert mask.size == frame.size and mask.mode == 'L'
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
  metrics = json.loads((workdir / 'metrics.json').read_text())
  check_metrics(metrics, sequences)
  assert metrics['sequences']['dog']['J_mean'] > 0.4

  # --mode evaluate with the default config re-scores the masks already there, identically,
  # and without importing JAX (scoring does not need it; importing it costs seconds).
  (workdir / 'metrics.json').unlink()
  evaluate = ('import runpy, sys\n'
              'sys.argv = sys.argv[1:]\n'
              'try:\n'
              '  runpy.run_path(sys.argv[0], run_name="__main__")\n'
              'finally:\n'
              '  print("imported jax:", "jax" in sys.modules)\n')
  result = subprocess.run(
      [sys.executable, '-c', evaluate, str(REPO / 'launch.py'), '--mode', 'evaluate',
       f'--config.data.root={davis2016_root}', f'--config.data.sequences={",".join(sequences)}',
       f'--workdir={workdir}'], cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert json.loads((workdir / 'metrics.json').read_text()) == metrics
  assert 'imported jax: False' in result.stdout


def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, davis2016_root):
  result = launch('--mode', 'evaluate', f'--config.data.root={tmp_path / "nowhere"}',
                  f'--workdir={tmp_path / "w"}', cwd=tmp_path)
  assert result.returncode == 2
  assert 'nowhere' in result.stderr and 'Traceback' not in result.stderr

  # Training or fine-tuning with a config that has no model says which config to use.
  for mode in ('train', 'finetune'):
    result = launch('--config', str(FLOW_CONFIG), '--mode', mode, f'--workdir={tmp_path / "w"}',
                    cwd=tmp_path)
    assert result.returncode == 2 and 'osvos_davis16.py' in result.stderr, result.stderr

  # Evaluating before segmenting says what to run first.
  result = launch('--mode', 'evaluate', f'--config.data.root={davis2016_root}',
                  '--config.data.sequences=dog', f'--workdir={tmp_path / "w"}', cwd=tmp_path)
  assert result.returncode == 2
  assert 'segment' in result.stderr and 'Traceback' not in result.stderr


def test_misspelt_fields_and_missing_config_files_are_one_line(tmp_path):
  config = str(REPO / 'configs' / 'osvos_davis16.py')
  cases = [((f'--config={config}', '--config.data.rooot=/data'),
            "--config.data.rooot: the config has no field 'rooot'; did you mean 'root'?"),
           ((f'--config={config}', '--config.train.num_steps=many'),
            "flag --config.train.num_steps=many: invalid literal for int()"),
           (('--config=configs/osvos_davis61.py',),
            '--config configs/osvos_davis61.py: cannot load it')]
  for args, message in cases:
    result = launch(*args, f'--workdir={tmp_path / "w"}', cwd=tmp_path)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert f'jvos: error: {message}' in result.stderr, (args, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('override, message', [
    ('finetune.steps=-5', 'finetune.steps=-5: it must be at least 0'),
    ('finetune.batch_size=0', 'finetune.batch_size=0: it must be at least 1'),
    ('finetune.max_rotation=-15.0', 'finetune.max_rotation=-15.0: it must be at least 0'),
    ('train.num_steps=0', 'train.num_steps=0: it must be at least 1'),
    ('segment.max_height=-480', 'segment.max_height=-480: it must be at least 0'),
    ('task="one-shot"', "task='one-shot'; use --config.task=semi-supervised"),
])
def test_config_values_no_job_can_run_with_name_the_field(override, message):
  import launch as launch_module  # pylint: disable=import-outside-toplevel
  from configs import osvos_davis16  # pylint: disable=import-outside-toplevel
  from jvos.errors import InputError  # pylint: disable=import-outside-toplevel
  config = osvos_davis16.get_config()
  launch_module.check_config(config)  # The config as shipped is fine.
  field, value = override.split('=')
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = eval(value)  # pylint: disable=eval-used
  with pytest.raises(InputError, match=re.escape(message)):
    launch_module.check_config(config)


def test_a_temporal_prior_in_the_zero_shot_task_is_refused():
  import launch as launch_module  # pylint: disable=import-outside-toplevel
  from configs import cosnet_davis16  # pylint: disable=import-outside-toplevel
  from jvos.errors import InputError  # pylint: disable=import-outside-toplevel
  config = cosnet_davis16.get_config()
  launch_module.check_config(config)
  config.temporal_prior.method = 'flow'
  with pytest.raises(InputError, match="temporal_prior.method='flow' follows the given first"):
    launch_module.check_config(config)


def test_demo_on_a_users_video_file_writes_masks_and_overlays(tmp_path, davis2016_root):
  import cv2  # pylint: disable=g-import-not-at-top
  frames = sorted((davis2016_root / 'JPEGImages' / '480p' / 'dog').glob('*.jpg'))[:8]
  writer = cv2.VideoWriter(str(tmp_path / 'my dog.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10,
                           (854, 480))
  for frame in frames:
    writer.write(cv2.imread(str(frame)))
  writer.release()
  mask = tmp_path / 'first.png'
  mask.write_bytes((davis2016_root / 'Annotations' / '480p' / 'dog' / '00000.png').read_bytes())
  workdir = tmp_path / 'w'
  result = launch('--config', f'{REPO / "configs" / "demo_video.py"}:flow',
                  f'--config.data.frames={tmp_path / "my dog.avi"}', f'--config.data.mask={mask}',
                  f'--workdir={workdir}', cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  masks = sorted((workdir / 'masks' / 'my dog').glob('*.png'))
  overlays = sorted((workdir / 'overlays' / 'my dog').glob('*.jpg'))
  assert len(masks) == len(overlays) == 8
  # The dog stays found: each propagated mask overlaps the true one.
  for mask_path in masks[1:]:
    truth = np.asarray(Image.open(davis2016_root / 'Annotations' / '480p' / 'dog' /
                                  mask_path.name)) > 0
    predicted = np.asarray(Image.open(mask_path)) > 0
    assert (truth & predicted).sum() / (truth | predicted).sum() > 0.5

  # No mask: a zero-shot system finds the dog on its own (COSNet's released weights).
  zero_shot = tmp_path / 'zero_shot'
  result = launch('--config', f'{REPO / "configs" / "demo_video.py"}:cosnet',
                  f'--config.data.frames={tmp_path / "my dog.avi"}', f'--workdir={zero_shot}',
                  cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (zero_shot / 'overlay.mp4').stat().st_size > 0
  ious = []
  for mask_path in sorted((zero_shot / 'masks' / 'my dog').glob('*.png')):
    truth = np.asarray(Image.open(davis2016_root / 'Annotations' / '480p' / 'dog' /
                                  mask_path.name)) > 0
    predicted = np.asarray(Image.open(mask_path)) > 0
    ious.append((truth & predicted).sum() / (truth | predicted).sum())
  print('zero-shot IoU per frame', np.round(ious, 2))
  assert len(ious) == 8 and np.mean(ious) > ZERO_SHOT_DOG_IOU

  result = launch('--config', str(REPO / 'configs' / 'demo_video.py'), cwd=tmp_path)
  assert result.returncode == 2 and 'data.frames' in result.stderr
  # A one-shot system with no mask, or a system the demo does not know, names the way out.
  for config, message in (('demo_video.py', 'pass --config.data.mask=<png>, or segment '
                           'zero-shot with --config configs/demo_video.py:cosnet'),
                          ('demo_video.py:osvs', "demo_video.py:osvs: no such system; use one "
                           "of ['cosnet', 'flow', 'osmn', 'osvos', 'rvos', 'rvos_zeroshot'")):
    result = launch('--config', str(REPO / 'configs' / config),
                    f'--config.data.frames={tmp_path / "my dog.avi"}', f'--workdir={workdir}',
                    cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


def test_osvos_finetune_contract_with_the_released_parent(tmp_path, davis2016_root):
  sequences = ('dog', 'goat')
  workdir = tmp_path / 'w'
  # Few steps keep the test short; the contract's default step count is measured in experiments/.
  result = launch('--config', str(REPO / 'configs' / 'osvos_davis16.py'), '--mode', 'finetune',
                  f'--config.data.root={davis2016_root}',
                  f'--config.data.sequences={",".join(sequences)}', '--config.finetune.steps=10',
                  f'--workdir={workdir}', cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  for name in sequences:
    frames = sorted((davis2016_root / 'JPEGImages' / '480p' / name).glob('*.jpg'))
    masks = sorted((workdir / 'masks' / name).glob('*.png'))
    assert [m.stem for m in masks] == [f.stem for f in frames]
    with Image.open(masks[len(masks) // 2]) as mask:
      assert mask.size == (854, 480) and mask.mode == 'L'
      assert set(np.unique(np.asarray(mask))) == {0, 255}
  metrics = json.loads((workdir / 'metrics.json').read_text())
  check_metrics(metrics, sequences)
  # The released parent, barely fine-tuned, already beats flow propagation on these two (0.54).
  assert metrics['JF_mean'] > 0.55


def test_a_killed_segment_run_resumes_at_the_unfinished_video(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'w'
  args = [sys.executable, str(REPO / 'launch.py'), '--config', str(FLOW_CONFIG),
          '--config.data.synthetic.num_frames=60',
          '--config.data.synthetic.num_videos=3', f'--workdir={workdir}']
  process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  completed = workdir / 'masks_completed.txt'
  deadline = time.monotonic() + 300
  while not (completed.is_file() and completed.read_text().split()):
    assert process.poll() is None and time.monotonic() < deadline
    time.sleep(0.02)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  finished = completed.read_text().split()
  assert len(finished) < 3  # Killed before the last video was done.
  first_masks = {p: p.stat().st_mtime_ns for p in (workdir / 'masks' / finished[0]).glob('*.png')}
  assert len(first_masks) == 60

  result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert 'Skipping' in result.stderr and finished[0] in result.stderr
  # The finished video was not segmented again; every video now has all its masks.
  assert {p: p.stat().st_mtime_ns for p in first_masks} == first_masks
  assert sorted(completed.read_text().split()) == sorted(
      p.name for p in (workdir / 'masks').iterdir())
  assert json.loads((workdir / 'metrics.json').read_text())['JF_mean'] > 0.3

  # The same workdir with another segmenting config refuses, naming what changed.
  result = launch('--config', str(FLOW_CONFIG), '--config.model.preset=fast',
                  '--config.data.synthetic.num_frames=60',
                  '--config.data.synthetic.num_videos=3', f'--workdir={workdir}', cwd=tmp_path)
  assert result.returncode == 2
  assert "model.preset: 'medium' -> 'fast'" in result.stderr and 'Traceback' not in result.stderr


def test_full_resolution_davis_segments_at_480_and_writes_masks_at_full_size(tmp_path,
                                                                             davis2016_root):
  """`data.resolution=Full-Resolution`: 1080p frames (DAVIS dog, 5 frames, upscaled) are
  segmented at the 480 working height and their masks written at 1920x1080, scored there."""
  root = tmp_path / 'davis'
  for kind, suffix, resample in (('JPEGImages', 'jpg', Image.BICUBIC),
                                 ('Annotations', 'png', Image.NEAREST)):
    folder = root / kind / 'Full-Resolution' / 'dog'
    folder.mkdir(parents=True)
    for path in sorted((davis2016_root / kind / '480p' / 'dog').glob(f'*.{suffix}'))[:5]:
      Image.open(path).resize((1920, 1080), resample).save(folder / path.name)
  workdir = tmp_path / 'w'
  result = launch('--config', str(REPO / 'configs' / 'flow_davis16.py'),
                  f'--config.data.root={root}', '--config.data.resolution=Full-Resolution',
                  '--config.data.sequences=dog', f'--workdir={workdir}', cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  masks = sorted((workdir / 'masks' / 'dog').glob('*.png'))
  assert len(masks) == 5 and all(Image.open(m).size == (1920, 1080) for m in masks)
  assert json.loads((workdir / 'metrics.json').read_text())['sequences']['dog']['J_mean'] > 0.6

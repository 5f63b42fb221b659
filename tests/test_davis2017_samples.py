"""Every one-shot system on real multi-object DAVIS-2017 first frames (../shared/data/davis2017_samples).

The samples are first frames only (30 test-dev sequences with 1 to 7 objects as grey id masks,
widths 854 to 1301, and `tennis` as an official palette PNG with void), so each becomes a
two-frame clip: the frame, then the frame moved by a few pixels. Each system runs with its
released weights (the one in its config) at a working height of 96 rows, as a user's run
would at 480, and must return, at each frame's own size, the given objects on frame 0 and a
mask of the same objects, moved, on frame 1.
"""

import pathlib
import shutil

import numpy as np
from PIL import Image
import pytest

from jvos import segment
from jvos import systems
from jvos.data.davis import load_davis

SAMPLES = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / (
    'davis2017_samples')
SHIFT = (3, 5)  # Rows, columns the second frame is moved by.
HEIGHT = 128  # Working height, as a user's 480 but cheaper.
# The learned systems run on the samples that span what varies: widths 854, 902, 910 and 1301,
# 1 to 7 objects, the palette PNG with void (each new size or object count compiles anew);
# flow, which compiles nothing, on all 31.
VARIED = ('choreography', 'vietnam', 'turtle', 'tackle', 'tennis')
# Fraction of the objects each system must find on frame 1 (IoU > 0.3). Seen, with the
# released weights: flow 0.99 (94 objects), rvos 0.80, osmn 0.30, s2s 0.30 (20 objects each),
# osvos fine-tuned 100 steps 0.89 (9 objects).
FOUND = {'flow': 0.9, 'rvos': 0.6, 'osmn': 0.2, 's2s': 0.15, 'osvos': 0.6}


def system_config(name: str):
  from configs import default, osmn_davis16, rvos_davis17, s2s_davis16  # pylint: disable=g-import-not-at-top,g-multiple-import
  config = {'flow': default, 'osmn': osmn_davis16, 'rvos': rvos_davis17,
            's2s': s2s_davis16}[name].get_config()
  # S2S's state starts at 1/32 of the frame: at 128 rows that is 4 rows, too coarse to hold
  # an object (it found none of the 20); it runs at 256.
  config.segment.max_height = 2 * HEIGHT if name == 's2s' else HEIGHT
  return config


@pytest.fixture(scope='module')
def sample_clips(tmp_path_factory) -> pathlib.Path:
  """A DAVIS-2017-layout root: per sample, its first frame and mask and the frame moved."""
  root = tmp_path_factory.mktemp('davis2017_clips')
  for frame_dir in sorted((SAMPLES / 'JPEGImages' / '480p').iterdir()):
    name = frame_dir.name
    frames, masks = root / 'JPEGImages' / '480p' / name, root / 'Annotations' / '480p' / name
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    shutil.copyfile(frame_dir / '00000.jpg', frames / '00000.jpg')
    moved = np.roll(np.asarray(Image.open(frame_dir / '00000.jpg')), SHIFT, axis=(0, 1))
    Image.fromarray(moved).save(frames / '00001.jpg', quality=95)
    shutil.copyfile(SAMPLES / 'Annotations' / '480p' / name / '00000.png', masks / '00000.png')
  return root


def test_the_samples_are_what_the_tests_expect(sample_clips):
  dataset = load_davis(sample_clips, mask_format='palette', sequences=tuple(
      sorted(p.name for p in (sample_clips / 'JPEGImages' / '480p').iterdir())))
  objects = {video.name: video.object_ids for video in dataset}
  assert len(objects) == 31 and max(len(ids) for ids in objects.values()) == 7
  assert {Image.open(v.frame_paths[0]).size[0] for v in dataset} == {854, 902, 910, 1301}
  assert objects['tennis'] == (1, 2)  # 255 is void, not an object.


def clips(root: pathlib.Path, sequences=()):
  return load_davis(root, mask_format='palette', sequences=tuple(sequences) or tuple(
      sorted(p.name for p in (root / 'JPEGImages' / '480p').iterdir())))


def found_objects(segmenter, dataset, height: int, masks_dir: pathlib.Path) -> np.ndarray:
  """Segments the clips; checks each mask; returns each object's IoU on frame 1."""
  segment.segment_dataset(segmenter, dataset, masks_dir, task='semi-supervised',
                          max_height=height)
  ious = []
  for video in dataset:
    given = video.annotation('00000')
    first, second = (np.asarray(Image.open(masks_dir / video.name / f'{n}.png'))
                     for n in ('00000', '00001'))
    assert first.shape == second.shape == given.shape, video.name  # The frame's own size.
    # Frame 0 is the given mask (void pixels written as background); frame 1 holds only objects.
    np.testing.assert_array_equal(first, np.where(given == 255, 0, given), err_msg=video.name)
    assert set(np.unique(second)) <= {0, *video.object_ids}, video.name
    moved = np.roll(given, SHIFT, axis=(0, 1))
    for object_id in video.object_ids:
      truth, predicted = moved == object_id, second == object_id
      ious.append((truth & predicted).sum() / max((truth | predicted).sum(), 1))
  assert len(ious) == sum(len(v.object_ids) for v in dataset)
  return np.array(ious)


@pytest.mark.parametrize('name', ['flow', 'osmn', 'rvos', 's2s'])
def test_one_shot_system_follows_every_object_of_real_first_frames(name, sample_clips, tmp_path):
  config = system_config(name)
  dataset = clips(sample_clips, () if name == 'flow' else VARIED)
  ious = found_objects(systems.build_segmenter(config), dataset, config.segment.max_height,
                       tmp_path / 'masks')
  print(name, f'{len(ious)} objects: mean IoU {ious.mean():.3f}, found (IoU > 0.3) '
        f'{(ious > 0.3).mean():.2f}')
  assert (ious > 0.3).mean() > FOUND[name], ious


def test_osvos_fine_tunes_on_every_object_of_real_first_frames(sample_clips, released_osvos_120,
                                                               tmp_path):
  """OSVOS fine-tunes each object: on the 854-wide samples with the most objects (7) and with
  void, reusing the session's fine-tuning loop compiled for 120x214 frames."""
  config, segmenter = released_osvos_120
  ious = found_objects(segmenter, clips(sample_clips, ('choreography', 'tennis')),
                       config.segment.max_height, tmp_path / 'masks')
  print(f'osvos {len(ious)} objects: mean IoU {ious.mean():.3f}, found (IoU > 0.3) '
        f'{(ious > 0.3).mean():.2f}')
  assert (ious > 0.3).mean() > FOUND['osvos'], ious

"""The report of a scored run, <workdir>/report.html: where and why a method fails, at a glance.

    evaluation.evaluate(dataset, workdir / 'masks', workdir, task=...)  # metrics, per_frame.json
    report.write_report(workdir, dataset, metrics, workdir / 'masks')

The page shows the global scores, then one row per sequence, worst J&F first, each with a plot
of J on every scored frame and the frames where J is lowest, as the prediction's overlay beside
the ground truth's. It is one file that a browser opens from disk and that can be mailed or
archived alone: plots are inline SVG and previews JPEG data URIs, so no picture can go missing;
its only links go to the score files beside it (metrics.json, per_frame.json, the CSVs).

Per-frame scores come from the evaluator's per_frame.json (nothing is re-scored here). The
report covers the DAVIS protocols, semi-supervised and unsupervised (an object is then shown
as its matched proposal: the proposal takes the object's colour, unmatched proposals the void
colour). A run with nothing to score (a user's video, YouTube-VOS valid/test) gets no report:
its overlay video is the picture. YouTube-VOS splits scored locally get none either for now:
their annotations are every 5th frame and objects start late, a different page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pathlib
from typing import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from jvos.data.video import (VOID, Video, VideoDataset, palette, read_frame,
                             read_label_map)
from jvos.errors import InputError
from jvos.evaluation.davis import PER_FRAME_FILE
from jvos.segment import overlay, resize

REPORT_FILE = 'report.html'
# Previews per sequence: the frames with the lowest J.
NUM_PREVIEWS = 3
# Rows of each half of a preview (prediction | ground truth); JPEG quality of the previews.
PREVIEW_HEIGHT = 135
PREVIEW_QUALITY = 80
# The J-per-frame plot, in CSS pixels.
PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN, PLOT_AXIS = 320, 90, 6, 16
# Score files linked from the page when they exist beside it.
LINKED_FILES = ('metrics.json', PER_FRAME_FILE, 'global_results-{task}.csv',
                'per-sequence_results-{task}.csv')


def read_per_frame(workdir: pathlib.Path) -> dict:
  """per_frame.json, as the DAVIS evaluator wrote it beside metrics.json."""
  path = workdir / PER_FRAME_FILE
  if not path.is_file():
    raise InputError(f'No {path}: the report needs the per-frame scores the evaluator writes; '
                     'run `python launch.py --mode evaluate` with the same config and --workdir.')
  return json.loads(path.read_text())


def sequence_order(metrics: dict) -> list[str]:
  """Sequence names, worst J&F first (ties by name, so the page is the same every run)."""
  return sorted(metrics['sequences'], key=lambda name: (metrics['sequences'][name]['JF_mean'],
                                                        name))


def objects_of(per_frame: dict, sequence: str) -> list[dict]:
  """The per-frame entries of one sequence's objects, by object id."""
  return sorted((o for o in per_frame['objects'].values() if o['sequence'] == sequence),
                key=lambda o: o['object'])


def frame_j(objects: Sequence[dict]) -> dict[str, float]:
  """Frame -> J averaged over the objects scored on it (as the sequence's J averages them)."""
  values: dict[str, list[float]] = {}
  for obj in objects:
    for name, j in zip(obj['frames'], obj['J']):
      values.setdefault(name, []).append(j)
  return {name: float(np.mean(js)) for name, js in values.items()}


def worst_frames(objects: Sequence[dict], count: int = NUM_PREVIEWS) -> list[str]:
  """The `count` frames of lowest J, lowest first, each from a different low.

  J moves slowly, so the 3 lowest frames are often neighbours showing one failure three times;
  a frame is skipped when a lower one lies within len(frames) / (2 * count) frames of it (at
  least 1 apart: short videos show their lowest frames as they are). Ties: earliest first.
  """
  scores = frame_j(objects)
  position = {name: i for i, name in enumerate(sorted(scores))}
  gap = max(1, len(scores) // (2 * count))
  chosen: list[str] = []
  for name in sorted(scores, key=lambda name: (scores[name], name)):
    if all(abs(position[name] - position[other]) >= gap for other in chosen):
      chosen.append(name)
    if len(chosen) == count:
      break
  return chosen


def _colour(obj: int) -> str:
  r, g, b = palette()[obj]
  return f'#{r:02x}{g:02x}{b:02x}'


def j_plot(objects: Sequence[dict], marked: Sequence[str] = ()) -> str:
  """Inline SVG of J on each scored frame: one line per object, one point per frame.

  Points carry a tooltip (frame, J); the `marked` frames (the previews) get a dashed rule.
  """
  frames = sorted({name for obj in objects for name in obj['frames']})
  x_of = {name: i for i, name in enumerate(frames)}
  left = PLOT_MARGIN + PLOT_AXIS
  inner_w, inner_h = PLOT_WIDTH - left - PLOT_MARGIN, PLOT_HEIGHT - 2 * PLOT_MARGIN
  step = inner_w / max(len(frames) - 1, 1)

  def x(name: str) -> float:
    return left + (x_of[name] * step if len(frames) > 1 else inner_w / 2)

  def y(j: float) -> float:
    return PLOT_MARGIN + (1 - j) * inner_h

  radius = max(1.0, min(2.5, step / 3))
  parts = [f'<svg class="jplot" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" '
           f'viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" role="img" aria-label="J per frame">',
           f'<rect x="{left}" y="{PLOT_MARGIN}" width="{inner_w}" height="{inner_h}" '
           'fill="#f6f6f6"/>']
  for level, label in ((0.0, '0'), (0.5, '.5'), (1.0, '1')):
    parts.append(f'<line class="grid" x1="{left}" x2="{PLOT_WIDTH - PLOT_MARGIN}" '
                 f'y1="{y(level):.1f}" y2="{y(level):.1f}"/>'
                 f'<text x="{left - 3}" y="{y(level) + 3:.1f}" text-anchor="end">{label}</text>')
  for name in marked:
    if name in x_of:
      parts.append(f'<line class="mark" x1="{x(name):.1f}" x2="{x(name):.1f}" '
                   f'y1="{PLOT_MARGIN}" y2="{PLOT_HEIGHT - PLOT_MARGIN}"/>')
  for obj in objects:
    colour = _colour(obj['object'])
    points = ' '.join(f'{x(n):.1f},{y(j):.1f}' for n, j in zip(obj['frames'], obj['J']))
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                 f'points="{points}"/>')
    for name, j in zip(obj['frames'], obj['J']):
      tip = html.escape(f'frame {name}, object {obj["object"]}: J {j:.3f}')
      parts.append(f'<circle class="j" data-frame="{html.escape(name)}" cx="{x(name):.1f}" '
                   f'cy="{y(j):.1f}" r="{radius:.1f}" fill="{colour}"><title>{tip}</title>'
                   '</circle>')
  parts.append('</svg>')
  return ''.join(parts)


def as_objects(labels: np.ndarray, objects: Sequence[dict]) -> np.ndarray:
  """A result label map with each object's predicted id drawn as the object's own id.

  The identity semi-supervised; unsupervised, each matched proposal takes its object's colour
  and the unmatched ones the void colour, so prediction and ground truth read alike.
  """
  lookup = np.where(np.arange(256) > 0, VOID, 0).astype(np.uint8)
  for obj in objects:
    lookup[obj['predicted_id']] = obj['object']
  return lookup[labels]


def preview(frame: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
            height: int = PREVIEW_HEIGHT) -> np.ndarray:
  """The frame tinted by the prediction beside it tinted by the ground truth, `height` rows."""
  width = max(1, round(frame.shape[1] * height / frame.shape[0]))
  halves = [resize(overlay(frame, labels), (height, width), cv2.INTER_AREA)
            for labels in (prediction, truth)]
  gap = np.full((height, 4, 3), 255, np.uint8)
  return np.concatenate([halves[0], gap, halves[1]], axis=1)


def jpeg_data_uri(image: np.ndarray, quality: int = PREVIEW_QUALITY) -> str:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return 'data:image/jpeg;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def _video_frame_path(video: Video, name: str) -> pathlib.Path:
  for path in video.frame_paths:
    if path.stem == name:
      return path
  raise InputError(f'per_frame.json scores frame {name} of {video.name}, which has no such frame '
                   f'in {video.frame_paths[0].parent}; re-run `--mode evaluate`.')


def _preview_html(video: Video, masks_dir: pathlib.Path, objects: Sequence[dict],
                  name: str, j: float) -> str:
  frame = read_frame(_video_frame_path(video, name))
  prediction = as_objects(read_label_map(masks_dir / video.name / f'{name}.png', video.binary),
                          objects)
  image = jpeg_data_uri(preview(frame, prediction, video.annotation(name)))
  alt = html.escape(f'{video.name} frame {name}: prediction (left), ground truth (right)')
  return (f'<figure class="preview" data-frame="{html.escape(name)}"><img src="{image}" '
          f'alt="{alt}"><figcaption>frame {html.escape(name)} &middot; J {j:.3f} &middot; '
          'prediction | ground truth</figcaption>'
          '</figure>')


def _scores_html(stats: Mapping[str, float]) -> str:
  return ''.join(f'<span class="score"><b>{label}</b> {stats[key]:.3f}</span>'
                 for label, key in (('J&amp;F', 'JF_mean'), ('J', 'J_mean'), ('F', 'F_mean')))


def _grade(jf: float) -> str:
  return 'bad' if jf < 0.5 else 'fair' if jf < 0.75 else 'good'


def sequence_html(video: Video, stats: Mapping[str, float], objects: Sequence[dict],
                  masks_dir: pathlib.Path) -> str:
  """One row: name and scores, the J plot, the previews of the lowest-J frames."""
  worst = worst_frames(objects)
  j_of = frame_j(objects)
  name = html.escape(video.name)
  previews = ''.join(_preview_html(video, masks_dir, objects, frame, j_of[frame])
                     for frame in worst)
  count = f'{len(objects)} objects' if len(objects) > 1 else '1 object'
  frames = sorted(j_of)
  span = f'{frames[0]} to {frames[-1]}' if frames else 'none'
  return (f'<section class="sequence {_grade(stats["JF_mean"])}" id="seq-{name}" '
          f'data-sequence="{name}"><h2>{name} <small>{count}</small></h2>'
          f'<div class="scores">{_scores_html(stats)}</div><div class="row">'
          f'<div class="plot">{j_plot(objects, worst)}<div class="caption">J per scored frame, '
          f'{html.escape(span)} (dashed: previewed)</div></div>'
          f'<div class="previews">{previews}</div></div></section>')


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0; }
h2 small, .meta { color: #777; font-weight: normal; }
.global .score { font-size: 20px; margin-right: 18px; }
.score { margin-right: 12px; white-space: nowrap; }
table { border-collapse: collapse; margin: 12px 0 20px; }
td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
.sequence { border-left: 6px solid #ccc; padding: 8px 12px; margin: 12px 0; background: #fcfcfc; }
.sequence.bad { border-color: #d33; } .sequence.fair { border-color: #e9a800; }
.sequence.good { border-color: #3a3; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; margin-top: 6px; }
.caption, figcaption { color: #666; font-size: 12px; }
figure { margin: 0; } figure img { display: block; }
.jplot text { font-size: 10px; fill: #888; }
.jplot .grid { stroke: #ddd; stroke-width: 1; } .jplot .mark { stroke: #999; stroke-dasharray: 3 3; }
.previews { display: flex; flex-wrap: wrap; gap: 10px; }
"""


def page(title: str, metrics: dict, rows: Sequence[str], summary: Sequence[tuple[str, dict]],
         links: Sequence[str]) -> str:
  """The whole page from its parts."""
  table = ''.join(f'<tr><td><a href="#seq-{html.escape(n)}">{html.escape(n)}</a></td>'
                  f'<td>{s["JF_mean"]:.3f}</td><td>{s["J_mean"]:.3f}</td>'
                  f'<td>{s["F_mean"]:.3f}</td></tr>' for n, s in summary)
  files = ' &middot; '.join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in links)
  return (
      '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
      f'<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
      f'<h1>{html.escape(title)}</h1>'
      f'<div class="meta">task: {html.escape(metrics["task"])} &middot; '
      f'{len(metrics["sequences"])} sequences, {len(metrics["objects"])} objects '
      f'&middot; {files}</div>'
      f'<p class="global">{_scores_html(metrics)}</p>'
      '<p class="meta">Sequences worst J&amp;F first. Previews: the frames of lowest J, '
      'prediction (left) beside ground truth (right).</p>'
      f'<table><tr><th>sequence</th><th>J&amp;F</th><th>J</th><th>F</th></tr>{table}</table>'
      f'{"".join(rows)}</body></html>\n')


def write_report(workdir: pathlib.Path, dataset: VideoDataset, metrics: dict | None,
                 masks_dir: pathlib.Path) -> pathlib.Path | None:
  """Writes <workdir>/report.html for a scored DAVIS run; returns its path.

  Args:
    workdir: the run's folder, holding the evaluator's metrics.json and per_frame.json.
    dataset: the videos that were scored (frames and ground truth of the previews).
    metrics: what `evaluation.evaluate` returned; None (nothing to score) writes no report.
    masks_dir: the results that were scored.

  Returns:
    The page's path, or None when there is no report for this run (see the module docstring).
  """
  if metrics is None or dataset.name != 'davis':
    return None
  workdir, masks_dir = pathlib.Path(workdir), pathlib.Path(masks_dir)
  per_frame = read_per_frame(workdir)
  videos = {video.name: video for video in dataset}
  order = sequence_order(metrics)
  missing = [name for name in order if name not in videos]
  if missing:
    raise InputError(f'{workdir / "metrics.json"} scores sequences {missing} that the dataset '
                     'does not hold: run the report with the config that was evaluated, or '
                     're-run `--mode evaluate`.')
  rows = [sequence_html(videos[name], metrics['sequences'][name],
                        objects_of(per_frame, name), masks_dir) for name in order]
  links = [f for f in (n.format(task=metrics['task']) for n in LINKED_FILES)
           if (workdir / f).is_file()]
  summary = [(name, metrics['sequences'][name]) for name in order]
  text = page(f'jvos report: {workdir.resolve().name}', metrics, rows, summary, links)
  path = workdir / REPORT_FILE
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text, encoding='utf-8')
  tmp.replace(path)
  return path

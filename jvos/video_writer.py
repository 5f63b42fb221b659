"""Videos a browser plays: RGB frames in, one at a time, an H.264 MP4 out.

    with H264Writer(workdir / 'overlay.mp4', fps=24) as video:
      for frame, labels in ...:
        video.add(segment.overlay(frame, labels))

OpenCV's pip wheel writes no H.264 (its 'avc1' needs an encoder the wheel lacks) and its
browser codecs are slow (VP9 0.75 s, VP8 0.2 s per 480p frame, measured on the 2-core
development machine: half the time OSVOS takes to segment one); 'mp4v' is fast but no browser
plays it. So frames go through a pipe to the ffmpeg that the imageio-ffmpeg wheel bundles:
libx264, yuv420p (the profile every browser, phone and player decodes), the index up front
(+faststart) so playback starts before the file is read through; about 30 ms per 480p frame
there. Memory stays bounded: each frame is written as it comes.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jvos.errors import InputError

# x264's constant-quality setting: 23 is its default, visually clean for overlays at ~1 MB for
# 50 frames of 480p.
CRF = 23


def even_size(frame: np.ndarray) -> np.ndarray:
  """The frame with its last row/column repeated to even sides, which 4:2:0 H.264 needs."""
  height, width = frame.shape[:2]
  return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode='edge')


class H264Writer:
  """Writes (H, W, 3) uint8 RGB frames, all of one size, into an H.264 MP4 at `path`.

  The video is written to a temporary file beside `path` and renamed by `close`, so a killed
  run never leaves a truncated video; leaving a `with` block by an exception deletes it.
  Odd frame sizes grow by one edge row/column (see `even_size`).
  """

  def __init__(self, path: pathlib.Path, fps: float = 24.0):
    if not fps > 0:
      raise InputError(f'Overlay video {path}: fps={fps}; use a positive frame rate.')
    self.path = pathlib.Path(path)
    self.fps = float(fps)
    self.size: tuple[int, int] | None = None  # (height, width) of the first frame.
    self.frames = 0
    self._tmp = self.path.with_name(self.path.stem + '.tmp' + self.path.suffix)
    self._pipe = None

  def _open(self, height: int, width: int):
    try:
      import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise InputError(f'Writing {self.path} needs the imageio-ffmpeg package (it bundles '
                       'ffmpeg with H.264): pip install -r requirements.txt') from None
    self.path.parent.mkdir(parents=True, exist_ok=True)
    pipe = imageio_ffmpeg.write_frames(
        str(self._tmp), (width, height), fps=self.fps, codec='libx264', pix_fmt_in='rgb24',
        pix_fmt_out='yuv420p', quality=None, macro_block_size=1, ffmpeg_log_level='error',
        output_params=['-crf', str(CRF), '-preset', 'medium', '-movflags', '+faststart',
                       '-f', 'mp4'])
    pipe.send(None)  # Starts ffmpeg.
    return pipe

  def add(self, frame: np.ndarray) -> None:
    """Appends one RGB frame."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
      raise ValueError(f'H264Writer.add takes (H, W, 3) uint8 RGB, not {frame.dtype} '
                       f'{frame.shape}.')
    if self.size is None:
      self.size = frame.shape[:2]
      self._pipe = self._open(*even_size(frame).shape[:2])
    elif frame.shape[:2] != self.size:
      raise ValueError(f'{self.path}: frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, '
                       f'the first was {self.size[1]}x{self.size[0]}; a video has one size.')
    self._pipe.send(np.ascontiguousarray(even_size(frame)))
    self.frames += 1

  def close(self) -> None:
    """Finishes the video and moves it to `path`; with no frame added, writes nothing."""
    if self._pipe is None:
      return
    self._pipe.close()  # Waits for ffmpeg to write the index.
    self._pipe = None
    if not self._tmp.is_file() or self._tmp.stat().st_size == 0:
      raise OSError(f'ffmpeg wrote no video to {self._tmp} (see its message above).')
    self._tmp.replace(self.path)

  def discard(self) -> None:
    """Stops ffmpeg and deletes the partial video."""
    if self._pipe is not None:
      self._pipe.close()
      self._pipe = None
    self._tmp.unlink(missing_ok=True)

  def __enter__(self) -> H264Writer:
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    if exc_type is None:
      self.close()
    else:
      self.discard()

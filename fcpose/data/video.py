"""Video files: :class:`VideoReader` (OpenCV decoding) and :class:`VideoWriter` (H.264 with PyAV, else OpenCV).

Every frame that crosses this module's boundary is a ``uint8`` ``H x W x 3`` image in **RGB** channel order
(OpenCV's BGR is converted at the edge). A missing, unreadable or corrupt file raises
:class:`~fcpose.errors.InputError` with a one-line message that names it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, one_line
from .images import check_file

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
DEFAULT_FPS = 25.0
# Containers sometimes report a time base (90000) or garbage as the frame rate.
MAX_PLAUSIBLE_FPS = 1000.0


# ---- Videos --------------------------------------------------------------------------------
def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        frame = (np.clip(frame.astype(np.int64), 0, 65535) // 257).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class CaptureFrames:
    """Frames of an opened ``cv2.VideoCapture`` as ``uint8`` ``[H, W, 3]`` RGB arrays: the part that
    :class:`VideoReader` (files) and :class:`~fcpose.inference.sources.StreamReader` (webcams, streams)
    share. :meth:`_start` reads the first frame (one-line :class:`InputError` when there is none) and the
    stream's size, rate (``fps``, 25.0 when absent or implausible) and ``frame_count`` (0: unknown)."""

    _cap: cv2.VideoCapture | None = None
    _first: np.ndarray | None = None
    frame_count: int = 0

    def _start(self, cap: cv2.VideoCapture, what: str, no_frames: str, *, count_frames: bool = True) -> None:
        """Take ``cap`` over (released on failure): ``what`` names it when it cannot be opened."""
        if not cap.isOpened():
            cap.release()
            raise InputError(what)
        ok, frame = cap.read()
        if not ok or frame is None or frame.size == 0:
            cap.release()
            raise InputError(no_frames)
        self._cap, self._first = cap, bgr_to_rgb(frame)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float = fps if math.isfinite(fps) and 0.0 < fps <= MAX_PLAUSIBLE_FPS else DEFAULT_FPS
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count = int(count) if count_frames and math.isfinite(count) and count > 0 else 0
        self.height: int = int(self._first.shape[0])
        self.width: int = int(self._first.shape[1])

    def _frames(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            yield bgr_to_rgb(frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames()

    def __len__(self) -> int:
        """The container's frame count (may be an estimate; 0 if unknown)."""
        return self.frame_count

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoReader(CaptureFrames):
    """Frames of a video file, decoded with OpenCV, as ``uint8`` ``[H, W, 3]`` RGB arrays. ``width`` and ``height`` are
    those of the decoded frames. ``fps`` falls back to 25.0 when the container reports none (0, NaN or an implausible
    value). ``frame_count`` is the container's count, which can be an estimate; 0 when unknown. Iterating a second time
    restarts from the first frame. Use as a context manager or call :meth:`close`. :class:`InputError` if the file is
    missing, cannot be opened as a video, or has no frames."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_file(self.path, "video")
        self._iterated = False
        self._open()

    def _open(self) -> None:
        self.close()
        self._start(cv2.VideoCapture(str(self.path)),
                    f"cannot open video {self.path}: not a video or an unsupported codec",
                    f"video has no readable frames: {self.path}")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterated or self._cap is None:
            self._open()  # restart from the first frame
        self._iterated = True
        return self._frames()

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, fps={self.fps:g}, "
                f"frame_count={self.frame_count})")


def _have_pyav_encoder(name: str) -> bool:
    try:
        import av
    except ImportError:
        return False
    return name in getattr(av, "codecs_available", ())


class _PyAvBackend:
    """H.264 (libx264) or VP9 through PyAV's bundled FFmpeg."""

    def __init__(self, path: Path, codec: str, fps: float, size: tuple[int, int]):
        from fractions import Fraction

        import av

        options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
        self._container = av.open(str(path), mode="w", options=options)
        try:
            self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            self._stream.width, self._stream.height = size
            self._stream.pix_fmt = "yuv420p"  # what browsers decode
            if codec == "libx264":
                self._stream.options = {"crf": "20", "preset": "veryfast"}
        except Exception:
            self._container.close()
            raise
        self._frame_cls = av.VideoFrame

    def write(self, rgb: np.ndarray) -> None:
        frame = self._frame_cls.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()


class _OpenCvBackend:
    def __init__(self, path: Path, fourcc: str, fps: float, size: tuple[int, int]):
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            raise OSError(f"OpenCV cannot encode {fourcc}")

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


# (suffix written, library, codec, what it is) in order of preference for each requested suffix
_VIDEO_CHOICES: dict[str, list[tuple[str, str, str, str]]] = {
    ".mp4": [(".mp4", "pyav", "libx264", "H.264 MP4 via PyAV"),
             (".mp4", "opencv", "avc1", "H.264 MP4 via OpenCV"),
             (".webm", "pyav", "libvpx-vp9", "VP9 WebM via PyAV (no H.264 encoder found)"),
             (".webm", "opencv", "VP90", "VP9 WebM via OpenCV (no H.264 encoder found; pip install av for H.264)"),
             (".mp4", "opencv", "mp4v", "MPEG-4 Part 2 (mp4v) MP4: no H.264 or VP9 encoder found, and most "
                                        "browsers cannot play this; pip install av for H.264")],
    ".webm": [(".webm", "pyav", "libvpx-vp9", "VP9 WebM via PyAV"),
              (".webm", "opencv", "VP90", "VP9 WebM via OpenCV")],
    ".avi": [(".avi", "opencv", "MJPG", "Motion-JPEG AVI via OpenCV")],
}


class VideoWriter:
    """Write ``uint8`` ``[height, width, 3]`` RGB frames to a video file that browsers can play.

    For ``.mp4`` the first encoder that works wins: H.264 through PyAV (``pip install av``, the
    ``video`` extra), H.264 through OpenCV's FFmpeg, then VP9 in a ``.webm`` file (the suffix of
    :attr:`path` changes), and MPEG-4 Part 2 (``mp4v``, which most browsers cannot play) only as a last
    resort. ``.webm`` is VP9, ``.avi`` Motion-JPEG. :attr:`codec_note` says in words what was written.
    The encoders need even frame sizes, so an odd ``width``/``height`` is padded by one replicated
    column/row at the right/bottom (``frame_size`` is the size written). Parent folders are created.

    Frames go to a hidden temporary file next to the target, renamed to :attr:`path` by :meth:`close`: an interrupted
    run (Ctrl-C, an error inside ``with``) leaves no half-written video behind. :class:`InputError` for an unsupported
    suffix, invalid fps or size, or a writer that cannot be opened (e.g. the folder is not writable)."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _VIDEO_CHOICES:
            raise InputError(f"unsupported video output type '{self.path.suffix or '(none)'}': {self.path} "
                             f"(use {' or '.join(sorted(_VIDEO_CHOICES))})")
        fps = float(fps)
        if not math.isfinite(fps) or fps <= 0:
            raise InputError(f"invalid frame rate {fps} for video {self.path}")
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"invalid frame size {width}x{height} for video {self.path}")
        self.fps = fps
        self.width, self.height = int(width), int(height)
        self.frame_size = (self.width + self.width % 2, self.height + self.height % 2)  # (w, h) written
        self.frames_written = 0
        if self.path.is_dir():
            raise InputError(f"video output path is a directory: {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create folder for video {self.path}: {one_line(exc)}") from None
        self._backend = None
        self._tmp: Path | None = None
        for out_suffix, library, codec, note in _VIDEO_CHOICES[suffix]:
            if library == "pyav" and not _have_pyav_encoder(codec):
                continue
            target = self.path.with_suffix(out_suffix)
            tmp = target.with_name(f".{target.stem}.part{out_suffix}")
            try:
                backend = (_PyAvBackend(tmp, codec, fps, self.frame_size) if library == "pyav"
                           else _OpenCvBackend(tmp, codec, fps, self.frame_size))
            except Exception:  # this encoder is unavailable or the folder is not writable: try the next
                tmp.unlink(missing_ok=True)
                continue
            self._backend, self._tmp, self.path = backend, tmp, target
            self.codec, self.codec_note = codec, note
            break
        if self._backend is None:
            raise InputError(f"cannot open video writer for {self.path} (not writable or codec unavailable)")

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append one ``uint8`` ``[height, width, 3]`` RGB frame."""
        if self._backend is None:
            raise ValueError(f"VideoWriter for {self.path} is closed")
        frame = np.asarray(frame_rgb)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"VideoWriter expects uint8 frames of shape {(self.height, self.width, 3)}, "
                             f"got {frame.dtype} {frame.shape}")
        pad_w, pad_h = self.frame_size[0] - self.width, self.frame_size[1] - self.height
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        self._backend.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and rename it to :attr:`path` (no file at all when no frame was written)."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            try:
                backend.close()
            except BaseException:
                self.abort()
                raise
            if self.frames_written and self._tmp.is_file():
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def abort(self) -> None:
        """Stop writing and delete the unfinished file (:attr:`path` is not created)."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            try:
                backend.close()
            except Exception:
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


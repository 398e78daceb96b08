"""Reading videos, streams and image URLs, expanding command-line inputs, and writing videos (image files
are read by :mod:`fcpose.data.images`).

Every array that crosses this module's boundary is a ``uint8`` ``H x W x 3`` image in **RGB**
channel order (OpenCV's BGR is converted at the edge). Problems a user can cause — a missing,
unreadable, corrupt or unsupported file — raise :class:`~fcpose.errors.InputError` with a one-line
message that names the file; programming errors (a frame of the wrong shape) raise ``ValueError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..data.images import IMAGE_EXTENSIONS, check_file, one_line, pil_to_rgb
from ..errors import InputError

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


DEFAULT_FPS = 25.0
# Containers sometimes report a time base (90000) or garbage as the frame rate.
_MAX_PLAUSIBLE_FPS = 1000.0


# --------------------------------------------------------------------------------------------
# Expanding inputs
# --------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One image or video file to run on."""

    path: Path
    kind: Literal["image", "video"]


def _kind_of(path: Path) -> Literal["image", "video"] | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _dedup_key(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def collect_sources(inputs: Iterable[str | Path]) -> tuple[list[Source], list[str]]:
    """Expand image files, video files and folders into a list of :class:`Source`.

    A folder contributes its image and video files (not recursive, sorted by file name, hidden
    files and unknown extensions silently skipped). Paths that resolve to the same file are kept
    once, at their first position.

    Returns:
        ``(sources, problems)``: ``problems`` holds one line per input that cannot be used (a
        missing path, an explicitly given file with an unsupported extension, a folder with no
        usable files). The caller decides whether these are fatal.
    """
    sources: list[Source] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, kind: Literal["image", "video"]) -> None:
        key = _dedup_key(path)
        if key not in seen:
            seen.add(key)
            sources.append(Source(path=path, kind=kind))

    supported = " ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
    for item in inputs:
        path = Path(item)
        if not path.exists():
            problems.append(f"input not found: {path}")
        elif path.is_dir():
            try:
                entries = sorted(path.iterdir(), key=lambda p: p.name)
            except OSError as exc:
                problems.append(f"cannot list folder {path}: {one_line(exc.strerror or exc)}")
                continue
            found = 0
            for entry in entries:
                kind = _kind_of(entry)
                if entry.name.startswith(".") or kind is None or not entry.is_file():
                    continue
                add(entry, kind)
                found += 1
            if not found:
                problems.append(f"folder contains no image or video files: {path}")
        elif path.is_file():
            kind = _kind_of(path)
            if kind is None:
                problems.append(
                    f"unsupported file type '{path.suffix or '(none)'}': {path} (supported: {supported})"
                )
            else:
                add(path, kind)
        else:
            problems.append(f"input is neither a file nor a folder: {path}")
    return sources, problems


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------
def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        frame = (np.clip(frame.astype(np.int64), 0, 65535) // 257).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class VideoReader:
    """Frames of a video file, decoded with OpenCV, as ``uint8`` ``[H, W, 3]`` RGB arrays.

    ``width`` and ``height`` are those of the decoded frames. ``fps`` falls back to 25.0 when the
    container reports none (0, NaN or an implausible value). ``frame_count`` is the container's
    count, which can be an estimate; 0 when unknown. Iterating a second time restarts from the
    first frame. Use as a context manager or call :meth:`close`.

    Raises:
        InputError: the file is missing, cannot be opened as a video, or has no frames.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_file(self.path, "video")
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._iterated = False
        self._open()
        assert self._cap is not None and self._first is not None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float = fps if math.isfinite(fps) and 0.0 < fps <= _MAX_PLAUSIBLE_FPS else DEFAULT_FPS
        count = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count: int = int(count) if math.isfinite(count) and count > 0 else 0
        self.height: int = int(self._first.shape[0])
        self.width: int = int(self._first.shape[1])

    def _open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open video {self.path}: not a video or an unsupported codec")
        ok, frame = cap.read()
        if not ok or frame is None or frame.size == 0:
            cap.release()
            raise InputError(f"video has no readable frames: {self.path}")
        self._cap = cap
        self._first = _bgr_to_rgb(frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterated or self._cap is None:
            self._open()  # restart from the first frame
        self._iterated = True
        first, self._first = self._first, None
        if first is not None:
            yield first
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            yield _bgr_to_rgb(frame)

    def __len__(self) -> int:
        """The container's frame count (may be an estimate; 0 if unknown)."""
        return self.frame_count

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, fps={self.fps:g}, "
            f"frame_count={self.frame_count})"
        )


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

    Frames go to a hidden temporary file next to the target, renamed to :attr:`path` by :meth:`close`:
    an interrupted run (Ctrl-C, an error inside ``with``) leaves no half-written video behind.

    Raises:
        InputError: unsupported suffix, invalid fps or size, or the writer cannot be opened
            (e.g. the folder is not writable).
    """

    def __init__(self, path: str | Path, fps: float, width: int, height: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _VIDEO_CHOICES:
            raise InputError(
                f"unsupported video output type '{self.path.suffix or '(none)'}': {self.path} "
                f"(use {' or '.join(sorted(_VIDEO_CHOICES))})"
            )
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
            raise ValueError(
                f"VideoWriter expects uint8 frames of shape {(self.height, self.width, 3)}, "
                f"got {frame.dtype} {frame.shape}"
            )
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


# --------------------------------------------------------------------------------------------
# Live and remote sources, glob patterns
# --------------------------------------------------------------------------------------------
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
GLOB_CHARS = set("*?[")
DEFAULT_URL_TIMEOUT = 10.0


def is_webcam(spec: str) -> bool:
    """A webcam index such as ``0``."""
    return str(spec).isdigit()


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(STREAM_SCHEMES)


def _url_suffix(url: str) -> str:
    from urllib.parse import urlparse

    return Path(urlparse(url).path).suffix.lower()


def is_image_url(spec: str) -> bool:
    """An ``http(s)://`` URL whose path ends in an image extension."""
    return str(spec).lower().startswith(("http://", "https://")) and _url_suffix(str(spec)) in IMAGE_EXTENSIONS


def source_name(spec: str) -> str:
    """A file-name-safe name for a source: the stem of a path or URL path, ``webcam0`` for a webcam."""
    text = str(spec)
    if is_webcam(text):
        return f"webcam{text}"
    if is_url(text):
        from urllib.parse import urlparse

        parsed = urlparse(text)
        stem = Path(parsed.path).stem or parsed.hostname or "stream"
    else:
        stem = Path(text).stem or "input"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "stream"


def _check_url(url: str, timeout: float) -> None:
    """Fail early, with the reason, when an http(s) URL cannot be fetched."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-0"}), timeout=timeout):
            pass
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot open {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot open {url}: {one_line(getattr(exc, 'reason', exc))}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot open {url}: {one_line(exc)}") from None


def read_image_url(url: str, timeout: float = DEFAULT_URL_TIMEOUT, max_bytes: int = 256 << 20) -> np.ndarray:
    """Download and decode an image from an ``http(s)://`` URL (standard library + PIL) -> RGB uint8.

    Raises:
        InputError: unreachable, an HTTP error, too large, or not a decodable image.
    """
    import io
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot download image {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot download image {url}: {one_line(getattr(exc, 'reason', exc))}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot download image {url}: {one_line(exc)}") from None
    if len(data) > max_bytes:
        raise InputError(f"image at {url} is larger than {max_bytes >> 20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:
                pass
            arr = pil_to_rgb(img)
    except Exception as exc:
        raise InputError(f"cannot read image {url}: not an image or corrupt ({one_line(exc)})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image has zero size: {url}")
    return arr


class StreamReader:
    """Frames of a webcam (an index such as ``0``) or a network stream (``rtsp://``, ``http(s)://`` ...,
    through OpenCV's FFmpeg backend) as ``uint8`` ``[H, W, 3]`` RGB arrays; same interface as
    :class:`VideoReader`. ``frame_count`` is 0 for live streams (unknown); ``is_live`` is True for webcams
    and non-HTTP streams. A stream can be iterated once.

    Raises:
        InputError: the camera or URL cannot be opened, or sends no frame (one line, with the reason
            where the standard library can tell it for http(s)).
    """

    def __init__(self, spec: str, timeout: float = DEFAULT_URL_TIMEOUT):
        self.spec = str(spec)
        self.path = Path(source_name(self.spec))
        self.is_live = is_webcam(self.spec) or not self.spec.lower().startswith(("http://", "https://"))
        if self.spec.lower().startswith(("http://", "https://")):
            _check_url(self.spec, timeout)
        if is_webcam(self.spec):
            cap = cv2.VideoCapture(int(self.spec))
            what = f"webcam {self.spec}"
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      int(timeout * 1000)]
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
            what = f"stream {self.spec}"
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open {what} (unreachable, offline or not a video)")
        ok, frame = cap.read()
        if not ok or frame is None or frame.size == 0:
            cap.release()
            raise InputError(f"{what} sent no frames")
        self._cap: cv2.VideoCapture | None = cap
        self._first: np.ndarray | None = _bgr_to_rgb(frame)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float = fps if math.isfinite(fps) and 0.0 < fps <= _MAX_PLAUSIBLE_FPS else DEFAULT_FPS
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count: int = int(count) if not self.is_live and math.isfinite(count) and count > 0 else 0
        self.height, self.width = int(self._first.shape[0]), int(self._first.shape[1])

    def __iter__(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            yield _bgr_to_rgb(frame)

    def __len__(self) -> int:
        return self.frame_count

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expand_globs(inputs: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """Replace each glob pattern (``*``, ``?``, ``[``; not an existing path, not a URL) by the files it
    matches, sorted. Returns ``(inputs, problems)``; a pattern that matches nothing is a problem."""
    import glob

    out: list[str] = []
    problems: list[str] = []
    for item in inputs:
        text = str(item)
        if is_url(text) or Path(text).exists() or not (GLOB_CHARS & set(text)):
            out.append(text)
            continue
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            problems.append(f"no files match {text}")
        out.extend(matches)
    return out, problems


def open_frames(spec: str, timeout: float = DEFAULT_URL_TIMEOUT):
    """A reader of frames for a video file, a webcam index or a stream URL (:class:`VideoReader` or
    :class:`StreamReader`)."""
    if is_webcam(spec) or is_url(spec):
        return StreamReader(spec, timeout=timeout)
    return VideoReader(spec)

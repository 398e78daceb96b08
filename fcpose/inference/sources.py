"""Reading streams, webcams and image URLs and expanding command-line inputs (image files are read by
:mod:`fcpose.data.images`, video files read and written by :mod:`fcpose.data.video`).

Every array that crosses this module's boundary is a ``uint8`` ``H x W x 3`` image in **RGB**
channel order (OpenCV's BGR is converted at the edge). Problems a user can cause — a missing,
unreadable, corrupt or unsupported file — raise :class:`~fcpose.errors.InputError` with a one-line
message that names the file; programming errors (a frame of the wrong shape) raise ``ValueError``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..data.images import IMAGE_EXTENSIONS, decode_image
from ..data.video import VIDEO_EXTENSIONS, CaptureFrames, VideoReader
from ..errors import InputError, one_line


# ---- Expanding inputs ----------------------------------------------------------------------
@dataclass
class Source:
    """One image or video file to run on."""

    path: Path
    kind: Literal["image", "video"]


def image_id(path: Path, ids_by_name: dict[str, int] | None = None) -> int | None:
    """The COCO image id of an input: from ``--annotations`` (``ids_by_name``) by file name, else the file name's
    number (``000123.jpg`` -> 123), else None. The one rule for ``fcpose predict`` and Ray Data rows."""
    if ids_by_name and path.name in ids_by_name:
        return ids_by_name[path.name]
    return int(path.stem) if path.stem.isdigit() else None


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

    A folder contributes its image and video files (not recursive, sorted by file name, hidden files and unknown
    extensions silently skipped). Paths that resolve to the same file are kept once, at their first position. Returns
    ``(sources, problems)``: one line per input that cannot be used (a missing path, an explicitly given file with an
    unsupported extension, a folder with no usable files); the caller decides whether these are fatal."""
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
                problems.append(f"unsupported file type '{path.suffix or '(none)'}': {path} (supported: {supported})")
            else:
                add(path, kind)
        else:
            problems.append(f"input is neither a file nor a folder: {path}")
    return sources, problems


# ---- Live and remote sources, glob patterns ------------------------------------------------
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
    """Download and decode an image from an ``http(s)://`` URL (standard library + PIL) -> RGB uint8;
    :class:`InputError` if unreachable, an HTTP error, too large, or not a decodable image."""
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
    return decode_image(data, url)


class StreamReader(CaptureFrames):
    """Frames of a webcam (an index such as ``0``) or a network stream (``rtsp://``, ``http(s)://`` ...,
    through OpenCV's FFmpeg backend) as ``uint8`` ``[H, W, 3]`` RGB arrays; same interface as
    :class:`VideoReader`. ``frame_count`` is 0 for live streams (unknown); ``is_live`` is True for webcams
    and non-HTTP streams. A stream can be iterated once. :class:`InputError` (one line, with the reason
    where the standard library can tell it for http(s)) if the camera or URL cannot be opened or sends no frame."""

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
        self._start(cap, f"cannot open {what} (unreachable, offline or not a video)", f"{what} sent no frames",
                    count_frames=not self.is_live)


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

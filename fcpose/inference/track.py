"""Tracking people across frames with a predictor: sequences (:func:`open_sequences`), the threaded
detect-and-track loop (:func:`track_frames`, :func:`iter_track`, behind ``Predictor.track``), the tracker
settings and the rendering sink. The ``fcpose track`` command is :mod:`fcpose.inference.track_command`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrackerConfig, apply_overrides
from ..data.images import IMAGE_EXTENSIONS, as_rgb_array, read_image
from ..data.video import VIDEO_EXTENSIONS, VideoWriter
from ..errors import InputError
from ..structures import PosePredictor
from ..tracking.tracker import PoseTracker, TrackedPeople
from .pipeline import Prefetcher
from .sources import (
    DEFAULT_URL_TIMEOUT,
    expand_globs,
    is_image_url,
    is_url,
    is_webcam,
    open_frames,
    read_image_url,
    source_name,
)
from .visualize import PERSON_COLORS, draw_poses


def track_color(track_id: int) -> tuple[int, int, int]:
    """The colour of a track: the person palette indexed by ``track_id``."""
    return PERSON_COLORS[int(track_id) % len(PERSON_COLORS)]


# ---- Sequences -----------------------------------------------------------------------------
@dataclass
class Sequence:
    """One source to track: its frames and what is known about them."""

    name: str
    frames: Iterable[np.ndarray]
    fps: float = 25.0
    frame_count: int = 0  # 0: unknown (a stream)
    is_live: bool = False
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c()


class _ImageFrames:
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield read_image(p)


def open_sequences(inputs: list[str], timeout: float = DEFAULT_URL_TIMEOUT) -> tuple[list[Any], list[str]]:
    """Expand the command-line sources -> (``[(name, opener)]``, problems). Openers run lazily so one
    unreachable stream does not stop the others."""
    expanded_groups: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for item in inputs:
        text = str(item)
        if is_url(text) or is_webcam(text) or Path(text).exists():
            expanded_groups.append((text, [text]))
            continue
        files, probs = expand_globs([text])
        problems += probs
        if files:
            expanded_groups.append((text, files))

    out: list[tuple[str, Any]] = []
    for _label, files in expanded_groups:
        if len(files) == 1 and (is_url(files[0]) or is_webcam(files[0])):
            spec = files[0]
            if is_image_url(spec):
                out.append((source_name(spec), lambda s=spec: Sequence(source_name(s), [read_image_url(s, timeout)],
                                                                       frame_count=1)))
            else:
                out.append((source_name(spec), lambda s=spec: _open_stream(s, timeout)))
            continue
        paths = [Path(f) for f in files]
        if len(paths) == 1 and paths[0].is_dir():
            paths = sorted((p for p in paths[0].iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                            and not p.name.startswith(".")), key=lambda p: p.name)
            if not paths:
                problems.append(f"folder contains no images: {files[0]}")
                continue
            name = source_name(files[0])
        else:
            name = source_name(str(paths[0].parent.resolve())) if len(paths) > 1 else None
        videos = [p for p in paths if p.suffix.lower() in VIDEO_EXTENSIONS]
        images = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS]
        for p in paths:
            if p not in videos and p not in images:
                problems.append(f"unsupported file type '{p.suffix or '(none)'}': {p}")
        for v in videos:
            out.append((source_name(str(v)), lambda s=str(v): _open_stream(s, timeout)))
        if images:
            seq_name = name or source_name(str(images[0]))
            out.append((seq_name, lambda ims=images, n=seq_name: Sequence(n, _ImageFrames(ims), frame_count=len(ims))))
    return out, problems


def _open_stream(spec: str, timeout: float) -> Sequence:
    reader = open_frames(spec, timeout=timeout)
    return Sequence(source_name(spec), reader, fps=reader.fps, frame_count=reader.frame_count,
                    is_live=bool(getattr(reader, "is_live", False)), closers=[reader.close])


# ---- The loop ------------------------------------------------------------------------------
def track_frames(predictor: PosePredictor, frames: Iterable[np.ndarray], tracker: PoseTracker, *, batch_size: int = 1,
                 realtime: bool = False, prefetch: int = 8) -> Iterator[tuple[np.ndarray, TrackedPeople]]:
    """Detect and track: yields ``(frame, people)`` in frame order. Frames are decoded ahead in a thread
    (``prefetch`` of them); ``realtime`` drops the oldest decoded frames when inference falls behind."""
    batch_size = 1 if realtime else max(1, int(batch_size))
    with Prefetcher(frames, maxsize=max(prefetch, 2 * batch_size), drop=realtime) as pre:
        batch: list[np.ndarray] = []
        for _, frame in pre:
            batch.append(frame)
            if len(batch) < batch_size:
                continue
            for f, dets in zip(batch, predictor.predict(batch)):
                yield f, tracker.update_detections(dets)
            batch = []
        if batch:
            for f, dets in zip(batch, predictor.predict(batch)):
                yield f, tracker.update_detections(dets)


def iter_track(predictor: PosePredictor, frames, *, tracker: TrackerConfig | PoseTracker | None = None,
               smooth: bool | None = None, fps: float | None = None, batch_size: int = 1, realtime: bool = False,
               timeout: float = DEFAULT_URL_TIMEOUT) -> Iterator[TrackedPeople]:
    """:meth:`Predictor.track`: ``frames`` is an iterable of RGB ``uint8`` arrays (or image paths), or one
    video file / stream URL / webcam index; yields one :class:`TrackedPeople` per frame, in order."""
    closers = []
    if isinstance(frames, (str, Path)):
        reader = open_frames(str(frames), timeout=timeout)
        closers.append(reader.close)
        fps = fps or reader.fps
        frames = reader
    else:
        frames = (as_rgb_array(f) for f in frames)
    if isinstance(tracker, PoseTracker):
        trk = tracker
    else:
        cfg = tracker if tracker is not None else predictor.cfg.tracker
        if smooth is not None:
            import copy

            cfg = copy.deepcopy(cfg)
            cfg.smooth = bool(smooth)
        trk = make_tracker(predictor, cfg, fps=fps or 25.0)
    try:
        for _, people in track_frames(predictor, frames, trk, batch_size=batch_size, realtime=realtime):
            yield people
    finally:
        for c in closers:
            c()


def make_tracker(predictor: PosePredictor, cfg: TrackerConfig | None = None, fps: float = 25.0) -> PoseTracker:
    cfg = cfg if cfg is not None else predictor.cfg.tracker
    return PoseTracker(cfg, sigmas=predictor.cfg.keypoints.sigmas, fps=fps)


def tracker_config(base: TrackerConfig, overrides: list[str] | None, smooth: bool | None) -> TrackerConfig:
    """The checkpoint's tracker section, with ``--set tracker.KEY=VALUE`` overrides and ``--smooth``."""
    from ..config import FCPoseConfig

    cfg = FCPoseConfig()
    cfg.tracker = base
    bad = [o for o in overrides or [] if not o.strip().startswith("tracker.")]
    if bad:
        raise InputError(f"--set only takes tracker.* keys here, got {bad[0]!r}")
    cfg = apply_overrides(cfg, overrides)
    if smooth is not None:
        cfg.tracker.smooth = bool(smooth)
    t = cfg.tracker
    if not 0 <= t.low_threshold <= t.high_threshold <= 1 or t.max_missed < 0 or t.min_hits < 1:
        raise InputError("tracker: need 0 <= low_threshold <= high_threshold <= 1, max_missed >= 0, min_hits >= 1")
    if t.min_cutoff <= 0 or t.d_cutoff <= 0 or t.beta < 0 or not 0 <= t.pose_weight <= 1:
        raise InputError("tracker: need min_cutoff > 0, d_cutoff > 0, beta >= 0 and 0 <= pose_weight <= 1")
    return t


class VideoSink:
    """Renders and encodes frames in order (in the :class:`OrderedSink` thread); the file is written
    under a hidden temporary name, opened at the first frame, and renamed when closed."""

    def __init__(self, path: Path, fps: float, skeleton, keypoint_threshold: float, draw_threshold: float):
        self.path = path  # VideoWriter writes a hidden temporary file and renames it when closed
        self.fps = fps
        self.skeleton = skeleton
        self.keypoint_threshold = keypoint_threshold
        self.draw_threshold = draw_threshold
        self.writer: VideoWriter | None = None
        self.size: tuple[int, int] | None = None

    def __call__(self, item) -> None:
        frame, people = item
        if self.writer is None:
            self.size = (frame.shape[1], frame.shape[0])
            self.writer = VideoWriter(self.path, self.fps, frame.shape[1], frame.shape[0])
        keep = people.scores >= self.draw_threshold
        ids = people.track_ids[keep]
        image = draw_poses(frame, people.boxes[keep], people.scores[keep], people.keypoints[keep], self.skeleton,
                           keypoint_threshold=self.keypoint_threshold, colors=[track_color(i) for i in ids],
                           labels=[f"id {int(i)}" for i in ids])
        if (image.shape[1], image.shape[0]) != self.size:
            import cv2

            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def finish(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.close()
        return self.writer.path  # .mp4, or .webm where no H.264 encoder is installed

"""``fcpose track``: people tracked across the frames of videos, streams, webcams and image sequences.

Each SOURCE is one sequence: a video file, a webcam index (``0``), a stream URL (``rtsp://``,
``http(s)://`` video), an image URL (one frame), a folder of images or a glob pattern of images (frames
in file-name order), or one image. Outputs in ``--out``:

* ``tracks.json``: PoseTrack18-style (see :mod:`fcpose.tracking.posetrack`), one ``vid_id`` per source;
* ``mot/NAME.txt`` with ``--mot``: MOT-challenge lines ``frame,id,x,y,w,h,score,-1,-1,-1``;
* ``NAME.mp4`` (unless ``--no-render``): every person coloured by ``track_id``, with the id written.

Decoding, inference and rendering/encoding overlap (:mod:`fcpose.inference.pipeline`). Every output is
complete or absent: the JSON is rewritten atomically (every ``flush_seconds`` while a stream runs and at
the end, also after Ctrl-C), the video is written under a temporary name and renamed once closed.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

from tqdm import tqdm

from ..config import TrackerConfig
from ..errors import InputError
from ..structures import PosePredictor
from ..tracking.posetrack import PoseTrackWriter, person_entry
from .pipeline import OrderedSink
from .predictor import Predictor
from .sources import DEFAULT_URL_TIMEOUT
from .track import (
    DEFAULT_KEYPOINT_THRESHOLD,
    Sequence,
    VideoSink,
    make_tracker,
    open_sequences,
    track_frames,
    tracker_config,
)


def run_track(inputs: list[str], weights: str, out: str, *, smooth: bool = False, mot: bool = False,
              render: bool = True, realtime: bool = False, overrides: list[str] | None = None,
              score_threshold: float | None = None, device: str = "cpu", size: int | None = None,
              max_size: int | None = None, batch_size: int = 1, draw_threshold: float = 0.3,
              keypoint_threshold: float | None = None, progress: bool = True, precision: str = "fp32",
              compile: bool = False, optimize: bool = True, timeout: float = DEFAULT_URL_TIMEOUT,
              flush_seconds: float = 10.0, preprocess: str = "auto") -> int:
    """Track people in every source; returns the exit status (0 = all done, 1 = some sources failed).
    Ctrl-C ends the run after writing everything processed so far (KeyboardInterrupt is raised again)."""
    sequences, problems = open_sequences(inputs, timeout=timeout)
    if not sequences:
        raise InputError("; ".join(problems) if problems else "no sources were given")
    predictor = Predictor.from_checkpoint(weights, device=device, min_size=size, max_size=max_size,
                                          score_threshold=score_threshold, batch_size=batch_size,
                                          optimize=optimize, precision=precision, compile=compile,
                                          preprocess=preprocess)
    tcfg = tracker_config(predictor.cfg.tracker, overrides, smooth)
    kthr = (DEFAULT_KEYPOINT_THRESHOLD[predictor.cfg.model.keypoint.score]
            if keypoint_threshold is None else keypoint_threshold)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = PoseTrackWriter(out_dir / "tracks.json", mot_dir=out_dir / "mot" if mot else None,
                             keypoint_names=predictor.cfg.keypoints.names, skeleton=predictor.cfg.keypoints.skeleton)
    failures = list(problems)
    used: set[str] = set()
    totals = [0, 0]  # frames, people (kept up to date, for the summary after Ctrl-C too)
    opened = 0
    try:
        for name, opener in sequences:
            unique = name
            i = 1
            while unique in used:
                unique = f"{name}_{i}"
                i += 1
            used.add(unique)
            try:
                seq = opener()
            except InputError as exc:
                if len(sequences) == 1:
                    raise  # the only source: one line, exit status 2
                failures.append(str(exc))
                print(f"warning: {exc}", file=sys.stderr)
                continue
            opened += 1
            _track_sequence(predictor, seq, unique, writer, out_dir, tcfg, kthr, totals, render=render,
                            realtime=realtime, batch_size=batch_size, progress=progress,
                            draw_threshold=draw_threshold, flush_seconds=flush_seconds)
    finally:
        if opened:
            path = writer.write()  # complete and valid, also after Ctrl-C
            print(f"{totals[1]} tracked people in {totals[0]} frame(s) -> {path}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} source(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _track_sequence(predictor: PosePredictor, seq: Sequence, name: str, writer: PoseTrackWriter, out_dir: Path,
                    tcfg: TrackerConfig, kthr: float, totals: list[int], *, render: bool, realtime: bool,
                    batch_size: int, progress: bool, draw_threshold: float, flush_seconds: float) -> None:
    tracker = make_tracker(predictor, tcfg, fps=seq.fps)
    vnum = writer.add_video(name)
    frames = 0
    sink_fn = None
    with ExitStack() as stack:
        stack.callback(seq.close)
        if render:
            sink_fn = VideoSink(out_dir / f"{name}.mp4", seq.fps, predictor.cfg.keypoints.skeleton, kthr,
                                 draw_threshold)
            stack.callback(sink_fn.finish)  # runs after the sink thread has drained (LIFO)
            sink = stack.enter_context(OrderedSink(sink_fn, maxsize=8))
        # A stream has no length: tqdm then shows the frame count and the rate (FPS) instead of a bar.
        bar = stack.enter_context(tqdm(total=seq.frame_count or None, desc=name, unit="frame",
                                       disable=not progress, file=sys.stderr, dynamic_ncols=True))
        last_flush = time.monotonic()
        # Closed first on the way out (Ctrl-C too): stops the decoder thread before the reader is closed.
        loop = stack.enter_context(closing(track_frames(predictor, seq.frames, tracker, batch_size=batch_size,
                                                        realtime=realtime and seq.is_live)))
        for frame, tracked in loop:
            entries = [person_entry(int(t), b, float(s), k) for t, b, s, k in
                       zip(tracked.track_ids, tracked.boxes, tracked.scores, tracked.keypoints)]
            writer.add_frame(vnum, frames, entries, file_name=name, width=frame.shape[1], height=frame.shape[0])
            if render:
                sink.put((frame, tracked))
            frames += 1
            totals[0] += 1
            totals[1] += len(entries)
            bar.update(1)
            if seq.frame_count == 0 and time.monotonic() - last_flush > flush_seconds:
                writer.write()  # a live stream: keep a valid JSON of everything so far on disk
                last_flush = time.monotonic()

"""``fcpose track``: people tracked across the frames of videos, streams, webcams and image sequences.

Each SOURCE is one sequence: a video file, a webcam index (``0``), a stream URL (``rtsp://``,
``http(s)://`` video), an image URL (one frame), a folder of images or a glob pattern of images (frames
in file-name order), or one image. Outputs in ``--out``:

* ``tracks.json``: PoseTrack18-style (see :mod:`fcpose.tracking.posetrack`), one ``vid_id`` per source;
* ``mot/NAME.txt`` with ``--mot``: MOT-challenge lines ``frame,id,x,y,w,h,score,-1,-1,-1``;
* ``NAME.mp4`` (unless ``--no-render``): every person coloured by ``track_id``, with the id written.

Decoding, inference and rendering/encoding overlap (:mod:`fcpose.inference.pipeline`). Every output is
complete or absent: the JSON is rewritten atomically (every ``flush_seconds`` while a stream runs and at
the end, also after Ctrl-C), the video is written under a temporary name and renamed once closed."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

from tqdm import tqdm

from ..config import TrackerConfig
from ..errors import InputError
from ..fileio import check_output_dir, output_dir
from ..structures import PEOPLE_SCORE_THRESHOLD, PosePredictor
from ..tracking.posetrack import PoseTrackWriter, person_entry
from .pipeline import OrderedSink
from .predictor import Predictor
from .sources import DEFAULT_URL_TIMEOUT
from .track import (
    Sequence,
    VideoSink,
    make_tracker,
    open_sequences,
    track_frames,
    tracker_config,
)
from .visualize import keypoint_draw_threshold


def run_track(inputs: list[str], weights: str, out: str, *, smooth: bool = False, mot: bool = False,
              render: bool = True, realtime: bool = False, overrides: list[str] | None = None,
              score_threshold: float | None = None, device: str = "cpu", size: int | None = None,
              max_size: int | None = None, batch_size: int = 1, draw_threshold: float = PEOPLE_SCORE_THRESHOLD,
              keypoint_threshold: float | None = None, progress: bool = True, precision: str = "fp32",
              compile: bool = False, optimize: bool = True, timeout: float = DEFAULT_URL_TIMEOUT,
              flush_seconds: float = 10.0, preprocess: str = "auto") -> int:
    """Track people in every source; returns the exit status (0 = all done, 1 = some sources failed). Raises
    :class:`~fcpose.errors.InputError` / :class:`~fcpose.errors.OutputError` (one line, exit status 2 on the command
    line) when ``out`` cannot be a writable folder (checked before the model loads, as ``fcpose predict`` does) or when
    no source gives a single frame; then nothing is written and an output folder this run created is removed again.
    Ctrl-C ends the run after writing everything processed so far (KeyboardInterrupt is raised again)."""
    sequences, problems = open_sequences(inputs, timeout=timeout)
    if not sequences:
        raise InputError("; ".join(problems) if problems else "no sources were given")
    check_output_dir(out)  # before the model loads: a bad --out fails at once (created once the model works)
    predictor = Predictor.from_checkpoint(weights, device=device, min_size=size, max_size=max_size,
                                          score_threshold=score_threshold, batch_size=batch_size,
                                          optimize=optimize, precision=precision, compile=compile,
                                          preprocess=preprocess)
    tcfg = tracker_config(predictor.cfg.tracker, overrides, smooth)
    kthr = keypoint_draw_threshold(predictor.cfg, keypoint_threshold)
    # created now that the model works; removed again (if still empty) when the run fails or is interrupted
    with output_dir(out) as out_dir:
        return _track_into(out_dir, sequences, problems, predictor, tcfg, kthr, mot=mot, render=render,
                           realtime=realtime, batch_size=batch_size, progress=progress,
                           draw_threshold=draw_threshold, flush_seconds=flush_seconds)


class _Totals:
    """What the run tracked so far (kept up to date, for the summary after Ctrl-C too)."""

    def __init__(self):
        self.frames = 0
        self.person_frames = 0  # one person in one frame
        self.tracks: set[tuple[int, int]] = set()  # (video number, track id): ids restart in every sequence

    def summary(self, path: Path) -> str:
        def n(count: int, what: str) -> str:
            return f"{count} {what}{'' if count == 1 else 's'}"

        return (f"{n(len(self.tracks), 'track')}, {n(self.person_frames, 'person-frame')} in "
                f"{n(self.frames, 'frame')} -> {path}")


def _track_into(out_dir: Path, sequences: list, problems: list[str], predictor: PosePredictor, tcfg: TrackerConfig,
                kthr: float, *, mot: bool, render: bool, realtime: bool, batch_size: int, progress: bool,
                draw_threshold: float, flush_seconds: float) -> int:
    """The body of :func:`run_track` once the model is loaded and ``out_dir`` exists."""
    writer = PoseTrackWriter(out_dir / "tracks.json", mot_dir=out_dir / "mot" if mot else None,
                             keypoint_names=predictor.cfg.keypoints.names, skeleton=predictor.cfg.keypoints.skeleton)
    failures = list(problems)
    held: list[str] = []  # warnings wait for the first tracked frame: if none comes, the run ends with one line
    used: set[str] = set()
    totals = _Totals()

    def say_held() -> None:
        while held:
            tqdm.write(held.pop(0), file=sys.stderr)

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
                _track_sequence(predictor, seq, unique, writer, out_dir, tcfg, kthr, totals, render=render,
                                realtime=realtime, batch_size=batch_size, progress=progress,
                                draw_threshold=draw_threshold, flush_seconds=flush_seconds, started=say_held)
            except InputError as exc:  # this source cannot be opened or read on: the others still run
                failures.append(str(exc))
                held.append(f"warning: {exc}")
                if totals.frames:
                    say_held()
    finally:
        if totals.frames:  # complete and valid, also after Ctrl-C or an error
            say_held()
            print(totals.summary(writer.write()), file=sys.stderr)
    if not totals.frames:  # nothing tracked: one line, exit status 2, nothing written
        raise InputError(failures[0] if len(failures) == 1 else
                         f"none of the {len(failures)} sources could be used: " + "; ".join(failures))
    if failures:
        print(f"{len(failures)} source(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _track_sequence(predictor: PosePredictor, seq: Sequence, name: str, writer: PoseTrackWriter, out_dir: Path,
                    tcfg: TrackerConfig, kthr: float, totals: _Totals, *, render: bool, realtime: bool,
                    batch_size: int, progress: bool, draw_threshold: float, flush_seconds: float,
                    started=lambda: None) -> None:
    """Track one sequence into ``writer`` (and its video); ``started()`` is called at its first frame."""
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
            if not totals.frames:
                started()
            frames += 1
            totals.frames += 1
            totals.person_frames += len(entries)
            totals.tracks.update((vnum, int(t)) for t in tracked.track_ids)
            bar.update(1)
            if seq.frame_count == 0 and time.monotonic() - last_flush > flush_seconds:
                writer.write()  # a live stream: keep a valid JSON of everything so far on disk
                last_flush = time.monotonic()

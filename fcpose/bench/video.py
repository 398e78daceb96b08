"""``fcpose bench --video FILE``: end-to-end video FPS next to network-only FPS.

* **network-only**: the :class:`~fcpose.inference.predictor.Predictor` (preprocessing, network, selection,
  dynamic heads, decoding) on frames already decoded into memory — what the model alone sustains;
* **end-to-end**: ``fcpose track`` on the video file — decoding in a thread, the same Predictor, the
  tracker, rendering and MP4 encoding in another thread (:mod:`.pipeline`);
* **serial** (optional): the same end-to-end work one step after another, without the threads.

The video's frames are repeated up to ``frames`` (written once to a temporary MP4, so decoding is real).
The measurements are interleaved over ``rounds`` (network, end-to-end, network, ...) so a load change on a
shared machine hits both; each FPS is the total frames over the total time of its kind."""

from __future__ import annotations

import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ..config import TrackerConfig
from ..data.video import VideoReader, VideoWriter
from ..inference.pipeline import OrderedSink
from ..inference.predictor import Predictor
from ..inference.track import VideoSink, make_tracker, track_frames
from ..inference.visualize import keypoint_draw_threshold
from .people import load_bench_model


def _loop_video(src: Path, dst: Path, frames: int) -> tuple[int, int, float]:
    with VideoReader(src) as reader:
        decoded = list(reader)
        fps = reader.fps
    with VideoWriter(dst, fps, decoded[0].shape[1], decoded[0].shape[0]) as w:
        for f in itertools.islice(itertools.cycle(decoded), frames):
            w.write(f)
    return decoded[0].shape[1], decoded[0].shape[0], fps


class _Timed:
    """The Predictor, timing its calls (the network's share of the pipeline's wall clock)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.seconds = 0.0

    def predict(self, batch):
        t = time.perf_counter()
        try:
            return self.predictor.predict(batch)
        finally:
            self.seconds += time.perf_counter() - t


class VideoRuns:
    """The three measured kinds on one looped video: seconds and CPU seconds per run of each kind."""

    def __init__(self, predictor: Predictor, looped: Path, out: Path, fps: float):
        self.predictor, self.looped, self.out, self.fps = predictor, looped, out, fps
        cfg = predictor.cfg
        self.skeleton, self.kthr = cfg.keypoints.skeleton, keypoint_draw_threshold(cfg)
        with VideoReader(looped) as r:
            self.in_memory = list(r)
        self.times: dict[str, list[float]] = {"network_only": [], "end_to_end": [], "serial": []}
        self.cpu: dict[str, list[float]] = {"network_only": [], "end_to_end": [], "serial": []}
        self.inside: list[float] = []  # seconds in the Predictor during each threaded end-to-end run
        self.people = 0

    def network_only(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        for f in self.in_memory:
            self.predictor(f)
        self.cpu["network_only"].append(time.process_time() - c0)
        self.times["network_only"].append(time.perf_counter() - t0)

    def end_to_end(self, threaded: bool) -> None:
        """``fcpose track``'s work on the file: threaded (decode and render/encode in threads) or serial."""
        tracker = make_tracker(self.predictor, TrackerConfig(), fps=self.fps)
        sink_fn = VideoSink(self.out, self.fps, self.skeleton, self.kthr, 0.3)
        people, timed = 0, _Timed(self.predictor)
        t0, c0 = time.perf_counter(), time.process_time()
        with VideoReader(self.looped) as reader:
            if threaded:
                with OrderedSink(sink_fn, maxsize=8) as sink:
                    for frame, tracked in track_frames(timed, reader, tracker):
                        sink.put((frame, tracked))
                        people += len(tracked)
            else:
                for frame in reader:
                    tracked = tracker.update_detections(self.predictor(frame))
                    sink_fn((frame, tracked))
                    people += len(tracked)
        sink_fn.finish()
        kind = "end_to_end" if threaded else "serial"
        self.cpu[kind].append(time.process_time() - c0)
        self.times[kind].append(time.perf_counter() - t0)
        if threaded:
            self.inside.append(timed.seconds)
            self.people = people


def run_video_bench(video: str | Path, *, config: str | None = "fcpose_r50_fpn", weights: str | None = None,
                    frames: int = 20, rounds: int = 2, warmup: int = 2, size: int | None = None,
                    max_size: int | None = None, device: str = "cpu", threads: int | None = None,
                    serial: bool = True, overrides: list[str] | None = None, log=None) -> dict:
    """Time the video pipeline (see the module docstring) -> the JSON-ready report."""
    say = log or (lambda msg: None)
    if threads:
        torch.set_num_threads(int(threads))
    model, weights_name = load_bench_model(config, weights, overrides)
    predictor = Predictor(model, device=device, min_size=size, max_size=max_size, batch_size=1, optimize=True)
    with tempfile.TemporaryDirectory(prefix="fcpose_vbench_") as tmp:
        looped = Path(tmp) / "input.mp4"
        width, height, fps = _loop_video(Path(video), looped, frames)
        runs = VideoRuns(predictor, looped, Path(tmp) / "out.mp4", fps)
        for f in runs.in_memory[:warmup]:
            predictor(f)
        for r in range(rounds):
            runs.network_only()
            runs.end_to_end(True)
            if serial:
                runs.end_to_end(False)
            last = {k: v[-1] for k, v in runs.times.items() if v}
            say(f"round {r + 1}/{rounds}: " + ", ".join(f"{k.replace('_', '-')} {frames / t:.2f} FPS"
                                                      for k, t in last.items()))
    report = {"benchmark": "video_pipeline", "config": predictor.cfg.name or config, "weights": weights_name,
              "video": str(video), "frame_size": [height, width], "network_input_short_side": predictor.min_size,
              "network_input_max_size": predictor.max_size, "frames": frames, "rounds": rounds,
              "people_tracked_last_round": runs.people}
    report.update(_video_measures(runs, frames, rounds))
    report.update({"torch_threads": torch.get_num_threads(), "device": str(predictor.device),
                   "machine": platform.platform(), "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg())})
    return report


def _video_measures(runs: VideoRuns, frames: int, rounds: int) -> dict:
    """FPS of each kind (total frames over total time), their ratios, and the CPU-time view."""
    times, cpu, inside = runs.times, runs.cpu, runs.inside
    fps_of = {k: round(frames * len(v) / sum(v), 3) for k, v in times.items() if v}
    c = {k: round(sum(v) / (frames * len(v)), 4) for k, v in cpu.items() if v}
    out = {
        "fps": fps_of,
        "end_to_end_over_network": round(fps_of["end_to_end"] / fps_of["network_only"], 3),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items() if v},
        # CPU seconds of this process (all its threads) per frame: robust to other processes' load; the
        # end-to-end excess over network-only is what decoding, tracking, rendering and encoding cost.
        # Measured inside the same runs, so another process's load hits both sides: the share of the
        # end-to-end wall clock spent in the Predictor (1.0 = decoding, tracking, rendering, encoding fully
        # hidden) and the Predictor's time per frame inside the pipeline vs alone (contention for cores).
        "network_share_of_end_to_end": round(sum(inside) / sum(times["end_to_end"]), 3),
        "predictor_seconds_per_frame_in_pipeline": round(sum(inside) / (frames * len(inside)), 4),
        "predictor_seconds_per_frame_alone": round(sum(times["network_only"]) / (frames * rounds), 4),
        "cpu_seconds_per_frame": c,
        "cpu_end_to_end_over_network": round(c["end_to_end"] / c["network_only"], 3),
    }
    if "serial" in fps_of:
        out["serial_over_network"] = round(fps_of["serial"] / fps_of["network_only"], 3)
    return out


def format_video_report(report: dict) -> str:
    f = report["fps"]
    lines = [f"{report['config']} ({report['weights']} weights), {report['frames']} frames of {report['video']} "
             f"{report['frame_size'][1]}x{report['frame_size'][0]}, network input {report['network_input_short_side']}"
             f"/{report['network_input_max_size']}, {report['rounds']} rounds, {report['torch_threads']} threads",
             f"  network-only  {f['network_only']:8.3f} FPS",
             f"  end-to-end    {f['end_to_end']:8.3f} FPS  ({report['end_to_end_over_network']:.3f} x network-only)"]
    if "serial" in f:
        lines.append(f"  serial        {f['serial']:8.3f} FPS  ({report['serial_over_network']:.3f} x network-only)")
    lines.append(f"  network share of the end-to-end wall clock {report['network_share_of_end_to_end']:.3f}; "
                 f"Predictor s/frame in the pipeline {report['predictor_seconds_per_frame_in_pipeline']:.3f}, "
                 f"alone {report['predictor_seconds_per_frame_alone']:.3f}")
    c = report["cpu_seconds_per_frame"]
    lines.append(f"  CPU s/frame   network-only {c['network_only']:.3f}, end-to-end {c['end_to_end']:.3f} "
                 f"({report['cpu_end_to_end_over_network']:.3f} x)")
    return "\n".join(lines)

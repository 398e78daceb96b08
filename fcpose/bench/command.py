"""``fcpose bench``: the command body — the benchmark the flags ask for (people, backends side by side, or
video), its table printed and its JSON report written."""

from __future__ import annotations

import argparse
import sys

from ..fileio import check_output_file
from .people import format_report, run_bench, write_json


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr)


def run_bench_command(args: argparse.Namespace) -> int:
    """Run ``fcpose bench`` with the parsed flags of ``fcpose.cli._add_bench``; 0 on success."""
    if args.json:
        check_output_file(args.json, "benchmark report")  # before the slow part
    if args.score_threshold is not None:  # the people and video benchmarks take it as a config override
        args.overrides = [*args.overrides, f"test.score_threshold={args.score_threshold}"]
    if args.backends:
        report, table = _backends(args)
    elif args.video:
        report, table = _video(args)
    else:
        report = run_bench(args.config, args.weights, size=args.size, max_size=args.max_size, persons=args.persons,
                           device=args.device, runs=args.runs, warmup=args.warmup, precision=args.precision,
                           compile=args.compile, optimize=not args.no_optimize, image=args.image,
                           threads=args.threads, probe=not args.no_probe, flops=not args.no_flops,
                           overrides=args.overrides, note=args.note, batch=args.batch, preprocess=args.preprocess,
                           log=_log)
        table = format_report(report)
    print(table)
    if args.json:
        print(f"wrote {write_json(report, args.json)}", file=sys.stderr)
    return 0


def _backends(args: argparse.Namespace) -> tuple[dict, str]:
    from .backends import format_backend_report, run_backend_bench

    backends = [b.strip() for b in args.backends.split(",")]
    report = run_backend_bench(args.config, args.weights, backends=backends, size=args.size, max_size=args.max_size,
                               runs=args.runs, warmup=args.warmup, threads=args.threads, image=args.image,
                               score_threshold=args.score_threshold, calibration=args.calibration,
                               calib_images=args.calib_images, overrides=args.overrides, note=args.note, log=_log)
    return report, format_backend_report(report)


def _video(args: argparse.Namespace) -> tuple[dict, str]:
    from ..data.video import VideoReader
    from .video import format_video_report, run_video_bench

    VideoReader(args.video).close()  # a missing or unreadable video: one line
    report = run_video_bench(args.video, config=args.config, weights=args.weights, frames=args.video_frames,
                             rounds=args.video_rounds, warmup=args.warmup, size=args.size, max_size=args.max_size,
                             device=args.device, threads=args.threads, overrides=args.overrides, log=_log)
    return report, format_video_report(report)

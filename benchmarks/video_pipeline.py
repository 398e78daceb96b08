"""End-to-end video FPS vs network-only FPS for the R-50 and DLA-34 presets (random weights), in one run.

Each preset goes through ``fcpose bench --video`` (:mod:`fcpose.bench.video`): the Predictor on
frames decoded in memory (network-only) against the whole ``fcpose track`` pipeline on the video file
(threaded decoding, the Predictor, tracking, rendering and MP4 encoding), interleaved over rounds, plus the
same work done serially. Prints a table and writes JSON.

    python benchmarks/video_pipeline.py --video /work/shared/data/video/demo.mp4 --size 384 \
        --json benchmarks/results/video_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcpose.bench.video import format_video_report, run_video_bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default="/work/shared/data/video/demo.mp4")
    ap.add_argument("--presets", default="fcpose_r50_fpn,fcpose_dla34_rt")
    ap.add_argument("--size", type=int, default=None, help="network short side for every preset (default: each "
                                                            "preset's test size)")
    ap.add_argument("--max-size", type=int, default=None)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-serial", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    reports = []
    for preset in args.presets.split(","):
        rep = run_video_bench(args.video, config=preset, frames=args.frames, rounds=args.rounds, size=args.size,
                              max_size=args.max_size, threads=args.threads, serial=not args.no_serial,
                              log=lambda m, p=preset: print(f"[{p}] {m}", file=sys.stderr))
        print(format_video_report(rep), flush=True)
        reports.append(rep)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"benchmark": "video_pipeline", "runs": reports}, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency against the number of people for every preset (and ``VARIANTS``), one JSON report each.

    python benchmarks/bench_people.py                       # all presets, optimised fp32, CPU
    python benchmarks/bench_people.py --presets fcpose_r50_fpn --variants optimized,reference,bf16,nchw
    python benchmarks/bench_people.py --weights model.pt --presets my_run   # a checkpoint (name used for the file)

Writes ``benchmarks/results/people_<preset>_<device>_<variant>.json`` (the format of ``fcpose bench --json``,
see :mod:`fcpose.bench.people`) and prints each report's table. The maintainer's knobs of the measurement live
here, not in ``fcpose bench``: ``--post-threads``, ``--candidates-per-person`` and ``--no-graphs``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fcpose.bench.people import format_report, run_bench, write_json
from fcpose.cli import add_model_options
from fcpose.config import list_presets
from fcpose.inference.runner import GRAPHS_ENV

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ["fcpose_r50_fpn", "fcpose_r101_fpn", "fcpose_dla34_rt", "fcpose_r18_tiny"]
VARIANTS = {
    "optimized": {},
    "reference": {"optimize": False},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "nchw": {"channels_last": False},
    "compile": {"compile": True},
    "post1": {"post_threads": 1},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated (default {','.join(PRESETS)})")
    p.add_argument("--variants", default="optimized", help=f"comma-separated from {','.join(VARIANTS)}")
    p.add_argument("--persons", default="1,5,10,20,50", help="comma-separated counts; 'auto' = normal threshold + NMS")
    add_model_options(p, "weights", "device", "threads", "size", weights_required=False)  # weights: else random
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--image", default=None, help="benchmark image (default synthetic, exactly the preset's size)")
    p.add_argument("--post-threads", type=int, default=None,
                   help="threads for selection/NMS/heads (default: --threads); 1 is robust on a busy machine")
    p.add_argument("--candidates-per-person", type=int, default=20,
                   help="forced mode: NMS candidates per person (0: all top-k locations; default 20)")
    p.add_argument("--no-graphs", action="store_true", help="CUDA: time the eager route only (no CUDA graphs)")
    p.add_argument("--note", default="", help="stored in every JSON, e.g. 'preliminary: busy machine'")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    persons = [v if v == "auto" else int(v) for v in args.persons.split(",")]
    if args.no_graphs:
        os.environ[GRAPHS_ENV] = "0"  # read when each runner is built
    known = set(list_presets())
    for preset in args.presets.split(","):
        if not args.weights and preset not in known:
            print(f"skipping unknown preset {preset}", file=sys.stderr)
            continue
        for variant in args.variants.split(","):
            options = {"post_threads": args.post_threads, **VARIANTS[variant]}
            print(f"== {preset} {variant}", file=sys.stderr, flush=True)
            report = run_bench(preset, args.weights, size=args.size, persons=persons, device=args.device,
                               runs=args.runs, warmup=args.warmup, threads=args.threads, image=args.image,
                               candidates_per_person=args.candidates_per_person, note=args.note, **options)
            report["variant"] = variant
            print(format_report(report), flush=True)
            write_json(report, Path(args.out_dir) / f"people_{preset}_{args.device}_{variant}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

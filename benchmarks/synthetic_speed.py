"""Speed of the synthetic scene generator (issue 3): time to sample and draw a 512x384 scene by number of people.

    python benchmarks/synthetic_speed.py [--scenes 20] [--json benchmarks/results/synthetic_speed.json]

For each people count 1..8, renders ``--scenes`` scenes (seeded, after one warm-up scene) and reports the
median and mean milliseconds per scene; also the time per scene over all counts together. Prints a table
and writes the JSON. This replaces a timed unit test: speed is read from this report, not asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fcpose.data.synthetic import render_scene  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20, help="scenes per people count")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "synthetic_speed.json"))
    args = ap.parse_args()
    if args.scenes < 1:
        ap.error("--scenes must be at least 1")

    render_scene(np.random.default_rng(0), args.height, args.width, 4)  # warm-up
    rows, every = [], []
    for people in range(1, 9):
        times = []
        for i in range(args.scenes):
            rng = np.random.default_rng([people, i])
            start = time.perf_counter()
            render_scene(rng, args.height, args.width, people)
            times.append(1000.0 * (time.perf_counter() - start))
        every += times
        rows.append({"people": people, "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times)})
        print(f"{people} people: median {rows[-1]['median_ms']:.1f} ms, mean {rows[-1]['mean_ms']:.1f} ms per scene")
    overall = {"median_ms": statistics.median(every), "mean_ms": statistics.fmean(every),
               "scenes_per_s": 1000.0 / statistics.fmean(every)}
    print(f"all: mean {overall['mean_ms']:.1f} ms per scene = {overall['scenes_per_s']:.1f} scenes/s (one process)")
    report = {"what": "synthetic scene generation time (sample + draw, no JPEG encoding)",
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
              "size": [args.width, args.height], "scenes_per_count": args.scenes, "by_people": rows,
              "overall": overall}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

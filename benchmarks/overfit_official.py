"""Over-fitting check of the official training recipe on coco_tiny: ``fcpose train --config
overfit_tiny_official``, then ``fcpose eval`` on the same images. Target: keypoint AP >= 0.9 within 10 minutes on
2 CPU cores (docs/official_training.md). Writes ``benchmarks/results/overfit_official.json`` (``--out``).

    python benchmarks/overfit_official.py [--data ANN.json --images DIR] [--set key=value ...] [--out F]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from fcpose.bench.machine import loadavg, own_cpu_seconds
from fcpose.cli import main as fcpose_main
from fcpose.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco_tiny"


def run(data: Path, images: Path, overrides: list[str], work: Path) -> dict:
    out = work / "run"
    extra = [a for o in overrides for a in ("--set", o)]
    tic = time.perf_counter()
    rc = fcpose_main(["train", "--config", "overfit_tiny_official", "--data", str(data), "--images", str(images),
                      "--output", str(out), "--no-progress", *extra])
    train_s = time.perf_counter() - tic
    if rc != 0:
        raise SystemExit(f"training failed with status {rc}")
    rc = fcpose_main(["eval", "--weights", str(out / "model_final.pt"), "--data", str(data), "--images",
                      str(images), "--json", str(work / "eval.json"), "--no-progress"])
    total_s = time.perf_counter() - tic
    if rc != 0:
        raise SystemExit(f"evaluation failed with status {rc}")
    metrics = json.loads((work / "eval.json").read_text())
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"preset": "overfit_tiny_official", "overrides": overrides, "keypoint_AP": metrics["keypoints"]["AP"],
            "keypoints": metrics["keypoints"], "bbox": metrics.get("bbox", {}), "train_seconds": round(train_s, 1),
            "total_seconds": round(total_s, 1), "target": {"keypoint_AP": 0.9, "seconds": 600},
            "met": metrics["keypoints"]["AP"] >= 0.9 and total_s <= 600,
            "first_loss": losses[0].get("total_loss"), "last_loss": losses[-1].get("total_loss"),
            "iterations": losses[-1].get("iter"), "torch": torch.__version__, "threads": torch.get_num_threads(),
            # on a machine shared with other jobs, cpu_seconds / threads estimates the wall time on an idle one
            "cpu_seconds": round(own_cpu_seconds(), 1), "load_average_1min": (loadavg() or [None])[0],
            "machine": platform.processor() or platform.machine()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA / "person_keypoints.json"))
    ap.add_argument("--images", default=str(DEFAULT_DATA))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "overfit_official.json"))
    args = ap.parse_args()
    if not Path(args.data).is_file():
        print(f"error: {args.data} not found (coco_tiny lives in ../shared/data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        result = run(Path(args.data), Path(args.images), args.overrides, Path(work))
    text = json.dumps(result, indent=2)
    print(text)
    atomic_write_text(args.out, text + "\n")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

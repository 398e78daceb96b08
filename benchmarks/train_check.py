"""Training to a target: train a config from scratch, score it with ``fcpose eval``, each step timed.

    python benchmarks/train_check.py overfit     # issue 10: overfit_tiny_official, coco_tiny, scored on the same images
    python benchmarks/train_check.py synthetic   # issue 3: configs/synth_r18.yaml, 2,000 synthetic scenes (seed 1),
                                                 # scored on 200 held-out ones (seed 2)
    python benchmarks/train_check.py CHECK [--config C] [--set key=value ...] [--out F]

Targets (``CHECKS``, 2 CPU cores): overfit keypoint AP >= 0.9 within 10 minutes, synthetic >= 0.7 within 30;
``met`` in the report says whether the run reached it. With a weight average (``solver.ema_decay``) the raw
weights of ``last.pt`` are scored too (not timed). Writes ``benchmarks/results/<CHECK's file>`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from fcpose.bench.machine import loadavg, machine_info, own_cpu_seconds
from fcpose.bench.people import write_json
from fcpose.config import load_config
from fcpose.data.synthetic import generate_dataset
from fcpose.engine.evaluate import run_eval
from fcpose.engine.trainer import train

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = REPO.parent / "shared" / "data" / "coco_tiny"
CHECKS = {  # config, target keypoint AP, target minutes, results file
    "overfit": ("overfit_tiny_official", 0.9, 10, "overfit_official.json"),
    "synthetic": (str(REPO / "benchmarks" / "configs" / "synth_r18.yaml"), 0.7, 30, "synthetic_generalization.json"),
}


def datasets(args, work: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """(annotations, images) to train on and to score on: coco_tiny (or --data) for both, or synthetic scenes
    generated into --work (kept there and reused)."""
    if args.check == "overfit":
        data = (Path(args.data), Path(args.images or Path(args.data).parent))
        return data, data
    out = []
    for name, num, seed in (("train", args.train, 1), ("val", args.val, 2)):
        folder = work / f"{name}_{num}_s{seed}"
        if not (folder / "annotations.json").is_file():
            generate_dataset(folder, num, seed=seed, progress=False)
        out.append((folder / "annotations.json", folder / "images"))
    return out[0], out[1]


def score(weights: Path, data: tuple[Path, Path], json_out: Path) -> dict:
    """``fcpose eval`` of a checkpoint: the metrics."""
    if run_eval(data=str(data[0]), weights=str(weights), images=str(data[1]), json_out=str(json_out),
                progress=False) != 0:
        raise SystemExit(f"evaluating {weights} failed")
    return json.loads(json_out.read_text())


def run_check(args, work: Path) -> dict:
    config, target_ap, minutes, _ = CHECKS[args.check]
    t0 = time.perf_counter()
    train_data, eval_data = datasets(args, work)
    times = {"generate_s": time.perf_counter() - t0}
    cfg = load_config(args.config or config, args.overrides)
    losses: list = []
    t1 = time.perf_counter()
    result = train(cfg, data=str(train_data[0]), images=str(train_data[1]), output=str(work / "run"),
                   progress=False, loss_log=losses)
    times["train_s"] = time.perf_counter() - t1
    metrics = score(work / "run" / "model_final.pt", eval_data, work / "eval.json")  # the weight average if any
    times["eval_s"] = time.perf_counter() - t1 - times["train_s"]
    times["total_s"] = time.perf_counter() - t0
    ap = metrics["keypoints"]["AP"]
    report = {
        "check": args.check, "config": args.config or config, "overrides": args.overrides,
        "train_data": str(train_data[0]), "eval_data": str(eval_data[0]), "keypoint_AP": ap, "metrics": metrics,
        "iterations": result.iterations, "skipped_steps": result.skipped_steps,
        "first_losses": losses[0][1] if losses else None, "final_losses": result.last_losses,
        "times": {k: round(v, 1) for k, v in times.items()}, "target": {"keypoint_AP": target_ap, "minutes": minutes},
        "met": ap >= target_ap and times["total_s"] <= 60 * minutes,
        # on a machine shared with other jobs, cpu_seconds / threads estimates the wall time on an idle one
        "cpu_seconds": round(own_cpu_seconds(), 1), "threads": torch.get_num_threads(), "loadavg": loadavg(),
        "machine": machine_info(torch.device("cpu")),
    }
    if cfg.solver.ema_decay > 0:  # for comparison (not timed): the last raw weights
        raw = score(work / "run" / "last.pt", eval_data, work / "eval_raw.json")
        report["metrics_without_weight_average"] = raw
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=CHECKS)
    ap.add_argument("--config", default=None, help="instead of the check's config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", default=str(COCO_TINY / "person_keypoints.json"), help="overfit: annotation JSON")
    ap.add_argument("--images", default=None, help="overfit: image folder (default: the annotation file's)")
    ap.add_argument("--train", type=int, default=2000, help="synthetic: training scenes")
    ap.add_argument("--val", type=int, default=200, help="synthetic: held-out scenes")
    ap.add_argument("--work", default=None, help="keep the scenes and the run here (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="the JSON report (default: the check's file in benchmarks/results)")
    args = ap.parse_args()
    if args.check == "overfit" and not Path(args.data).is_file():
        print(f"error: {args.data} not found (coco_tiny lives in ../shared/data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = run_check(args, Path(args.work or tmp))
    out = args.out or REPO / "benchmarks" / "results" / CHECKS[args.check][3]
    write_json(report, out)
    print(f"keypoint AP {report['keypoint_AP']:.3f} after {report['iterations']} iterations; wall time "
          f"{report['times']['total_s'] / 60:.1f} min (target {report['target']}: "
          f"{'met' if report['met'] else 'not met'}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

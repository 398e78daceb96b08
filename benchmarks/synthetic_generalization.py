"""Generalisation check (issue 3): train on synthetic scenes, evaluate on held-out synthetic scenes.

    python benchmarks/synthetic_generalization.py [--train 2000] [--val 200] [--work /tmp/fcpose_synth]
                                                  [--config benchmarks/configs/synth_r18.yaml] [--set k=v ...]

Generate (seeds 1 and 2), train from scratch, evaluate, each timed; writes
``benchmarks/results/synthetic_generalization.json``. Target: keypoint AP >= 0.7 within 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from fcpose.config import load_config
from fcpose.data.synthetic import generate_dataset
from fcpose.engine.evaluate import format_metrics, predict_dataset
from fcpose.engine.evaluation import evaluate_keypoints
from fcpose.engine.trainer import train
from fcpose.fileio import atomic_write_text
from fcpose.inference.predictor import Predictor
from fcpose.weights.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000, help="training scenes")
    ap.add_argument("--val", type=int, default=200, help="held-out scenes")
    ap.add_argument("--work", default="/tmp/fcpose_synth", help="folder for the data and the run")
    ap.add_argument("--config", default=str(REPO / "benchmarks" / "configs" / "synth_r18.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "synthetic_generalization.json"))
    args = ap.parse_args()

    work = Path(args.work)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    train_dir, val_dir = work / f"train_{args.train}_s1", work / f"val_{args.val}_s2"
    for folder, num, seed in ((train_dir, args.train, 1), (val_dir, args.val, 2)):
        if not (folder / "annotations.json").is_file():
            generate_dataset(folder, num, seed=seed, progress=False)
    times["generate_s"] = time.perf_counter() - t0

    cfg = load_config(args.config, args.overrides)
    t1 = time.perf_counter()
    result = train(cfg, data=str(train_dir / "annotations.json"), images=str(train_dir / "images"),
                   output=str(work / "run"), progress=True)
    times["train_s"] = time.perf_counter() - t1

    def held_out_metrics(model) -> dict:
        results = predict_dataset(Predictor(model.eval()), val_dir / "annotations.json", val_dir / "images",
                                  progress=False)
        return evaluate_keypoints(val_dir / "annotations.json", results)

    t2 = time.perf_counter()
    metrics = held_out_metrics(result.model)  # the weight average when solver.ema_decay > 0
    times["eval_s"] = time.perf_counter() - t2
    times["total_s"] = time.perf_counter() - t0
    # for comparison (not timed): the last raw weights, kept in last.pt
    raw_metrics = held_out_metrics(load_model(work / "run" / "last.pt")) if cfg.solver.ema_decay > 0 else None

    summary = {
        "what": "train on synthetic scenes (seed 1), keypoint AP on held-out synthetic scenes (seed 2)",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "config": args.config, "overrides": args.overrides, "train_scenes": args.train, "val_scenes": args.val,
        "iterations": result.iterations, "skipped_steps": result.skipped_steps,
        "final_losses": result.last_losses, "metrics": metrics, "times": times,
    }
    if raw_metrics is not None:
        summary["metrics_without_weight_average"] = raw_metrics
    atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(format_metrics(metrics))
    if raw_metrics is not None:
        print(f"without the weight average: keypoint AP {raw_metrics['keypoints']['AP']:.3f}")
    print(f"keypoint AP {metrics['keypoints']['AP']:.3f} on {args.val} held-out scenes; "
          f"wall time {times['total_s'] / 60:.1f} min (generate {times['generate_s']:.0f} s, train "
          f"{times['train_s']:.0f} s, eval {times['eval_s']:.0f} s) -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: images/s and where a step's time goes, for a preset, device, batch size and precision.

    python benchmarks/train_throughput.py --config fcpose_r50_official --device cuda --batch 16 --precision bf16
    python benchmarks/train_throughput.py --config overfit_tiny --device cpu --batch 2 --size 256 --steps 6  # CI-sized

The real :class:`~fcpose.engine.trainer.TrainSession` on a COCO-format dataset (default ``coco_tiny``), each step
split with the device synchronised around each part; images/s measured without those synchronisations; the
first ``--warmup`` steps not counted. Writes ``--json`` (default ``benchmarks/results/train_throughput.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fcpose.bench.machine import machine_info, sync
from fcpose.bench.people import write_json
from fcpose.config import load_config
from fcpose.engine.trainer import TrainSession

SHARED = Path(os.environ.get("FCPOSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def measure(config: str, *, data: str, images: str, device: str, batch: int, precision: str, size: int | None,
            steps: int, warmup: int, workers: int, overrides: list[str]) -> dict:
    extra = [f"solver.ims_per_batch={batch}", f"solver.max_iter={2 * (steps + warmup)}",
             f"solver.precision={precision}", "solver.checkpoint_period=0", "solver.log_period=1000000", *overrides]
    if size:
        extra.append(f"input.min_size_train=[{size}, {size}]")
    cfg = load_config(config, extra)
    with tempfile.TemporaryDirectory() as out:
        session = TrainSession.setup(cfg, data=data, images=images, output=out, device=device, num_workers=workers,
                                     progress=False)
        dev = session.device

        def lap() -> float:
            sync(dev)
            return time.perf_counter()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        parts: dict[str, list[float]] = {"data": [], "forward_loss": [], "backward": [], "optimizer": []}
        it = iter(session.loader)
        # 1) split, synchronised around each part
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            b = next(it)
            t1 = lap()
            _, total = session.forward_loss(b)
            t2 = lap()
            _, finite, _ = session.backward_step(total)
            t3 = lap()
            session.optimizer_step(finite)
            session.loop.iteration += 1
            t4 = lap()
            if i >= warmup:
                for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    parts[key].append(seconds)
        # 2) free-running: train_step as the loop calls it, one synchronisation at the end
        t0 = lap()
        for _ in range(steps):
            session.train_step(next(it))
        free = (lap() - t0) / steps
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        session.close()
    med = {k: statistics.median(v) for k, v in parts.items()}
    split_total = sum(med.values())
    return {"config": config, "device": str(dev), "precision": session.precision.name, "batch": batch,
            "size": size or cfg.input.min_size_train, "steps": steps, "warmup": warmup, "workers": workers,
            "sec_per_iter": free, "images_per_sec": batch / free,
            "split_ms": {k: 1000 * v for k, v in med.items()}, "split_total_ms": 1000 * split_total,
            "peak_memory_mib": peak, "peak_memory_mib_per_image": peak / batch if peak else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fcpose_r50_official")
    ap.add_argument("--data", default=str(SHARED / "data" / "coco_tiny" / "person_keypoints.json"))
    ap.add_argument("--images", default=None, help="image folder (default: the annotation file's folder)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default="2", help="comma-separated batch sizes, e.g. 2,8,16")
    ap.add_argument("--precision", default="auto", help="comma-separated: auto, fp32, bf16, fp16")
    ap.add_argument("--size", type=int, default=None, help="fixed training short side (default: the preset's range)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="data-loader workers (default: the preset's, clamped)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "train_throughput.json"))
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"error: {args.data} not found (pass --data ANN.json)", file=sys.stderr)
        return 2
    images = args.images or str(Path(args.data).parent)
    workers = args.workers if args.workers is not None else load_config(args.config).solver.num_workers
    rows = []
    for precision in args.precision.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            r = measure(args.config, data=args.data, images=images, device=args.device, batch=batch,
                        precision=precision, size=args.size, steps=args.steps, warmup=args.warmup, workers=workers,
                        overrides=args.overrides)
            rows.append(r)
            s = r["split_ms"]
            mem = f"  peak {r['peak_memory_mib']:.0f} MiB ({r['peak_memory_mib_per_image']:.0f}/image)" \
                if r["peak_memory_mib"] else ""
            print(f"{r['config']} {r['device']} {r['precision']} batch {batch}: {r['images_per_sec']:.2f} images/s "
                  f"({r['sec_per_iter']:.3f} s/it) | split ms: data {s['data']:.0f}, forward+loss "
                  f"{s['forward_loss']:.0f}, backward {s['backward']:.0f}, optimizer {s['optimizer']:.0f}{mem}",
                  flush=True)
    report = {"machine": machine_info(torch.device(args.device)), "runs": rows}
    write_json(report, args.json)
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

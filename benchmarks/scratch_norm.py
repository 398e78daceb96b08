"""fcpose_r18_tiny trained from scratch: FrozenBN (the identity, no normalisation; before issue 24) vs GroupNorm
(``model.backbone.scratch_norm: GN``, the preset's from-scratch norm since issue 24), side by side.

For each variant, ``--rounds`` times, interleaved (A B A B ...; the machine is shared, so only the ratios of one
run mean much): ``fcpose train --config fcpose_r18_tiny --data ANN --images DIR --max-iter N --no-progress`` in a
subprocess, with ``solver.log_period=1``. Reported per run:

* ``sec_per_iter``: median wall time of iterations 2..N (from the cumulative ``sec_per_iter`` of
  ``metrics.jsonl``; the first iteration, with its set-up, is reported apart as ``first_iter_s``);
* ``peak_rss_mb``: the highest resident memory of the whole process tree (the trainer and its data-loader
  workers together), sampled every 0.1 s with psutil; ``peak_rss_main_mb``: the trainer process alone;
* ``wall_s``: the whole command (start-up, data, model, N iterations, checkpoints);
* the losses of the last iteration (5 iterations say nothing about convergence; they show both variants train).

Then, in this process, one training step of each variant on one fixed batch, round-robin (:func:`step_timing`):
wall and CPU seconds per step without data loading, the steadier number on a shared machine.

Note on the FrozenBN variant: since issue 21, ``fcpose train`` takes a from-scratch FrozenBN's statistics from
the first batch (``calibrate_frozen_bn``), so in the subprocess runs it is calibrated, not the identity; the
in-process step timing and activation scales below use the freshly built model (the identity). A FrozenBN
costs the same either way (a fixed affine map), so the timing comparison holds; only the name is older.

Also, without training: the standard deviation of the backbone outputs (C3-C5) of the freshly built model on
one image, per variant (what "no normalisation" does to the activations a from-scratch run starts from).

    python benchmarks/scratch_norm.py --data ../shared/data/coco_tiny/person_keypoints.json \
        --images ../shared/data/coco_tiny --max-iter 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "frozenbn_identity": ["--set", "model.backbone.scratch_norm="],  # before: FrozenBN kept from scratch
    "gn": [],  # after: the preset's scratch_norm (GN)
}


def _tree_rss(proc) -> tuple[int, int]:
    import psutil

    try:
        main = proc.memory_info().rss
        total = main + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0, 0
    return total, main


def run_variant(name: str, args, out_root: Path) -> dict:
    import psutil

    out = out_root / name
    cmd = [sys.executable, "-m", "fcpose", "train", "--config", "fcpose_r18_tiny", "--data", args.data,
           "--images", args.images, "--output", str(out), "--max-iter", str(args.max_iter), "--no-progress",
           "--set", "solver.log_period=1", "--set", "solver.checkpoint_period=0", *VARIANTS[name]]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total, main = _tree_rss(ps)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], main)
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    log, _ = proc.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: fcpose train failed ({proc.returncode}):\n{log}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "sec_per_iter" in r]
    cumulative = {int(r["iter"]): float(r["sec_per_iter"]) * int(r["iter"]) for r in rows}
    its = sorted(cumulative)
    per_iter = [cumulative[b] - cumulative[a] for a, b in zip(its, its[1:]) if b == a + 1]
    last = rows[-1]
    return {"variant": name, "wall_s": round(wall, 2), "first_iter_s": round(cumulative[its[0]], 3),
            "sec_per_iter": round(statistics.median(per_iter), 3) if per_iter else None,
            "sec_per_iter_each": [round(v, 3) for v in per_iter],
            "peak_rss_mb": round(peak[0] / 2**20, 1), "peak_rss_main_mb": round(peak[1] / 2**20, 1),
            "losses_last_iter": {k: round(v, 4) for k, v in last.items() if k.startswith("loss") or k == "total_loss"},
            "notes": [line for line in log.splitlines() if line.startswith(("note:", "warning:"))]}


def step_timing(images: str, ann: str, rounds: int, threads: int) -> dict:
    """One training step (forward, loss, backward, SGD step) of each variant on the same batch of
    ``ims_per_batch`` (16) augmented images, timed round-robin in this process (no data loading): the wall
    time and the process CPU time (all threads) per step, median over ``rounds`` after one untimed step."""
    import torch

    from fcpose.config import load_config
    from fcpose.data.augment import TrainTransform
    from fcpose.data.coco import CocoKeypointDataset, keypoint_set_from_coco
    from fcpose.data.collate import collate, to_model_input
    from fcpose.engine.train_checks import fit_backbone_to_scratch, fit_keypoints_to_data
    from fcpose.engine.trainer import TrainStep, build_optimizer
    from fcpose.loss import FCPoseCriterion
    from fcpose.model.fcpose import build_model

    torch.set_num_threads(threads)
    setups = {}
    for name, extra in VARIANTS.items():
        torch.manual_seed(0)
        cfg = load_config("fcpose_r18_tiny", extra[1:] if extra else None)
        fit_keypoints_to_data(cfg, keypoint_set_from_coco(ann), ann, verbose=False)
        fit_backbone_to_scratch(cfg, has_pretrained=False, verbose=False)
        model = build_model(cfg).train()
        step = TrainStep(model, FCPoseCriterion.from_config(cfg))
        setups[name] = (cfg, model, step, build_optimizer(model, cfg))
    cfg = next(iter(setups.values()))[0]
    dataset = CocoKeypointDataset(ann, images, cfg.keypoints, TrainTransform.from_config(cfg), seed=0)
    batch = collate([dataset[i % len(dataset)] for i in range(cfg.solver.ims_per_batch)])

    def one_step(name: str) -> tuple[float, float]:
        _, model, step, optimizer = setups[name]
        wall, cpu = time.perf_counter(), time.process_time()
        x, sizes = to_model_input(model, batch["images"], "cpu")
        losses = step(x, batch["targets"], sizes)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu

    for name in setups:
        one_step(name)
    times: dict[str, list] = {name: [] for name in setups}
    for r in range(rounds):
        for name in (list(setups) if r % 2 == 0 else list(setups)[::-1]):
            times[name].append(one_step(name))
    out = {name: {"wall_s_per_step": round(statistics.median(w for w, _ in t), 3),
                  "cpu_s_per_step": round(statistics.median(c for _, c in t), 3),
                  "wall_each": [round(w, 3) for w, _ in t]} for name, t in times.items()}
    a, b = out["frozenbn_identity"], out["gn"]
    out["gn_over_frozenbn"] = {"wall": round(b["wall_s_per_step"] / a["wall_s_per_step"], 3),
                               "cpu": round(b["cpu_s_per_step"] / a["cpu_s_per_step"], 3)}
    out["images_per_step"] = cfg.solver.ims_per_batch
    out["torch_threads"] = threads
    return out


def activation_scale(images: str, ann: str) -> dict:
    import torch

    from fcpose.config import load_config
    from fcpose.data.images import read_image
    from fcpose.data.transforms import image_to_tensor, resize_image, resize_shape
    from fcpose.engine.train_checks import fit_backbone_to_scratch
    from fcpose.model.fcpose import build_model

    first = json.loads(Path(ann).read_text())["images"][0]["file_name"]
    image = read_image(Path(images) / first)
    out = {}
    for name, extra in VARIANTS.items():
        torch.manual_seed(0)
        cfg = load_config("fcpose_r18_tiny", extra[1:] if extra else None)
        fit_backbone_to_scratch(cfg, has_pretrained=False, verbose=False)
        model = build_model(cfg).eval()
        h, w = resize_shape(image.shape[0], image.shape[1], 320, 512)
        x = model.normalize(image_to_tensor(resize_image(image, h, w)))[None]
        with torch.no_grad():
            feats = model.backbone(x)
        feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
        out[name] = {f"C{i + 3}_std": float(f.std()) for i, f in enumerate(feats)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="COCO keypoint annotation JSON (e.g. coco_tiny)")
    parser.add_argument("--images", required=True)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--step-rounds", type=int, default=6, help="in-process timed steps per variant")
    parser.add_argument("--only-steps", action="store_true", help="only the in-process step timing (no fcpose train)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "scratch_norm_r18_tiny.json"))
    args = parser.parse_args()
    import psutil

    load_before = os.getloadavg()
    cpu_before = psutil.cpu_times()
    runs = []
    with tempfile.TemporaryDirectory(prefix="fcpose_scratch_norm_") as tmp:
        for r in range(0 if args.only_steps else args.rounds):
            for name in VARIANTS:
                res = run_variant(name, args, Path(tmp) / f"round{r}")
                res["round"] = r
                print(json.dumps(res), flush=True)
                runs.append(res)
    steps = step_timing(args.images, args.data, args.step_rounds, threads=len(os.sched_getaffinity(0)))
    print(json.dumps({"in_process_steps": steps}), flush=True)
    summary = {}
    for name in VARIANTS if runs else ():
        mine = [r for r in runs if r["variant"] == name]
        summary[name] = {"sec_per_iter_median": statistics.median(r["sec_per_iter"] for r in mine),
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
                         "peak_rss_main_mb_max": max(r["peak_rss_main_mb"] for r in mine),
                         "wall_s_median": statistics.median(r["wall_s"] for r in mine)}
    report = {
        "command": f"fcpose train --config fcpose_r18_tiny --data {args.data} --images {args.images} --max-iter "
                   f"{args.max_iter} --no-progress --set solver.log_period=1 --set solver.checkpoint_period=0 "
                   f"[variant]",
        "variants": {k: " ".join(v) or "(preset default)" for k, v in VARIANTS.items()},
        "cpus": len(os.sched_getaffinity(0)), "torch_threads": __import__("torch").get_num_threads(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpu_busy_pct_during": round(100 * (1 - (psutil.cpu_times().idle - cpu_before.idle)
                                            / max(1e-9, sum(psutil.cpu_times()) - sum(cpu_before))), 1),
        "runs": runs, "summary": summary, "in_process_steps": steps,
        "backbone_output_std_at_init": activation_scale(args.images, args.data),
    }
    if runs:
        a, b = summary["frozenbn_identity"], summary["gn"]
        report["gn_over_frozenbn"] = {"sec_per_iter": round(b["sec_per_iter_median"] / a["sec_per_iter_median"], 3),
                                      "peak_rss_mb": round(b["peak_rss_mb_max"] / a["peak_rss_mb_max"], 3)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report.get(k) for k in ("summary", "gn_over_frozenbn", "in_process_steps",
                                                 "backbone_output_std_at_init")}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

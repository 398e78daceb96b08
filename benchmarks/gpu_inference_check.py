"""Issue 22's GPU acceptance check in one go: R-50 @800 and DLA-34 @512, fp16, batch 1, end to end from a
decoded image; t50/t1; images/s at batch 16; and that the fast path gives the eager path's people.

    python benchmarks/gpu_inference_check.py                     # on a CUDA machine (writes $OUT/... if set)
    python benchmarks/gpu_inference_check.py --device cpu --small # the same code path, tiny sizes (CI-sized)

Per preset (random weights): ``e2e`` (:func:`e2e`), ``fcpose bench`` with persons 1 and 50 (t50/t1 from the
graphed totals on CUDA, the stage totals elsewhere) and with ``--batch 16`` (images/s), ``consistency`` and, on
CUDA, ``graph_breakdown_ms`` (their functions say what each is). ``meets``: which of issue 22's targets (``CASES``;
R-50's network <= 3 ms, t50/t1 <= 1.05) hold; on a CPU they are reported but not meaningful.
Writes ``$OUT/gpu_inference_check.json`` when ``$OUT`` is set, else ``results/gpu_inference_check_<device>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from fcpose.bench.machine import machine_info, sync
from fcpose.bench.people import format_report, lively_heads, run_bench, synthetic_image, write_json
from fcpose.data.transforms import batch_images
from fcpose.inference.graphs import GraphedFunction
from fcpose.inference.predictor import Predictor
from fcpose.model.fcpose import build_model

RESULTS = Path(__file__).resolve().parent / "results"
CASES = [  # (name, preset, short side, long-side limit or None for the preset's, e2e target ms, goal ms)
    ("R-50 @800", "fcpose_r50_fpn", 800, 1333, 8.0, 5.0),
    ("DLA-34 @512", "fcpose_dla34_rt", 512, None, 4.0, 2.5),
]
SMALL = {"fcpose_r50_fpn": (160, 256), "fcpose_dla34_rt": (128, 192)}


def e2e(preset: str, size: int, max_size: int | None, device: torch.device, precision: str, runs: int,
        warmup: int) -> dict:
    """Median ms of ``Predictor.predict([image])`` on an already decoded RGB image of the preset's aspect, the
    default path of the device (on CUDA: uint8 upload and resize on the device, fp16 weights, channels-last, the
    network and the sync-free post-processing replayed as one CUDA graph, one copy of the results to the host)."""
    predictor = Predictor(build_model(preset), device=device, min_size=size, max_size=max_size,
                          precision=precision, batch_size=1)
    image = synthetic_image(predictor.min_size, predictor.max_size)
    for _ in range(warmup):
        predictor.predict([image])
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        predictor.predict([image])
        times.append((time.perf_counter() - t0) * 1e3)
    runner = predictor.runner
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
            "image_shape": list(image.shape[:2]), "preprocess": predictor.preprocess,
            "cast_weights": runner.cast_weights, "sync_free": runner.sync_free, "cuda_graphs": runner.cuda_graphs,
            "graph_failed": runner.graphs.failed if runner.graphs is not None else None,
            "eager_calls": runner.graphs.eager_calls if runner.graphs is not None else None,
            "fixed_fallbacks": runner.fallbacks}


def consistency(preset: str, size: int, max_size: int | None, device: torch.device) -> dict:
    """fp32: the device's route (on CUDA: graphs, fixed post-processing) against the eager dynamic
    post-processing of the same runner, on the same inputs (a few synthetic images). On a CPU both are the
    dynamic path: the smoke run checks the script only."""
    fast = Predictor(lively_heads(build_model(preset)), device=device, min_size=size, max_size=max_size, batch_size=1,
                     preprocess="host")
    runner = fast.runner
    out = {"images": 0, "same_people": True, "people": [], "boxes_px": 0.0, "scores": 0.0, "keypoints_px": 0.0}
    for seed in range(3):
        image = synthetic_image(fast.min_size, fast.max_size, seed=seed)
        tensor, resized = fast.prepare(image)
        batch = batch_images([tensor], fast.size_divisibility)
        (a,) = [d.to("cpu") for d in runner(batch, [resized], [image.shape[:2]])]
        (b,) = [d.to("cpu") for d in runner.postprocess(runner.network(batch), [resized], [image.shape[:2]])]
        out["images"] += 1
        out["people"].append([len(a), len(b)])
        if len(a) != len(b) or not torch.equal(a.locations, b.locations):
            out["same_people"] = False
            continue
        if len(a):
            out["boxes_px"] = max(out["boxes_px"], float((a.boxes - b.boxes).abs().max()))
            out["scores"] = max(out["scores"], float((a.scores - b.scores).abs().max()))
            moved = float((a.keypoints[..., :2] - b.keypoints[..., :2]).abs().max())
            out["keypoints_px"] = max(out["keypoints_px"], moved)
    out["fixed_fallbacks"] = fast.runner.fallbacks
    return out


def graph_breakdown(preset: str, size: int, max_size: int | None, device: torch.device, precision: str,
                    runs: int) -> dict:
    """Mean ms per replay of CUDA graphs of the network alone, of network + fixed post-processing, and of the
    latter with 8 NMS rounds instead of 32 (what the rounds cost), on one prepared image."""
    predictor = Predictor(build_model(preset), device=device, min_size=size, max_size=max_size,
                          precision=precision, batch_size=1)
    runner = predictor.runner
    tensor, _ = predictor.prepare(synthetic_image(predictor.min_size, predictor.max_size))
    batch = batch_images([tensor], predictor.model.size_divisibility).float()
    fewer = runner.postprocessor.with_params()
    fewer.nms_rounds = 8

    def with_rounds8(x):
        dense = runner.network(x, cache_enabled=False)
        with torch.inference_mode():
            return fewer.fixed(runner.model, dense)

    variants = {"network": GraphedFunction(lambda x: runner.network(x, cache_enabled=False)),
                "network+post": GraphedFunction(runner.run_fixed),
                "network+post_nms8": GraphedFunction(with_rounds8)}
    out = {}
    for name, fn in variants.items():
        for _ in range(3):
            fn(batch)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(runs):
            fn(batch)
        sync(device)
        out[name] = round((time.perf_counter() - t0) * 1e3 / runs, 3)
        calls = [c for c in fn.calls.values() if c is not None]
        out[f"{name}_captured"] = bool(calls) and calls[0].graph is not None  # False: eager (CPU, or it failed)
    return out


def run_case(name: str, preset: str, size: int, max_size: int | None, device: torch.device, precision: str,
             runs: int, warmup: int, batch: int) -> dict:
    """One preset: end to end, the people and batch benchmarks, consistency and (CUDA) the graph breakdown."""
    print(f"[check] {name}: end to end", file=sys.stderr)
    case: dict = {"preset": preset, "size": size, "max_size": max_size}
    case["e2e"] = e2e(preset, size, max_size, device, precision, runs, warmup)
    common = dict(size=size, max_size=max_size, device=str(device), warmup=warmup, precision=precision, probe=False)
    print(f"[check] {name}: bench persons 1,50", file=sys.stderr)
    bench = run_bench(preset, persons=(1, 50), runs=runs, **common)
    print(format_report(bench))
    print(f"[check] {name}: bench --batch {batch}", file=sys.stderr)
    through = run_bench(preset, persons=(1,), runs=max(2, runs // 3), flops=False, batch=batch, **common)
    print(format_report(through))
    one, fifty = bench["results"][0], bench["results"][1]
    key = "graph_total_ms" if "graph_total_ms" in one else "total_ms"
    t1, t50 = one[key]["median"], fifty[key]["median"]
    tp = through["results"][0]
    case.update({
        "bench": {"persons_1": one, "persons_50": fifty, "input_shape": bench["input_shape"],
                  "flops": bench.get("flops"), "cuda_graphs": bench.get("cuda_graphs")},
        "network_ms": one["network_ms"]["median"],
        "t1_ms": t1, "t50_ms": t50, "t50_over_t1": round(t50 / t1, 4), "timed_as": key,
        "images_per_s_batch": tp.get("graph_images_per_s", tp.get("images_per_s")),
    })
    case["consistency"] = consistency(preset, size, max_size, device)
    if device.type == "cuda":
        case["graph_breakdown_ms"] = graph_breakdown(preset, size, max_size, device, precision, runs)
        print(f"[check] {name}: graph replays (ms) {case['graph_breakdown_ms']}")
    return case


def judge(case: dict, target: float, goal: float) -> None:
    """The targets and which of them the case meets."""
    case["targets"] = {"e2e_ms": target, "e2e_goal_ms": goal, "t50_over_t1": 1.05}
    meets = {"e2e": case["e2e"]["median_ms"] <= target, "e2e_goal": case["e2e"]["median_ms"] <= goal,
             "t50_over_t1": case["t50_over_t1"] <= 1.05}
    if case["preset"] == "fcpose_r50_fpn":
        case["targets"]["network_ms"] = 3.0
        meets["network"] = case["network_ms"] <= 3.0
    case["meets"] = meets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default=None, help="default: fp16 on CUDA, fp32 elsewhere")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=16, help="throughput batch (default 16)")
    p.add_argument("--small", action="store_true", help="tiny sizes and runs: checks the script, measures nothing")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here (use --device cpu --small to check the script)", file=sys.stderr)
        return 2
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    runs, warmup, batch = (2, 1, 2) if args.small else (args.runs, args.warmup, args.batch)
    report: dict = {"note": args.note, "machine": machine_info(device), "precision": precision, "runs": runs,
                    "warmup": warmup, "batch": batch, "small": args.small, "cases": {}}
    for name, preset, size, max_size, target, goal in CASES:
        size, max_size = SMALL[preset] if args.small else (size, max_size)
        case = report["cases"][name] = run_case(name, preset, size, max_size, device, precision, runs, warmup, batch)
        judge(case, target, goal)
        print(f"[check] {name}: e2e {case['e2e']['median_ms']:.2f} ms (target {target}, goal {goal}), network "
              f"{case['network_ms']:.2f} ms, t50/t1 {case['t50_over_t1']:.3f}, {case['images_per_s_batch']} images/s "
              f"at batch {batch}; consistent: {case['consistency']['same_people']}; meets {case['meets']}")
    out = args.out or (Path(os.environ["OUT"]) / "gpu_inference_check.json" if os.environ.get("OUT")
                       else RESULTS / f"gpu_inference_check_{device.type}.json")
    print(f"wrote {write_json(report, out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

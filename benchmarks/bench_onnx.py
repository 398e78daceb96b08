"""onnxruntime vs eager PyTorch on CPU, same input and the same number of people.

    python benchmarks/bench_onnx.py                                   # R-50 at 800 and the tiny preset
    python benchmarks/bench_onnx.py --presets fcpose_r18_tiny --runs 10

For each preset the model (random weights) is exported with ``fcpose.export.onnx.export_onnx`` at the
padded benchmark size (static shape: the fastest graph) and timed from the normalised padded image to the
people in network-input pixels — network, selection, NMS, dynamic heads and decoding — against PyTorch
doing the same (``InferenceRunner``: optimised, and the reference path). Two workloads: score threshold
0 (every image then yields ``max_detections`` = 100 people) and 1.0 (no people: the network and selection
only). Writes ``benchmarks/results/onnx_vs_torch_<device>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fcpose.bench.people import machine_info, summarize, synthetic_image, write_json
from fcpose.data.transforms import batch_images
from fcpose.export.onnx import export_onnx
from fcpose.export.onnx_predictor import OnnxPredictor
from fcpose.inference.predictor import Predictor
from fcpose.inference.runner import InferenceRunner
from fcpose.model.fcpose import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn, runs: int, warmup: int) -> tuple[dict, object]:
    out = None
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        out = fn()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times), out


def bench_preset(preset: str, runs: int, warmup: int, threads: int | None, workdir: Path) -> dict:
    model = build_model(preset).eval()
    cfg = model.cfg
    plain = Predictor(model)
    tensor, resized = plain.prepare(synthetic_image(cfg.input.min_size_test, cfg.input.max_size_test))
    batch = batch_images([tensor], model.size_divisibility)
    h, w = batch.shape[-2:]
    t0 = time.perf_counter()
    path = export_onnx(model, workdir / f"{preset}.onnx", size=(h, w), dynamic=False)
    export_s = time.perf_counter() - t0
    ort_pred = OnnxPredictor(path, threads=threads or torch.get_num_threads())
    entry = {"config": preset, "input_shape": [h, w], "export_s": round(export_s, 1), "workloads": []}
    for threshold in (0.0, 1.0):
        post = plain.postprocessor.with_params(score_threshold=threshold)
        runners = {"torch_optimized": InferenceRunner(model, post, optimize=True),
                   "torch_reference": InferenceRunner(model, post, optimize=False)}
        res = {"score_threshold": threshold}
        stats, out = _time(lambda t=threshold: ort_pred.run_raw(batch.numpy(), t), runs, warmup)
        res["onnxruntime_ms"] = stats
        res["people"] = int(out["scores"].shape[0])
        for name, runner in runners.items():
            stats, dets = _time(lambda r=runner: r(batch, [resized], [resized]), runs, warmup)
            res[f"{name}_ms"] = stats
            res[f"{name}_people"] = len(dets[0])
        res["onnxruntime_vs_torch_optimized"] = round(res["onnxruntime_ms"]["median"] /
                                                      res["torch_optimized_ms"]["median"], 3)
        entry["workloads"].append(res)
        print(f"{preset} {h}x{w} threshold {threshold}: people {res['people']}/{res['torch_optimized_people']}  "
              f"onnxruntime {res['onnxruntime_ms']['median']:.1f} ms  torch optimised "
              f"{res['torch_optimized_ms']['median']:.1f} ms  torch reference "
              f"{res['torch_reference_ms']['median']:.1f} ms",
              flush=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="fcpose_r50_fpn,fcpose_r18_tiny")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(RESULTS / "onnx_vs_torch_cpu.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    report = {"note": args.note, "machine": machine_info(torch.device("cpu")), "onnxruntime": onnxruntime.__version__,
              "runs": args.runs, "warmup": args.warmup, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            report["results"].append(bench_preset(preset, args.runs, args.warmup, args.threads, Path(tmp)))
    report["summary"] = {r["config"]: statistics.median(w["onnxruntime_vs_torch_optimized"] for w in r["workloads"])
                         for r in report["results"]}
    write_json(report, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())

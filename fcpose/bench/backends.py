"""``fcpose bench --backends torch,onnxruntime,openvino,openvino-int8``: the backends side by side, end to end.

One process, one benchmark image, one model: each backend runs the whole ``predictor(path)`` — JPEG read,
resize, normalise, pad, network, selection, NMS, dynamic heads, decoding, rescaling — ``warmup`` untimed
times, then ``runs`` timed rounds that go round-robin over the backends in a rotating order (a slow drift of
the machine spreads over all of them). Ratios between backends measured this way are what to quote on a
busy machine; absolute times move with the load (``contention`` in the JSON says how busy it was).

Entries:

* ``torch`` — :class:`~fcpose.Predictor` on the checkpoint (or random weights of ``config``), fp32, the
  default optimised path (folded BN, channels-last);
* ``onnxruntime``, ``openvino``, ``openvino-int8`` — the same model exported here at the benchmark's padded
  input size (static shapes: the fastest graphs), int8 calibrated on ``calibration`` (default: random noise
  images, which is only right for timing random weights);
* ``--backends onnxruntime|openvino --weights MODEL.onnx|.xml`` (one backend) times that exported file alone."""

from __future__ import annotations

import datetime as _dt
import tempfile
import time
from pathlib import Path

import torch

from ..cpu import cpu_info, int8_note
from ..errors import InputError
from .machine import contention_since, cpu_times, loadavg, machine_info, own_cpu_seconds, summarize
from .people import load_bench_image, load_bench_model

__all__ = ["ALL_BACKENDS", "run_backend_bench", "format_backend_report"]

ALL_BACKENDS = ("torch", "onnxruntime", "openvino", "openvino-int8")


def run_backend_bench(config: str | None = None, weights: str | None = None, *, backends=ALL_BACKENDS,
                      size: int | None = None, max_size: int | None = None, runs: int = 10, warmup: int = 2,
                      threads: int | None = None, image: str | None = None, score_threshold: float | None = None,
                      calibration: str | None = None, calib_images: int = 20, overrides: list[str] | None = None,
                      note: str = "", log=None) -> dict:
    """Time the backends end to end (see the module docstring) -> the JSON-ready report."""
    from ..inference.backends import load_predictor
    from ..inference.predictor import Predictor, batch_key
    from ..inference.visualize import save_image

    backends = list(backends)
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown or not backends:
        raise InputError(f"--backends: unknown {unknown} (choose from {', '.join(ALL_BACKENDS)})")
    say = log or (lambda msg: None)
    if threads:
        torch.set_num_threads(int(threads))
    threads = threads or torch.get_num_threads()
    exported = weights is not None and str(weights).lower().endswith((".onnx", ".xml"))
    report: dict = {"schema": 1, "kind": "backends",
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "note": note,
                    "machine": machine_info(torch.device("cpu")), "runs": runs, "warmup": warmup,
                    "threads": threads, "weights": str(weights) if weights else "random"}
    with tempfile.TemporaryDirectory(prefix="fcpose_bench_") as tmp:
        tmp = Path(tmp)
        predictors: dict[str, object] = {}
        if exported:
            if len(backends) != 1 or backends[0] not in ("onnxruntime", "openvino"):
                raise InputError("an exported --weights file is timed alone: --backends onnxruntime (.onnx) or "
                                 "openvino (.xml)")
            predictors[backends[0]] = load_predictor(backends[0], weights, min_size=size, max_size=max_size,
                                                     score_threshold=score_threshold, threads=threads)
            ref = next(iter(predictors.values()))
            report["config"] = ref.cfg.name
        else:
            model, report["weights"] = load_bench_model(config, weights, overrides)
            ref = Predictor(model, min_size=size, max_size=max_size, score_threshold=score_threshold, optimize=True)
            report["config"] = model.cfg.name or str(config)
            if "torch" in backends:
                predictors["torch"] = ref
        picture, report["image"] = load_bench_image(image, ref.min_size, ref.max_size)
        path = tmp / "bench.jpg"
        save_image(path, picture)  # read back from disk in every run: decoding is part of end to end
        ph, pw = batch_key(ref, picture.shape[0], picture.shape[1])  # the padded network input
        report.update({"size": [ref.min_size, ref.max_size], "image_shape": list(picture.shape[:2]),
                       "input_shape": [ph, pw], "detection_params": vars(ref.params).copy()})
        wanted = [b for b in backends if b != "torch"]
        if wanted and not exported:
            report["export_s"] = _export_all(model, ref, wanted, (ph, pw), tmp, predictors, threads, calibration,
                                             calib_images, report, say)
        names = [b for b in backends if b in predictors]
        stat0, load0, own0 = cpu_times(), loadavg(), own_cpu_seconds()
        people, times = _time_round_robin({b: predictors[b] for b in names}, path, runs, warmup, say)
        report["contention"] = contention_since(stat0, load0, own0)
    base = summarize(times["torch"])["median"] if "torch" in times else None
    report["results"] = []
    for name in names:
        entry = {"backend": name, "people": people[name], "total_ms": summarize(times[name])}
        entry["fps"] = round(1000.0 / entry["total_ms"]["median"], 3)
        if base:
            entry["speedup_vs_torch"] = round(base / entry["total_ms"]["median"], 3)
        report["results"].append(entry)
    return report


def _time_round_robin(predictors: dict, path: Path, runs: int, warmup: int, say) -> tuple[dict, dict]:
    """``warmup`` untimed calls of each predictor on ``path`` (the people it finds), then ``runs`` rounds over
    all of them in a rotating order: ms per call per backend."""
    names = list(predictors)
    people, times = {}, {b: [] for b in names}
    for name in names:
        say(f"{name}: warm-up")
        for _ in range(max(1, warmup)):
            people[name] = len(predictors[name](path))
    say(f"timing {runs} rounds of {len(names)} backends")
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            predictors[name](path)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return people, times


def _export_all(model, ref, wanted, shape, tmp: Path, predictors, threads, calibration, calib_images, report,
                say) -> dict:
    from ..export.onnx import export_onnx
    from ..export.onnx_predictor import OnnxPredictor
    from ..export.openvino import onnx_to_openvino
    from ..export.openvino_predictor import OpenVinoPredictor

    common = dict(min_size=ref.min_size, max_size=ref.max_size, score_threshold=ref.params.score_threshold,
                  threads=threads)
    seconds = {}
    say(f"exporting ONNX at {shape[0]}x{shape[1]}")
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, tmp / "model.onnx", size=shape, dynamic=False, verify=False)
    seconds["onnx"] = round(time.perf_counter() - t0, 1)
    if "onnxruntime" in wanted:
        predictors["onnxruntime"] = OnnxPredictor(onnx_path, **common)
    if "openvino" in wanted:
        t0 = time.perf_counter()
        predictors["openvino"] = OpenVinoPredictor(onnx_to_openvino(onnx_path, tmp / "fp32.xml"), **common)
        seconds["openvino"] = round(time.perf_counter() - t0, 1)
    if "openvino-int8" in wanted:
        say(f"quantising to int8 on {calib_images} {'images of ' + calibration if calibration else 'noise images'}")
        t0 = time.perf_counter()
        xml = onnx_to_openvino(onnx_path, tmp / "int8.xml", int8=True, calibration=calibration or "random",
                               calib_images=calib_images, min_size=ref.min_size, max_size=ref.max_size)
        predictors["openvino-int8"] = OpenVinoPredictor(xml, **common)
        seconds["openvino-int8"] = round(time.perf_counter() - t0, 1)
        report["int8"] = predictors["openvino-int8"].export_info["openvino"]
        note = int8_note(cpu_info()[1])
        if note:
            report["int8_note"] = note
    return seconds


def format_backend_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"{report['config']} ({report['weights']} weights)  input {report['input_shape'][0]}x"
             f"{report['input_shape'][1]}  {m.get('cpu_model', '')} ({m.get('instruction_set', '?')})  "
             f"threads {report['threads']}",
             f"{'backend':>14} {'people':>6} {'total ms':>17} {'fps':>7} {'vs torch':>9}"]
    for r in report["results"]:
        ratio = f"{r['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in r else "-"
        t = r["total_ms"]
        lines.append(f"{r['backend']:>14} {r['people']:>6} {t['median']:>8.1f}/{t['p90']:<8.1f} {r['fps']:>7.2f} "
                     f"{ratio:>9}")
    c = report.get("contention", {})
    if c:
        lines.append(f"load average {c.get('loadavg_start')} -> {c.get('loadavg_end')}, other processes "
                     f"{c.get('others_cpu_pct')}% of the CPUs")
    if report.get("int8_note"):
        lines.append(report["int8_note"])
    return "\n".join(lines)

"""``fcpose bench``: end-to-end latency against the number of people, memory, FLOPs and conv throughput.

What one run measures (wall clock, ``time.perf_counter``; on CUDA with a ``torch.cuda.synchronize`` at each
stage boundary, so each stage's kernels are counted in that stage):

* ``preprocess_ms`` — resize, to tensor, normalise, pad: :meth:`Predictor.prepare` and :func:`batch_images`
  on the already decoded RGB image (JPEG decoding is not included); ``preprocess`` says where — "host"
  (PIL on the CPU, the CPU default) or "device" (uint8 upload, resize on the device, the GPU default);
* ``network_ms`` — backbone, FPN, FCOS head and keypoint branch (``FCPose.forward``);
* ``nms_ms`` — instance selection: scores, per-level top-k, NMS, boxes to image pixels;
* ``heads_ms`` — everything per person: controller at the selected locations, the dynamic keypoint
  heads, peaks, softmax scores, offsets, rescaling and the :class:`PoseDetections` (on the CPU; with the
  sync-free post-processing, the GPU default, this includes the one copy of the fixed-shape results);
* ``total_ms`` — all of the above, timed as one span;
* ``graph_total_ms`` (CUDA, when the runner would use CUDA graphs) — the same work end to end with the
  network and the fixed post-processing replayed as one CUDA graph: what a user's call costs. The stage
  times above are then the eager equivalent, cut at synchronisations.

``batch`` > 1 is the throughput mode: ``batch`` copies of the image are prepared, run as one batch and
decoded (N people each in forced mode); ``images_per_s`` = ``batch * 1000 / median(total_ms)``.

Each is summarised as median, p90, mean and min over ``runs`` runs; ``fps`` is ``1000 / median(total_ms)``.
Every entry first gets ``warmup`` untimed runs (which also measure its peak memory); the timed runs then
go round-robin over the entries, in a rotating order, so a slow drift of the machine (clocks, other load)
does not bias the entries measured last.

**Forced-N mode** (an integer in ``persons``): exactly N instances go through the dynamic heads whatever
the weights (random ones included), so time against people is measured as in the paper's Fig. 6:
the score threshold is skipped, the ``N * candidates_per_person`` best locations (after the usual
per-level top-k) go through the normal NMS, the N best survivors are kept and, if NMS left fewer,
the best suppressed ones fill up to N (:class:`ForcedSelection`, a :class:`~fcpose.postprocess.PostProcessor`
whose ``keep`` is :func:`forced_keep`). ``"auto"`` in ``persons`` runs the normal threshold + NMS instead
(meaningful with trained weights).

**Memory** (``peak_mem_mb``): on CPU the resident-set high-water mark while one entry runs — ``VmHWM``
from ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before the entry — minus the resident
size with the model loaded, before any inference. This counts everything torch allocates (tracemalloc
does not see it), including heap that the C allocator keeps from earlier entries, so it never falls
below an earlier entry's working set by much. ``peak_total_mb`` is the absolute high-water mark. Where the
reset is impossible, ``ru_maxrss`` (never reset) is used and ``memory_method`` says so. On CUDA:
``torch.cuda.max_memory_allocated`` (reset per entry) above the memory allocated with the model loaded.

**FLOPs**: the network's convolution/matmul FLOPs counted by ``torch.utils.flop_counter`` on the
benchmark input (1 multiply-add = 2 FLOPs), the per-person dynamic-head FLOPs from the head's shape,
and the achieved GFLOP/s of the network against a **conv probe** run in the same process: the convs
that dominate ResNet-FPN detectors (3x3 at P2-P5 widths, bottleneck 1x1s) at this input's pyramid
sizes, in the same precision and memory format, whose aggregate GFLOP/s is the machine's achievable
conv throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu import cpu_info, instruction_set
from ..data.transforms import batch_images, padded_size, resize_shape
from ..errors import InputError
from ..inference.graphs import GraphedFunction
from ..inference.predictor import Predictor
from ..model.fcpose import FCPose
from ..ops.boxes import nms, nms_fixed
from ..postprocess import PostProcessor
from ..precision import Precision, autocast_context, cpu_supports
from ..structures import PeopleSlots

__all__ = ["run_bench", "summarize", "machine_info", "conv_probe", "count_network_flops", "head_flops_per_person",
           "synthetic_image", "format_report", "write_json"]

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "amx_fp16")
DEFAULT_IMAGE = "synthetic"


# ------------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------------
def cpu_times() -> list[int] | None:
    """user, nice, system, idle, iowait, irq, softirq, steal (clock ticks, all CPUs) or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return [int(v) for v in fields[1:9]]
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def contention_since(stat0: list[int] | None, load0: list[float] | None, own0: float) -> dict:
    """How disturbed the timings since (``cpu_times()``, ``loadavg()``, ``own_cpu_seconds()``) were: load
    averages, steal, busy share and ``others_cpu_pct`` — the CPU time used by other processes, as a share of
    all CPUs (> ~5 means the timings are disturbed)."""
    stat1 = cpu_times()
    out: dict = {"loadavg_start": load0, "loadavg_end": loadavg()}
    if stat0 and stat1:
        delta = [b - a for a, b in zip(stat0, stat1)]
        total = max(1, sum(delta))
        busy = total - delta[3] - delta[4]
        own = (own_cpu_seconds() - own0) * os.sysconf("SC_CLK_TCK")
        out["steal_pct"] = round(100.0 * delta[7] / total, 2)
        out["busy_pct"] = round(100.0 * busy / total, 1)
        out["others_cpu_pct"] = round(max(0.0, 100.0 * (busy - own) / total), 1)
    return out


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """CPU model and instruction set, cores, flags, torch build and threads, accelerator name."""
    model, flags = cpu_info()
    info = {
        "cpu_model": model,
        "instruction_set": instruction_set(flags),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": cpu_supports("bf16"),
        "onednn_fp16": cpu_supports("fp16"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": model,
    }
    try:
        mem = [line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")]
        info["memory_gb"] = round(int(mem[0].split()[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Peak memory growth during a span (see the module docstring for what is measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ("cuda.max_memory_allocated above the allocation with the model loaded"
                       if device.type == "cuda" else
                       "VmHWM (reset per entry via clear_refs) above VmRSS with the model loaded")
        self.start = 0

    def baseline(self) -> None:
        """Remember the memory in use now (model loaded, nothing run yet): peaks are reported above it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = _status_kb("VmRSS") or 0

    def reset(self) -> None:
        """Start a new peak (CUDA: peak statistics; CPU: VmHWM := current RSS)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS to the current RSS (Linux >= 4.0)
        except OSError:
            self.method = "ru_maxrss (peak since process start; cannot reset)"

    def peak_mb(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"peak_mem_mb": round((peak - self.start) / 2**20, 1), "peak_total_mb": round(peak / 2**20, 1)}
        hwm = _status_kb("VmHWM") if self.method.startswith("VmHWM") else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        # The resident size can drop below the baseline (pages given back after it was taken): no growth is 0.
        return {"peak_mem_mb": round(max(hwm - self.start, 0) / 1024, 1), "peak_total_mb": round(hwm / 1024, 1)}


# ------------------------------------------------------------------------------------------------
# FLOPs and conv throughput
# ------------------------------------------------------------------------------------------------
def count_network_flops(network: Callable[[torch.Tensor], Any], batch: torch.Tensor, device: torch.device,
                        precision: str) -> int:
    """Conv/matmul FLOPs (2 per multiply-add) of one ``network(batch)`` call."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), autocast_context(device, precision), counter:
        network(batch)
    return int(counter.get_total_flops())


def head_flops_per_person(model: FCPose, height: int, width: int) -> int:
    """FLOPs one person adds: the controller at one location plus its dynamic head on the ``height x width``
    P3 map (the peak/softmax reductions, ~5 operations per logit, are not counted)."""
    dims = model.dynamic_head.dims
    ctrl = model.head.controller
    controller = 2 * ctrl.in_channels * ctrl.kernel_size[0] * ctrl.kernel_size[1] * ctrl.out_channels
    return int(controller + 2 * height * width * sum(a * b for a, b in zip(dims[:-1], dims[1:])))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_probe(height: int, width: int, device: torch.device, precision: str = "fp32", channels_last: bool = True,
               runs: int = 5, cast_weights: bool = False) -> dict:
    """GFLOP/s of the convolutions that dominate ResNet-FPN detectors at the pyramid sizes of a
    ``height x width`` input (same precision and memory format as the network; ``cast_weights``: input and
    weights in the precision's dtype without autocast, as the runner's converted network)."""
    shapes = [  # (name, c_in, c_out, kernel, stride of the level)
        ("3x3 256->256 P3 (FPN/FCOS towers)", 256, 256, 3, 8),
        ("3x3 256->256 P4", 256, 256, 3, 16),
        ("3x3 64->64 P2 (res2)", 64, 64, 3, 4),
        ("3x3 128->128 P3 (res3)", 128, 128, 3, 8),
        ("3x3 512->512 P5 (res5)", 512, 512, 3, 32),
        ("1x1 64->256 P2", 64, 256, 1, 4),
        ("1x1 256->64 P2", 256, 64, 1, 4),
        ("1x1 256->1024 P4", 256, 1024, 1, 16),
        ("1x1 1024->256 P4", 1024, 256, 1, 16),
    ]
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    policy = Precision(device, precision, cast_weights=cast_weights)
    out, total_flops, total_s = [], 0, 0.0
    for name, cin, cout, k, s in shapes:
        h, w = -(-height // s), -(-width // s)
        dtype = policy.weight_dtype
        x = torch.randn(1, cin, h, w, generator=gen).to(device, dtype).contiguous(memory_format=fmt)
        weight = (torch.randn(cout, cin, k, k, generator=gen) * 0.01).to(device, dtype).contiguous(memory_format=fmt)
        bias = torch.zeros(cout, device=device, dtype=dtype)
        times = []
        with torch.inference_mode(), policy.autocast():
            for i in range(runs + 1):
                _sync(device)
                t0 = time.perf_counter()
                F.conv2d(x, weight, bias, padding=k // 2)
                _sync(device)
                if i:
                    times.append(time.perf_counter() - t0)
        flops = 2 * cin * cout * k * k * h * w
        med = statistics.median(times)
        total_flops += flops
        total_s += med
        out.append({"conv": name, "shape": [cin, h, w], "gflop": round(flops / 1e9, 3), "ms": round(med * 1e3, 2),
                    "gflops_per_s": round(flops / med / 1e9, 1)})
    return {"gflops_per_s": round(total_flops / total_s / 1e9, 1), "convs": out, "runs": runs}


# ------------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------------
def synthetic_image(min_size: int, max_size: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB image (smooth colour field + texture + noise) of aspect ``max_size / min_size``,
    at 0.6x the test size so the benchmark also times a real resize."""
    h0 = max(8, int(round(min_size * 0.6)))
    h, w = h0, max(8, int(round(h0 * max_size / min_size)))
    found = [(hh, ww) for hh in range(h0, h0 + 64) for ww in range(int(hh * max_size / min_size) - 1,
                                                                    int(hh * max_size / min_size) + 3)
             if resize_shape(hh, ww, min_size, max_size) == (min_size, max_size)]
    if found:  # the test resize maps it to exactly min_size x max_size
        h, w = found[0]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 80 * np.sin(xx / 37.0 + c) * np.cos(yy / 53.0 - c) for c in range(3)], axis=-1)
    noise = rng.normal(0, 20, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def load_bench_image(image: str | None, min_size: int, max_size: int) -> tuple[np.ndarray, str]:
    if image in (None, "", DEFAULT_IMAGE):
        return synthetic_image(min_size, max_size), DEFAULT_IMAGE
    from ..data.images import read_image

    path = Path(image)
    if not path.is_file():
        raise InputError(f"benchmark image not found: {image}")
    return read_image(path), str(path)


# ------------------------------------------------------------------------------------------------
# Forced-N selection
# ------------------------------------------------------------------------------------------------
def forced_keep(box: torch.Tensor, score: torch.Tensor, nms_threshold: float, num: int,
                candidates_per_person: int) -> torch.Tensor:
    """Exactly ``num`` kept candidates (fewer only if there are fewer), for timing the heads at N people.

    The ``num * candidates_per_person`` best (all if 0) go through the usual NMS, so NMS work grows with N as
    with a trained model (20 per person is an assumption: the FCOS locations around a person that fire); the
    ``num`` best survivors are kept and, if NMS left fewer, the best suppressed candidates fill up to ``num``.
    """
    pool = torch.arange(score.numel(), device=score.device)
    if candidates_per_person > 0 and score.numel() > num * candidates_per_person:
        pool = score.topk(num * candidates_per_person).indices
    keep = pool[nms(box[pool], score[pool], nms_threshold)]
    if keep.numel() < num:
        taken = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        taken[keep] = True
        rest = (~taken).nonzero().squeeze(1)
        rest = rest[torch.sort(score[rest], descending=True, stable=True).indices]
        keep = torch.cat([keep, rest[:num - keep.numel()]])
    return keep[:num]


class ForcedSelection(PostProcessor):
    """``post`` with the benchmark's forced-N selection: no score threshold (every cell is a candidate; the
    per-level top-k still applies), :func:`forced_keep` instead of NMS + ``max_detections`` (in
    :meth:`fixed` too: the same choice with static shapes, ``num`` slots per image), and people with empty
    boxes are kept so that exactly ``num`` people come out."""

    drop_empty = False

    def __init__(self, post: PostProcessor, num: int, candidates_per_person: int = 20):
        super().__init__(post.dynamic_head, strides=post.strides, rel_coord_norm=post.rel_coord_norm,
                         offset_unit=post.offset_unit, keypoint_score=post.keypoint_score,
                         params=dataclasses.replace(post.params, score_threshold=-1.0), tile_bytes=post.tile_bytes,
                         nms_rounds=post.nms_rounds)
        self.num = int(num)
        self.candidates_per_person = int(candidates_per_person)

    def keep(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return forced_keep(boxes, scores, self.params.nms_threshold, self.num, self.candidates_per_person)

    def keep_fixed(self, boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor):
        """:meth:`keep_one_fixed` for each image of a batch (``[B, M, ...]``), stacked."""
        parts = [self.keep_one_fixed(b, s, v) for b, s, v in zip(boxes, scores, valid)]
        return tuple(torch.stack(p) for p in zip(*parts))

    def keep_one_fixed(self, boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor):
        """:func:`forced_keep` with static shapes (one image): NMS survivors of the pool first (best first), then
        the best of the rest, ``num`` valid slots; ``exact`` when NMS decided the pool far enough (``num`` survivors, or
        the whole pool). As in the real fixed form, at least ``max_detections`` slots go through the heads
        (the first ``num`` valid), so the fixed form's time is measured as it is: the same for 1 and for
        ``max_detections`` people."""
        m = int(scores.shape[0])
        slots = min(max(self.num, self.params.max_detections), m)
        pool_size = m if self.candidates_per_person <= 0 else min(m, self.num * self.candidates_per_person)
        pool = scores.topk(pool_size).indices if pool_size < m else torch.arange(m, device=scores.device)
        order, kept, decided = nms_fixed(boxes[pool], scores[pool], self.params.nms_threshold, valid[pool],
                                         self.nms_rounds)
        kept = kept & (torch.arange(pool_size, device=scores.device) < decided)
        kept = kept & (kept.cumsum(0) <= self.num)
        # Sort key: survivors by their NMS order (0..), then everything else by decreasing score (stable).
        rest = torch.empty(m, dtype=torch.long, device=scores.device)
        rest[torch.sort(scores, descending=True, stable=True).indices] = torch.arange(m, device=scores.device)
        key = rest + m
        survivors = pool[order]
        key[survivors] = torch.where(kept, torch.arange(pool_size, device=scores.device), key[survivors])
        take = torch.sort(key).indices[:slots]
        exact = (kept.sum() >= self.num) | (decided == pool_size)
        return take, torch.arange(slots, device=scores.device) < self.num, exact


@contextlib.contextmanager
def stage_threads(threads: int | None, device: torch.device):
    """Intra-op threads for the post-processing stages only (``--post-threads``): many small ops, each an
    OpenMP barrier; on a core shared with another busy process every barrier can wait a scheduler slice, so
    1 thread is far more robust there (and costs ~2x on those stages on an idle 2-core machine). The thread
    count is process-wide: only the benchmark, which owns its process, switches it around a stage."""
    if not threads or device.type != "cpu" or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------
def summarize(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 3), "p90": round(float(np.percentile(arr, 90)), 3),
            "mean": round(float(arr.mean()), 3), "min": round(float(arr.min()), 3)}


def load_bench_model(config: str | None, weights: str | None, overrides: list[str] | None) -> tuple[FCPose, str]:
    """The model to benchmark: ``weights`` loaded (its name returned), else ``config`` with random weights."""
    if weights:
        from ..weights.checkpoint import load_model

        return load_model(weights, device="cpu", overrides=overrides), str(weights)
    from ..model.fcpose import build_model

    return build_model(config or "fcpose_r50_fpn", overrides), "random"


def runner_graphs(runner, compile: bool) -> bool:
    """Whether the benchmark also times the CUDA-graph pipeline: what the runner would do by default."""
    return runner.device.type == "cuda" and runner.sync_free and not compile


def captured_pipeline(runner, post: PostProcessor):
    """Network + ``post``'s fixed post-processing: the function a CUDA graph records (no host sync)."""
    def run(images: torch.Tensor):
        dense = runner.network(images, cache_enabled=False)
        with torch.inference_mode():
            return post.fixed(runner.model, dense), dense
    return run


def finish_slots(runner, post: PostProcessor, slots: PeopleSlots, dense, input_sizes, output_sizes) -> list:
    """Slots on the device -> detections on the CPU (the runner's pinned copy, then ``post.finish``; the
    dynamic path where the slots are not exact), as :meth:`InferenceRunner.finish` does."""
    with torch.inference_mode():
        host = PeopleSlots.from_tensors(runner.host_copy(slots.tensors()))
        if not bool(host.exact.all()):
            return [d.to("cpu") for d in post(runner.model, dense, input_sizes, output_sizes)]
        return post.finish(host, input_sizes, output_sizes)


def run_bench(config: str | None = "fcpose_r50_fpn", weights: str | None = None, *, size: int | None = None,
              max_size: int | None = None, persons=(1, 5, 10, 20, 50), device: str = "cpu", runs: int = 20,
              warmup: int = 3, precision: str = "fp32", compile: bool = False, optimize: bool = True,
              channels_last: bool | None = None, image: str | None = None, threads: int | None = None,
              candidates_per_person: int = 20, probe: bool = True, flops: bool = True, probe_runs: int = 5,
              overrides: list[str] | None = None, note: str = "", log=None, post_threads: int | None = None,
              batch: int = 1, preprocess: str = "auto", cuda_graphs: bool | None = None) -> dict:
    """Run the benchmark and return the JSON-ready report (see the module docstring)."""
    from ..precision import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    model, weights_name = load_bench_model(config, weights, overrides)
    cfg = model.cfg
    if batch < 1:
        raise InputError("--batch must be >= 1")
    predictor = Predictor(model, device=dev, min_size=size, max_size=max_size, optimize=optimize,
                          precision=precision, compile=compile, channels_last=channels_last, inplace=True,
                          preprocess=preprocess, cuda_graphs=False)  # owns the (optimised) model
    graphs = runner_graphs(predictor.runner, compile) if cuda_graphs is None else bool(cuda_graphs)
    del model
    runner = predictor.runner
    net = runner.model
    params = predictor.params
    picture, image_name = load_bench_image(image, predictor.min_size, predictor.max_size)
    out_size = picture.shape[:2]
    rh, rw = resize_shape(out_size[0], out_size[1], predictor.min_size, predictor.max_size)
    ph, pw = padded_size(rh, rw, net.size_divisibility)
    say = log or (lambda msg: None)
    stat0, load0, own0 = cpu_times(), loadavg(), own_cpu_seconds()

    def prepare():
        """``batch`` copies of the decoded image, each resized and normalised, padded into one batch."""
        prepared = [predictor.prepare(picture) for _ in range(batch)]
        return batch_images([t for t, _ in prepared], net.size_divisibility), [r for _, r in prepared]

    report: dict = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "note": note,
        "machine": machine_info(dev),
        "config": cfg.name or str(config),
        "weights": weights_name,
        "size": [predictor.min_size, predictor.max_size],
        "image": image_name,
        "image_shape": list(out_size),
        "resized_shape": [rh, rw],
        "input_shape": [ph, pw],
        "device": dev.type,
        "precision": precision,
        "optimize": bool(optimize),
        "fold_bn": bool(optimize),
        "channels_last": runner.channels_last,
        "post_threads": post_threads or torch.get_num_threads(),
        "batch": batch,
        "preprocess": predictor.preprocess,
        "cast_weights": runner.cast_weights,
        "sync_free": runner.sync_free,
        "cuda_graphs": graphs,
        "compile": bool(compile),
        "runs": runs,
        "warmup": warmup,
        "forced_selection": {"candidates_per_person": candidates_per_person, "score_threshold_skipped": True},
        "detection_params": vars(params).copy(),
    }
    memory = PeakMemory(dev)
    memory.baseline()
    images, _ = prepare()
    if flops:
        say("counting FLOPs")
        gflop = count_network_flops(net, runner.network_input(images), dev, precision) / 1e9
        h3, w3 = ph // net.strides[0], pw // net.strides[0]
        report["flops"] = {"network_gflop": round(gflop, 2),
                           "heads_gflop_per_person": round(head_flops_per_person(net, h3, w3) / 1e9, 4),
                           "counter": "torch.utils.flop_counter (conv/matmul, 2 FLOPs per multiply-add)"}
    if probe:
        say("conv probe")
        report["conv_probe"] = conv_probe(ph, pw, dev, precision, runner.channels_last, probe_runs,
                                          cast_weights=runner.cast_weights)
    if compile:
        say("compiling")
        runner.network(images)
        report["compile_failed"] = runner.compile_failed
    keys = ("total", "preprocess", "network", "nms", "heads") + (("graph_total",) if graphs else ())
    spans = {str(n): {k: [] for k in keys} for n in persons}
    counts: dict[str, int] = {}
    posts = {str(n): runner.postprocessor if n == "auto" else ForcedSelection(runner.postprocessor, int(n),
                                                                              candidates_per_person)
             for n in persons}
    graphed = {key: GraphedFunction(captured_pipeline(runner, post)) for key, post in posts.items()} if graphs else {}
    out_sizes = [out_size] * batch

    def run_once(n) -> dict[str, float]:
        post = posts[str(n)]
        marks: dict[str, float] = {}

        def mark(stage: str) -> None:
            _sync(dev)
            marks[stage] = time.perf_counter()

        mark("start")
        images, resized = prepare()
        mark("preprocess")
        dense = runner.network(images)
        mark("network")
        with torch.inference_mode(), stage_threads(post_threads, dev):
            if runner.sync_free:
                slots = post.fixed(net, dense, on_stage=mark)
                dets = finish_slots(runner, post, slots, dense, resized, out_sizes)
            else:
                dets = [d.to("cpu") for d in post(net, dense, resized, out_sizes, on_stage=mark)]
        mark("end")
        counts[str(n)] = len(dets[0])
        times = {"total": marks["end"] - marks["start"], "preprocess": marks["preprocess"] - marks["start"],
                 "network": marks["network"] - marks["preprocess"], "nms": marks["select"] - marks["network"],
                 "heads": marks["end"] - marks["select"]}
        if graphs:
            # The same work end to end as one CUDA graph (network + fixed post-processing) per shape: the
            # time a user gets; the stages above are the same work run eagerly, with a sync at each boundary.
            _sync(dev)
            start = time.perf_counter()
            images, resized = prepare()
            (slots, dense), _ = graphed[str(n)](images.float())
            finish_slots(runner, post, slots, dense, resized, out_sizes)
            times["graph_total"] = time.perf_counter() - start
        return times

    # Memory first (untimed), one entry at a time: the peak while that many people are decoded.
    peaks = {}
    for n in persons:
        say(f"persons={n}: warm-up and memory")
        memory.reset()
        for _ in range(max(1, warmup)):
            run_once(n)
        peaks[str(n)] = memory.peak_mb()
    # Timed runs interleave the entries (rotating their order), so slow drifts of the machine (clock,
    # other load) spread over all entries instead of biasing the later ones.
    say(f"timing {runs} rounds of {len(persons)} entries")
    for r in range(runs):
        order = list(persons[r % len(persons):]) + list(persons[:r % len(persons)])
        for n in order:
            for key, value in run_once(n).items():
                spans[str(n)][key].append(value * 1e3)
    results = []
    for n in persons:
        entry = {"persons": n, "instances": counts[str(n)]}
        entry.update({f"{k}_ms": summarize(v) for k, v in spans[str(n)].items()})
        entry.update(peaks[str(n)])
        entry["fps"] = round(1000.0 / entry["total_ms"]["median"], 3)
        if batch > 1:
            entry["images_per_s"] = round(1000.0 * batch / entry["total_ms"]["median"], 2)
        if graphs:
            entry["graph_fps"] = round(1000.0 / entry["graph_total_ms"]["median"], 3)
            entry["graph_images_per_s"] = round(1000.0 * batch / entry["graph_total_ms"]["median"], 2)
        if flops:
            entry["network_gflops_per_s"] = round(report["flops"]["network_gflop"] /
                                                  (entry["network_ms"]["median"] / 1e3), 1)
        results.append(entry)
    report["memory_method"] = memory.method
    report["results"] = results
    forced = [r for r in results if r["persons"] != "auto"]
    if forced:
        lo = min(forced, key=lambda r: r["persons"])
        hi = max(forced, key=lambda r: r["persons"])
        report["summary"] = {
            "total_ratio_max_over_min_persons": round(hi["total_ms"]["median"] / lo["total_ms"]["median"], 4),
            "persons_range": [lo["persons"], hi["persons"]],
            "per_person_share": {str(r["persons"]): round((r["heads_ms"]["median"] + r["nms_ms"]["median"]) /
                                                          r["total_ms"]["median"], 4) for r in forced},
            "network_ms_median": round(statistics.median(r["network_ms"]["median"] for r in forced), 2),
        }
        if flops and probe:
            best = statistics.median(r["network_gflops_per_s"] for r in forced)
            report["summary"]["network_gflops_per_s"] = best
            report["summary"]["network_vs_conv_probe"] = round(best / report["conv_probe"]["gflops_per_s"], 3)
    contention = contention_since(stat0, load0, own0)
    report["contention"] = contention
    return report


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------
def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"{report['config']} ({report['weights']} weights)  input {report['input_shape'][0]}x"
        f"{report['input_shape'][1]} (resized {report['resized_shape'][0]}x{report['resized_shape'][1]} from "
        f"{report['image']})",
        f"{m['device_name']} ({m.get('instruction_set', '?')}, torch {m.get('torch_cpu_capability', '?')} "
        f"kernels)  {report['device']} {report['precision']}  threads {m['torch_threads']}  "
        f"optimize={report['optimize']} channels_last={report['channels_last']} compile={report['compile']}",
    ]
    if "flops" in report:
        f = report["flops"]
        lines.append(f"network {f['network_gflop']:.1f} GFLOP, "
                     f"{f['heads_gflop_per_person'] * 1e3:.1f} MFLOP per person")
    if "conv_probe" in report:
        lines.append(f"conv probe {report['conv_probe']['gflops_per_s']:.1f} GFLOP/s")
    lines.append(f"times in ms: total as median/p90 over {report.get('runs', '?')} runs, stages as medians; "
                 f"inst = people through the dynamic heads; prep = resize + normalise; nms = selection + NMS; "
                 f"heads = dynamic heads + decoding")
    if report.get("batch", 1) > 1 or report.get("cuda_graphs"):
        lines.append(f"batch {report.get('batch', 1)}: times per batch; preprocess on the {report.get('preprocess')}"
                     + ("; graph = the whole pipeline as CUDA graphs (median)" if report.get("cuda_graphs") else ""))
    head = f"{'persons':>7} {'inst':>5} {'total med/p90':>17} {'network':>9} {'nms':>7} {'heads':>7} {'prep':>7} " \
           f"{'peak MB':>8} {'fps':>7}"
    if "flops" in report:
        head += f" {'GFLOP/s':>8}"
    if report.get("batch", 1) > 1:
        head += f" {'img/s':>8}"
    if report.get("cuda_graphs"):
        head += f" {'graph':>7} {'g img/s':>8}"
    lines.append(head)
    for r in report["results"]:
        row = (f"{r['persons']!s:>7} {r['instances']:>5} {r['total_ms']['median']:>8.1f}/{r['total_ms']['p90']:<8.1f} "
               f"{r['network_ms']['median']:>9.1f} {r['nms_ms']['median']:>7.2f} {r['heads_ms']['median']:>7.2f} "
               f"{r['preprocess_ms']['median']:>7.2f} {r['peak_mem_mb']:>8.1f} {r['fps']:>7.2f}")
        if "network_gflops_per_s" in r:
            row += f" {r['network_gflops_per_s']:>8.1f}"
        if "images_per_s" in r:
            row += f" {r['images_per_s']:>8.1f}"
        if "graph_total_ms" in r:
            row += f" {r['graph_total_ms']['median']:>7.2f} {r['graph_images_per_s']:>8.1f}"
        lines.append(row)
    if "summary" in report:
        s = report["summary"]
        line = (f"total(persons={s['persons_range'][1]}) / total(persons={s['persons_range'][0]}) = "
                f"{s['total_ratio_max_over_min_persons']:.3f}")
        if "network_vs_conv_probe" in s:
            line += f"; network at {100 * s['network_vs_conv_probe']:.0f}% of the conv probe"
        lines.append(line)
    c = report.get("contention", {})
    if c:
        lines.append(f"load average {c.get('loadavg_start')} -> {c.get('loadavg_end')}, steal {c.get('steal_pct')}%, "
                     f"other processes {c.get('others_cpu_pct')}% of the CPUs")
    return "\n".join(lines)


def write_json(report: dict, path: str | Path) -> Path:
    from ..fileio import atomic_write_text

    path = Path(path)  # the atomic writer creates its folder (and removes it again if the write fails)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n", what="benchmark report")
    return path

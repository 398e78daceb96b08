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
* ``graph_total_ms`` (CUDA, where the runner uses CUDA graphs: unless ``FCPOSE_CUDA_GRAPHS=0``) — the same work end to
  end through the runner's own call, network and fixed post-processing replayed as one CUDA graph: what a user's call
  costs. The stage times above are then the eager equivalent, cut at synchronisations.

Every stage is the real :class:`~fcpose.inference.runner.InferenceRunner`'s (``network``, then ``detect``),
one runner per entry sharing the optimised network (``with_postprocessor``); the benchmark copies none of it.

``batch`` > 1 is the throughput mode: ``batch`` copies of the image are prepared, run as one batch and
decoded (N people each in forced mode); ``images_per_s`` = ``batch * 1000 / median(total_ms)``.

Each is summarised as median, p90, mean and min over ``runs`` runs; ``fps`` is ``1000 / median(total_ms)``.
Every entry first gets ``warmup`` untimed runs (which also measure its peak memory); the timed runs then
go round-robin over the entries, in a rotating order, so a slow drift of the machine (clocks, other load)
does not bias the entries measured last.

**Forced-N mode** (an integer in ``persons``): exactly N people go through the dynamic heads whatever the
weights, as in the paper's Fig. 6 (:class:`ForcedSelection`, :func:`forced_keep`); ``"auto"`` runs the normal
threshold + NMS instead (meaningful with trained weights).

**Memory** (``peak_mem_mb``): on CPU the resident-set high-water mark while one entry runs — ``VmHWM``
from ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before the entry — minus the resident
size with the model loaded, before any inference. This counts everything torch allocates (tracemalloc
does not see it), including heap that the C allocator keeps from earlier entries, so it never falls
below an earlier entry's working set by much. ``peak_total_mb`` is the absolute high-water mark. Where the
reset is impossible, ``ru_maxrss`` (never reset) is used and ``memory_method`` says so. On CUDA:
``torch.cuda.max_memory_allocated`` (reset per entry) above the memory allocated with the model loaded.

**FLOPs**: the network's convolution/matmul FLOPs counted by ``torch.utils.flop_counter`` on the benchmark input (1
multiply-add = 2 FLOPs), the per-person dynamic-head FLOPs from the head's shape, and the achieved GFLOP/s of the
network against a **conv probe** run in the same process: the convs that dominate ResNet-FPN detectors (3x3 at P2-P5
widths, bottleneck 1x1s) at this input's pyramid sizes, in the same precision and memory format, whose aggregate GFLOP/s
is the machine's achievable conv throughput."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.transforms import batch_images, padded_size, resize_shape
from ..errors import InputError
from ..inference.predictor import Predictor
from ..inference.runner import InferenceRunner
from ..model.fcpose import FCPose
from ..ops.boxes import nms, nms_fixed
from ..postprocess import PostProcessor
from ..precision import autocast_context
from .machine import (
    PeakMemory,
    contention_since,
    conv_probe,
    cpu_times,
    loadavg,
    machine_info,
    own_cpu_seconds,
    summarize,
    sync,
)

__all__ = ["run_bench", "PeopleRuns", "ForcedSelection", "count_network_flops", "head_flops_per_person",
           "synthetic_image", "load_bench_image", "load_bench_model", "format_report", "write_json"]

DEFAULT_IMAGE = "synthetic"


# ---- FLOPs -------------------------------------------------------------------------------------
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


# ---- Input -------------------------------------------------------------------------------------
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


def lively_heads(model: FCPose) -> FCPose:
    """Random weights made to decode like a trained model (the tests' and the GPU check's models): confident
    classification everywhere and dynamic heads with peaked, tie-free heatmaps, so comparing two routes' people
    and keypoints means something."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(0.0)
        ctrl = model.head.controller
        ctrl.weight.copy_(torch.randn(ctrl.weight.shape, generator=gen) * 0.05)
        ctrl.bias.copy_(torch.randn(ctrl.bias.shape, generator=gen) * 0.5)
    return model.eval()


def load_bench_image(image: str | None, min_size: int, max_size: int) -> tuple[np.ndarray, str]:
    if image in (None, "", DEFAULT_IMAGE):
        return synthetic_image(min_size, max_size), DEFAULT_IMAGE
    from ..data.images import read_image

    path = Path(image)
    if not path.is_file():
        raise InputError(f"benchmark image not found: {image}")
    return read_image(path), str(path)


# ---- Forced-N selection ------------------------------------------------------------------------
def forced_keep(box: torch.Tensor, score: torch.Tensor, nms_threshold: float, num: int,
                candidates_per_person: int) -> torch.Tensor:
    """Exactly ``num`` kept candidates (fewer only if there are fewer), for timing the heads at N people.

    The ``num * candidates_per_person`` best (all if 0) go through the usual NMS, so NMS work grows with N as
    with a trained model (20 per person is an assumption: the FCOS locations around a person that fire); the
    ``num`` best survivors are kept and, if NMS left fewer, the best suppressed candidates fill up to ``num``."""
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
    """Intra-op threads for the post-processing stages only (``post_threads``: ``benchmarks/bench_people.py
    --post-threads``): many small ops, each an OpenMP barrier; on a core shared with another busy process
    every barrier can wait a scheduler slice, so 1 thread is far more robust there (and costs ~2x on those
    stages on an idle 2-core machine). The thread count is process-wide: only the benchmark, which owns its
    process, switches it around a stage."""
    if not threads or device.type != "cpu" or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- The benchmark -----------------------------------------------------------------------------
def load_bench_model(config: str | None, weights: str | None, overrides: list[str] | None) -> tuple[FCPose, str]:
    """The model to benchmark: ``weights`` loaded (its name returned), else ``config`` with random weights."""
    if weights:
        from ..weights.checkpoint import load_model

        return load_model(weights, device="cpu", overrides=overrides), str(weights)
    from ..model.fcpose import build_model

    return build_model(config or "fcpose_r50_fpn", overrides), "random"


class PeopleRuns:
    """The benchmark's work on the real :class:`~fcpose.inference.runner.InferenceRunner`: one runner per ``persons``
    entry (:meth:`InferenceRunner.with_postprocessor`, sharing the network: the model's own post-processing for "auto",
    :class:`ForcedSelection` for N), run stage by stage with a time stamp at each boundary (:meth:`run_once`)."""

    def __init__(self, predictor: Predictor, runner: InferenceRunner, picture: np.ndarray, *, batch: int,
                 persons, candidates_per_person: int, post_threads: int | None):
        self.predictor, self.picture, self.batch, self.post_threads = predictor, picture, batch, post_threads
        self.device = runner.device
        self.runners = {str(n): runner if n == "auto" else
                        runner.with_postprocessor(ForcedSelection(runner.postprocessor, int(n), candidates_per_person))
                        for n in persons}
        self.out_sizes = [picture.shape[:2]] * batch
        self.counts: dict[str, int] = {}  # people decoded per entry (the first image of the batch)

    def prepare(self) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """``batch`` copies of the decoded image, each resized and normalised, padded into one batch."""
        prepared = [self.predictor.prepare(self.picture) for _ in range(self.batch)]
        return batch_images([t for t, _ in prepared], self.predictor.size_divisibility), [r for _, r in prepared]

    def run_once(self, n) -> dict[str, float]:
        """One run of entry ``n``: seconds per stage, ``total``, and ``graph_total`` where the runner
        replays CUDA graphs (the same work as one user call; the stages are its eager equivalent)."""
        runner = self.runners[str(n)]
        marks: dict[str, float] = {}

        def mark(stage: str) -> None:
            sync(self.device)
            marks[stage] = time.perf_counter()

        mark("start")
        images, resized = self.prepare()
        mark("preprocess")
        dense = runner.network(images)
        mark("network")
        with stage_threads(self.post_threads, self.device):
            dets = [d.to("cpu") for d in runner.detect(dense, resized, self.out_sizes, on_stage=mark)]
        mark("end")
        self.counts[str(n)] = len(dets[0])
        times = {"total": marks["end"] - marks["start"], "preprocess": marks["preprocess"] - marks["start"],
                 "network": marks["network"] - marks["preprocess"], "nms": marks["select"] - marks["network"],
                 "heads": marks["end"] - marks["select"]}
        if runner.graphs is not None:
            sync(self.device)
            start = time.perf_counter()
            images, resized = self.prepare()
            runner(images, resized, self.out_sizes)
            times["graph_total"] = time.perf_counter() - start
        return times


def run_bench(config: str | None = "fcpose_r50_fpn", weights: str | None = None, *, size: int | None = None,
              max_size: int | None = None, persons=(1, 5, 10, 20, 50), device: str = "cpu", runs: int = 20,
              warmup: int = 3, precision: str = "fp32", compile: bool = False, optimize: bool = True,
              channels_last: bool | None = None, image: str | None = None, threads: int | None = None,
              candidates_per_person: int = 20, probe: bool = True, flops: bool = True, probe_runs: int = 5,
              overrides: list[str] | None = None, note: str = "", log=None, post_threads: int | None = None,
              batch: int = 1, preprocess: str = "auto") -> dict:
    """Run the benchmark and return the JSON-ready report (see the module docstring). CUDA graphs are timed
    where the runner uses them (on CUDA, unless ``FCPOSE_CUDA_GRAPHS=0``)."""
    from ..precision import resolve_device

    if batch < 1:
        raise InputError("--batch must be >= 1")
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    model, weights_name = load_bench_model(config, weights, overrides)
    runner = InferenceRunner(model, device=dev, optimize=optimize, precision=precision, compile=compile,
                             channels_last=channels_last)
    del model  # the runner's optimised copy is what runs
    # The preprocessing of a Predictor around the runner's network (optimize=False: no second copy).
    predictor = Predictor(runner.model, device=dev, min_size=size, max_size=max_size, optimize=False,
                          preprocess=preprocess)
    picture, image_name = load_bench_image(image, predictor.min_size, predictor.max_size)
    say = log or (lambda msg: None)
    stat0, load0, own0 = cpu_times(), loadavg(), own_cpu_seconds()
    report = _report_head(config, weights_name, image_name, picture, predictor, runner, note=note, batch=batch,
                          runs=runs, warmup=warmup, post_threads=post_threads, compile=compile,
                          candidates_per_person=candidates_per_person)
    work = PeopleRuns(predictor, runner, picture, batch=batch, persons=persons,
                      candidates_per_person=candidates_per_person, post_threads=post_threads)
    memory = PeakMemory(dev)
    memory.baseline()
    _measure_network(report, runner, work.prepare()[0], flops=flops, probe=probe, probe_runs=probe_runs, say=say)
    if compile:
        say("compiling")
        runner.network(work.prepare()[0])
        report["compile_failed"] = runner.compile_failed
    spans, peaks = _time_entries(work, persons, runs=runs, warmup=warmup, memory=memory, say=say)
    report["memory_method"] = memory.method
    report["results"] = [_entry(n, spans[str(n)], peaks[str(n)], work.counts[str(n)], report) for n in persons]
    _summarize_people(report)
    report["contention"] = contention_since(stat0, load0, own0)
    return report


def _report_head(config, weights_name: str, image_name: str, picture: np.ndarray, predictor: Predictor,
                 runner: InferenceRunner, *, note: str, batch: int, runs: int, warmup: int,
                 post_threads: int | None, compile: bool, candidates_per_person: int) -> dict:
    """What was measured, on what: every field of the report but the results."""
    rh, rw = resize_shape(picture.shape[0], picture.shape[1], predictor.min_size, predictor.max_size)
    return {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "note": note,
        "machine": machine_info(runner.device),
        "config": runner.model.cfg.name or str(config),
        "weights": weights_name,
        "size": [predictor.min_size, predictor.max_size],
        "image": image_name,
        "image_shape": list(picture.shape[:2]),
        "resized_shape": [rh, rw],
        "input_shape": list(padded_size(rh, rw, predictor.size_divisibility)),
        "device": runner.device.type,
        "precision": runner.precision,
        "optimize": runner.optimize,
        "fold_bn": runner.optimize,
        "channels_last": runner.channels_last,
        "post_threads": post_threads or torch.get_num_threads(),
        "batch": batch,
        "preprocess": predictor.preprocess,
        "cast_weights": runner.cast_weights,
        "sync_free": runner.sync_free,
        "cuda_graphs": runner.graphs is not None,
        "compile": bool(compile),
        "runs": runs,
        "warmup": warmup,
        "forced_selection": {"candidates_per_person": candidates_per_person, "score_threshold_skipped": True},
        "detection_params": vars(runner.postprocessor.params).copy(),
    }


def _measure_network(report: dict, runner: InferenceRunner, images: torch.Tensor, *, flops: bool, probe: bool,
                     probe_runs: int, say) -> None:
    """The network's FLOPs (``report["flops"]``) and the machine's conv throughput (``report["conv_probe"]``)."""
    net, (ph, pw) = runner.model, report["input_shape"]
    if flops:
        say("counting FLOPs")
        gflop = count_network_flops(net, runner.network_input(images), runner.device, runner.precision) / 1e9
        h3, w3 = ph // net.strides[0], pw // net.strides[0]
        report["flops"] = {"network_gflop": round(gflop, 2),
                           "heads_gflop_per_person": round(head_flops_per_person(net, h3, w3) / 1e9, 4),
                           "counter": "torch.utils.flop_counter (conv/matmul, 2 FLOPs per multiply-add)"}
    if probe:
        say("conv probe")
        report["conv_probe"] = conv_probe(ph, pw, runner.device, runner.precision, runner.channels_last, probe_runs,
                                          cast_weights=runner.cast_weights)


def _time_entries(work: PeopleRuns, persons, *, runs: int, warmup: int, memory: PeakMemory,
                  say) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict]]:
    """Warm-up and peak memory entry by entry, then ``runs`` timed rounds: ms per stage per entry, and peaks."""
    # Memory first (untimed), one entry at a time: the peak while that many people are decoded.
    peaks = {}
    for n in persons:
        say(f"persons={n}: warm-up and memory")
        memory.reset()
        for _ in range(max(1, warmup)):
            work.run_once(n)
        peaks[str(n)] = memory.peak_mb()
    # Timed runs interleave the entries (rotating their order), so slow drifts of the machine (clock,
    # other load) spread over all entries instead of biasing the later ones.
    say(f"timing {runs} rounds of {len(persons)} entries")
    spans: dict[str, dict[str, list[float]]] = {str(n): {} for n in persons}
    for r in range(runs):
        order = list(persons[r % len(persons):]) + list(persons[:r % len(persons)])
        for n in order:
            for key, value in work.run_once(n).items():
                spans[str(n)].setdefault(key, []).append(value * 1e3)
    return spans, peaks


def _entry(n, spans: dict[str, list[float]], peak: dict, count: int, report: dict) -> dict:
    """One row of the results: the stage statistics, memory, FPS (and images/s, GFLOP/s where measured)."""
    entry = {"persons": n, "instances": count}
    entry.update({f"{k}_ms": summarize(v) for k, v in spans.items()})
    entry.update(peak)
    batch = report["batch"]
    entry["fps"] = round(1000.0 / entry["total_ms"]["median"], 3)
    if batch > 1:
        entry["images_per_s"] = round(1000.0 * batch / entry["total_ms"]["median"], 2)
    if "graph_total_ms" in entry:
        entry["graph_fps"] = round(1000.0 / entry["graph_total_ms"]["median"], 3)
        entry["graph_images_per_s"] = round(1000.0 * batch / entry["graph_total_ms"]["median"], 2)
    if "flops" in report:
        entry["network_gflops_per_s"] = round(report["flops"]["network_gflop"] /
                                              (entry["network_ms"]["median"] / 1e3), 1)
    return entry


def _summarize_people(report: dict) -> None:
    """``report["summary"]`` over the forced entries: the time ratio from fewest to most people, the share of
    the per-person stages, and the network against the conv probe."""
    forced = [r for r in report["results"] if r["persons"] != "auto"]
    if not forced:
        return
    lo = min(forced, key=lambda r: r["persons"])
    hi = max(forced, key=lambda r: r["persons"])
    report["summary"] = {
        "total_ratio_max_over_min_persons": round(hi["total_ms"]["median"] / lo["total_ms"]["median"], 4),
        "persons_range": [lo["persons"], hi["persons"]],
        "per_person_share": {str(r["persons"]): round((r["heads_ms"]["median"] + r["nms_ms"]["median"]) /
                                                      r["total_ms"]["median"], 4) for r in forced},
        "network_ms_median": round(statistics.median(r["network_ms"]["median"] for r in forced), 2),
    }
    if "flops" in report and "conv_probe" in report:
        best = statistics.median(r["network_gflops_per_s"] for r in forced)
        report["summary"]["network_gflops_per_s"] = best
        report["summary"]["network_vs_conv_probe"] = round(best / report["conv_probe"]["gflops_per_s"], 3)


# ---- Output ------------------------------------------------------------------------------------
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

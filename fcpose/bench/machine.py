"""The machine a benchmark runs on, and how disturbed it was: what every ``fcpose bench`` report and the
``benchmarks/`` scripts record next to their timings — :func:`machine_info`; load, steal and other processes'
CPU time over a run (:func:`contention_since`); peak memory (:class:`PeakMemory`, reported as
:mod:`fcpose.bench.people` says); the achievable conv throughput (:func:`conv_probe`); :func:`summarize`."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu import cpu_info, instruction_set
from ..precision import Precision, cpu_supports

__all__ = ["machine_info", "cpu_times", "loadavg", "own_cpu_seconds", "contention_since", "PeakMemory",
           "conv_probe", "summarize", "sync"]

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "amx_fp16")


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


# ---- Memory ------------------------------------------------------------------------------------
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


# ---- Conv throughput and timing statistics -----------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a time stamp counts it."""
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
                sync(device)
                t0 = time.perf_counter()
                F.conv2d(x, weight, bias, padding=k // 2)
                sync(device)
                if i:
                    times.append(time.perf_counter() - t0)
        flops = 2 * cin * cout * k * k * h * w
        med = statistics.median(times)
        total_flops += flops
        total_s += med
        out.append({"conv": name, "shape": [cin, h, w], "gflop": round(flops / 1e9, 3), "ms": round(med * 1e3, 2),
                    "gflops_per_s": round(flops / med / 1e9, 1)})
    return {"gflops_per_s": round(total_flops / total_s / 1e9, 1), "convs": out, "runs": runs}


def summarize(values: list[float]) -> dict:
    """Median, p90, mean and min of ``values`` (rounded to 3 decimals)."""
    arr = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 3), "p90": round(float(np.percentile(arr, 90)), 3),
            "mean": round(float(arr.mean()), 3), "min": round(float(arr.min()), 3)}

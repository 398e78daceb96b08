"""What this CPU is: its model and flags, the instruction set that decides its speed, and the settings that do not fit
it. Read from ``/proc/cpuinfo`` (Linux); elsewhere the model is ``platform.processor()`` and the flags are unknown."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_info", "instruction_set", "int8_note", "onednn_cap_below_cpu"]

# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA), by the first name that a level starts with, and the CPU flag of each
_ISA_LEVELS = (("SSE41", 1, "sse4_1"), ("AVX2", 3, "avx2"), ("AVX512", 4, "avx512f"), ("AVX10", 5, "avx10"),
               ("AVX", 2, "avx"))


def cpu_info() -> tuple[str, set[str]]:
    """(model name, set of flags) of the first CPU."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("unknown", "", "x86_64"):
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def instruction_set(flags: set[str]) -> str:
    """The vector instructions that decide CPU speed here, e.g. ``AVX-512 + VNNI + AMX``, ``AVX2 (no VNNI)``."""
    if "avx512f" in flags:
        base = "AVX-512"
    elif "avx2" in flags:
        base = "AVX2"
    else:
        return "no AVX2" if flags else "unknown"
    extras = [name for name, keys in (("VNNI", ("avx512_vnni", "avx_vnni")), ("BF16", ("avx512_bf16",)),
                                      ("AMX", ("amx_int8", "amx_tile"))) if any(k in flags for k in keys)]
    return " + ".join([base, *extras]) if extras else f"{base} (no VNNI)"


def int8_note(flags: set[str]) -> str | None:
    """One line when int8 cannot be fast here: without VNNI or AMX an int8 multiply-add takes several
    instructions (measured: OpenVINO int8 R-50 @800 2.3x PyTorch fp32 on an AVX2-only EPYC, 4.5x with
    AVX-512 VNNI, 9.7x with AMX)."""
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return None
    return ("note: this CPU has no VNNI or AMX instructions, so int8 gains little over fp32 here (about 2x "
            "for OpenVINO int8 on an AVX2-only CPU, 4.5-10x with VNNI or AMX; README: OpenVINO and int8 on the CPU)")


def onednn_cap_below_cpu() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` when it caps oneDNN below this CPU's own instruction set (e.g. ``AVX2`` on an
    AVX-512 CPU, to reproduce another machine's kernels), else None. OpenVINO's CPU plugin (2026.4) picks its
    kernels from the CPU and crashes (SIGSEGV) in inference when its oneDNN is capped so."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    level = next((lv for name, lv, _ in _ISA_LEVELS if value.startswith(name)), None)
    if level is None:  # unset, ALL, DEFAULT or unknown: no cap
        return None
    flags = cpu_info()[1]
    best = max((lv for _, lv, flag in _ISA_LEVELS if flag in flags), default=0)
    return value if level < best else None

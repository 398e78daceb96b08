"""Device and precision: one vocabulary for training and inference (DESIGN.md §14).

``precision`` is one of :data:`PRECISIONS`: ``"fp32"``, ``"bf16"`` (bfloat16; no loss scaling needed,
fp32's exponent range) or ``"fp16"`` (float16; training needs a ``GradScaler``, fp16's largest value is
65,504). :class:`Precision` is the small policy object the inference runner and the training loop both
build from that string: the compute dtype, whether gradients need scaling, and how the network gets to
that dtype — autocast around fp32 weights (training, and CPU inference), or weights converted to the dtype
(``cast_weights``: GPU inference, where autocast's per-call casts cost more than they save at batch 1).
A bottom-layer module: it imports only :mod:`fcpose.errors`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import ConfigError, FCPoseError

__all__ = ["PRECISIONS", "Precision", "autocast_context", "check_precision", "cpu_supports", "resolve_device",
           "default_training_precision", "default_cast_weights"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`; a clear :class:`~fcpose.errors.ConfigError` when CUDA is asked for
    and absent (the one check of it: the predictor, training and torchrun's process group use this)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available on this machine")
    return dev


def cpu_supports(precision: str) -> bool:
    """Whether oneDNN has native kernels for ``precision`` on this CPU (bf16: AVX512-BF16 or AMX; fp16:
    AVX512-FP16 or AMX-FP16)."""
    if precision == "fp32":
        return True
    try:
        if precision == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if precision == "fp16":
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        pass
    return False


def check_precision(device: torch.device, precision: str, *, require_native_cpu: bool = True) -> None:
    """Raise :class:`~fcpose.errors.FCPoseError` when ``precision`` cannot run on ``device``.

    ``require_native_cpu``: on a CPU, refuse bf16/fp16 without native oneDNN kernels (inference, where it
    would only be slow). Training passes False for bf16: autocast then emulates it, which is slow but
    correct, and is what the CPU tests of the bf16 training path use."""
    if precision not in PRECISIONS:
        raise FCPoseError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise FCPoseError("--precision bf16: this GPU does not support bfloat16")
        return
    if device.type != "cpu":
        raise FCPoseError(f"--precision {precision} is supported on cpu and cuda only")
    if require_native_cpu and not cpu_supports(precision):
        raise FCPoseError(f"--precision {precision}: this CPU has no native {precision} support "
                          "(bf16: AVX512-BF16/AMX, fp16: AVX512-FP16/AMX-FP16); use fp32")


def autocast_context(device: torch.device, precision: str, cache_enabled: bool = True):
    """The autocast context of ``precision`` (a no-op for fp32). ``cache_enabled=False`` inside a CUDA graph
    capture (autocast's cache of cast weights must not outlive the capture)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision], cache_enabled=cache_enabled)


def default_cast_weights(device: torch.device) -> bool:
    """Whether inference converts the network's weights to a bf16/fp16 precision (instead of autocast): on a
    GPU yes (no per-call weight casts; what makes half precision faster than fp32 there), on a CPU no (the
    oneDNN autocast path is the measured one, see benchmarks/README.md)."""
    return device.type == "cuda"


def default_training_precision(device: torch.device) -> str:
    """What ``solver.precision: auto`` means: bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on a
    CPU (where reduced-precision training is emulated unless the CPU has AMX)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@dataclass(frozen=True)
class Precision:
    """The precision policy of one device: ``dtype`` the network computes in, ``needs_scaler`` (fp16 training:
    gradients are scaled so small ones do not underflow), and how: with ``cast_weights`` the network's
    weights are converted to ``dtype`` (``weight_dtype``) and run without autocast; otherwise they stay
    float32 and ``autocast()`` goes around the network. Either way the decoding after the network (selection,
    NMS, controller, dynamic heads, peaks and offsets) runs in float32."""

    device: torch.device
    name: str = "fp32"
    cast_weights: bool = False

    def __post_init__(self):
        if self.name not in PRECISIONS:
            raise FCPoseError(f"unknown precision {self.name!r} (choose from {', '.join(PRECISIONS)})")

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the network's weights and input: ``dtype`` with ``cast_weights``, else float32."""
        return self.dtype if self.cast_weights else torch.float32

    def autocast(self, cache_enabled: bool = True):
        """The context around the network: autocast to ``dtype``, or nothing (fp32, or ``cast_weights``)."""
        if self.cast_weights:
            return contextlib.nullcontext()
        return autocast_context(self.device, self.name, cache_enabled)

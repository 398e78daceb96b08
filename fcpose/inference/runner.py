"""The inference runner: the network (optionally a folded channels-last copy, under autocast or
``torch.compile``) followed by the :class:`~fcpose.postprocess.PostProcessor`, behind one
:class:`InferenceRunner` that the :class:`~fcpose.Predictor`, ``fcpose eval`` and ``fcpose bench`` share.

* :func:`~fcpose.model.deploy.optimize_for_inference` returns a **copy** (by default) of the model in eval mode, without
  gradients, with every frozen batch norm folded into the convolution before it
  (:func:`~fcpose.model.norm.fold_frozen_bn`) and, optionally, channels-last weights (NHWC, what oneDNN
  and cuDNN convolutions prefer). The copy is for inference only: its state dict differs (conv biases
  appear, norm entries vanish), so never train or save it; the original model is left untouched.
* ``precision``: ``"fp32"``; ``"bf16"`` or ``"fp16"`` autocast (on CPU only where oneDNN has native
  kernels for it, see :func:`check_precision`; bf16 on CUDA needs bf16 support). Autocast covers the
  network; with ``optimize`` the selection, NMS and the dynamic heads run in float32. Whether reduced
  precision is faster depends on the CPU: without AMX, oneDNN's bf16/fp16 convolutions can be slower than
  fp32 (``fcpose bench --precision bf16`` measures it).
* ``compile=True`` wraps the network in ``torch.compile``; if compiling fails (no C++ compiler for
  Inductor on CPU, no Triton on CUDA, an unsupported op) a warning is printed once and the eager network
  is used.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor, nn

from ..errors import FCPoseError
from ..model.deploy import optimize_for_inference
from ..model.fcpose import FCPose
from ..postprocess import PostProcessor, StageHook
from ..precision import PRECISIONS, autocast_context, check_precision
from ..structures import DenseOutputs, PoseDetections

__all__ = ["PRECISIONS", "CompiledNetwork", "InferenceRunner", "Float32Branch"]


class Float32Branch(nn.Module):
    """Runs ``inner`` in float32 with autocast off (inputs cast to float32), inside an autocast network.

    Optional for the keypoint branch under bf16/fp16 (the 32-channel map F feeds the dynamic heads, whose
    logits can reach the hundreds); the branch is ~6% of R-50's FLOPs.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, features: list[Tensor]):
        with torch.autocast(device_type=features[0].device.type, enabled=False):
            return self.inner([f.float() for f in features])


class CompiledNetwork:
    """``torch.compile(model)`` that falls back to the eager model, with one warning, if compiling fails."""

    def __init__(self, model: nn.Module, **compile_kwargs):
        self.model = model
        self.failed: str | None = None
        try:
            self.compiled = torch.compile(model, **compile_kwargs)
        except Exception as exc:  # torch.compile itself may refuse (e.g. unsupported Python)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.failed = f"{type(exc).__name__}: {first[:300]}"
        self.compiled = None
        warnings.warn(f"fcpose: torch.compile failed, running the eager model ({self.failed})", RuntimeWarning,
                      stacklevel=3)

    def __call__(self, images: Tensor) -> DenseOutputs:
        if self.compiled is not None:
            try:
                return self.compiled(images)
            except Exception as exc:  # compiler toolchain missing or an op Inductor cannot handle
                self._fail(exc)
        return self.model(images)


class InferenceRunner:
    """Network + post-processing of a (possibly optimised) model, as separate timed stages.

    ``optimize=True``: :func:`optimize_for_inference` (a folded, channels-last copy unless ``inplace``);
    with ``fp32_keypoint_branch`` the keypoint branch stays in float32 under bf16/fp16
    (:class:`Float32Branch`; on random R-50 weights it did not reduce the keypoint deviations, see
    benchmarks/README.md). ``optimize=False``: the model as given. Either way the selection, NMS and the
    dynamic heads (``postprocessor``, default :meth:`PostProcessor.from_model`) run in float32 outside
    autocast.
    """

    def __init__(self, model: FCPose, postprocessor: PostProcessor | None = None, *,
                 device: torch.device | str = "cpu", optimize: bool = True, precision: str = "fp32",
                 compile: bool = False, channels_last: bool | None = None, inplace: bool = False,
                 fp32_keypoint_branch: bool = False, post_threads: int | None = None):
        self.device = torch.device(device)
        check_precision(self.device, precision)
        model = model.to(self.device).eval()
        self.optimize = bool(optimize)
        if channels_last is None:
            channels_last = self.optimize
        if self.optimize:
            model = optimize_for_inference(model, channels_last=channels_last, inplace=inplace)
            if precision != "fp32" and fp32_keypoint_branch:
                model.keypoint_branch = Float32Branch(model.keypoint_branch)
        elif channels_last:
            raise FCPoseError("channels_last needs optimize=True")
        self.model = model
        self.postprocessor = postprocessor or PostProcessor.from_model(model)
        self.channels_last = bool(channels_last)
        self.precision = precision
        self.network_fn = CompiledNetwork(model) if compile else model
        self.compile = bool(compile)
        self.post_threads = post_threads

    @contextlib.contextmanager
    def _post_threads(self):
        """Intra-op threads for selection/NMS/heads: many small ops, each an OpenMP barrier. On a core shared
        with another busy process every barrier can wait a scheduler slice, so ``post_threads=1`` is far
        more robust there (and costs ~2x on those stages on an idle 2-core machine)."""
        if not self.post_threads or self.device.type != "cpu" or self.post_threads == torch.get_num_threads():
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.post_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @property
    def compile_failed(self) -> str | None:
        return getattr(self.network_fn, "failed", None)

    def network_input(self, batch: Tensor) -> Tensor:
        """The batch as the network gets it (device, memory format)."""
        batch = batch.to(self.device)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def network(self, batch: Tensor) -> DenseOutputs:
        """``[B, 3, H, W]`` normalised padded images -> dense outputs (under the precision's autocast)."""
        batch = self.network_input(batch)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return self.network_fn(batch)

    def postprocess(self, dense: DenseOutputs, input_sizes, output_sizes, *, force_num: int | None = None,
                    candidates_per_person: int = 20, on_stage: StageHook | None = None) -> list[PoseDetections]:
        """:class:`~fcpose.postprocess.PostProcessor` on the dense outputs -> one detection set per image."""
        with torch.inference_mode(), self._post_threads():
            return self.postprocessor(self.model, dense, input_sizes, output_sizes, force_num=force_num,
                                      candidates_per_person=candidates_per_person, on_stage=on_stage)

    def __call__(self, batch: Tensor, input_sizes, output_sizes) -> list[PoseDetections]:
        return self.postprocess(self.network(batch), input_sizes, output_sizes)

"""The inference runner: the network (optionally a folded channels-last copy, in reduced precision, under
``torch.compile`` or in CUDA graphs) then the :class:`~fcpose.postprocess.PostProcessor`, behind one
:class:`InferenceRunner` that the Predictor, ``fcpose eval`` and ``fcpose bench`` share. Where a tensor lives
and its dtype follow one :class:`~fcpose.precision.Precision` policy; one route per device:

* **CPU**: the network (autocast for bf16/fp16 only where oneDNN has native kernels, see
  :func:`~fcpose.precision.check_precision`), then ``PostProcessor.__call__``.
* **CUDA**: the weights converted to the precision's dtype (no per-call autocast), then
  :meth:`~fcpose.postprocess.PostProcessor.fixed`, which never waits for the GPU; one pinned copy to the CPU and
  :meth:`~fcpose.postprocess.PostProcessor.finish` there (the rare batch the fixed form cannot vouch for is rerun
  dynamically). Network + fixed post-processing are one CUDA graph per input shape (:mod:`.graphs`; eager where
  a capture fails, with ``cuda_graphs=False`` or ``FCPOSE_CUDA_GRAPHS=0``). ``cudnn.benchmark`` is switched on.

Either way the selection, NMS, the controller, the dynamic heads and the decoding run in float32.
``optimize`` (default): :func:`~fcpose.model.deploy.optimize_for_inference` — an eval-mode **copy** without
gradients, frozen BNs folded, NHWC weights (``channels_last``); for inference only (its state dict differs: never
train or save it). ``compile=True``: ``torch.compile`` on the network, with one warning and the eager network if
compiling fails (no C++ compiler or Triton, an unsupported op); the CUDA route then runs without graphs unless
``cuda_graphs=True``."""

from __future__ import annotations

import copy
import os
import warnings
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import FCPoseError, first_line
from ..model.deploy import optimize_for_inference
from ..model.fcpose import FCPose
from ..postprocess import PostProcessor, StageHook
from ..precision import PRECISIONS, Precision, check_precision, default_cast_weights
from ..structures import DenseOutputs, PeopleSlots, PoseDetections
from .graphs import GraphedFunction

__all__ = ["PRECISIONS", "CompiledNetwork", "InferenceRunner", "HostCopy", "GRAPHS_ENV"]

GRAPHS_ENV = "FCPOSE_CUDA_GRAPHS"  # "0": the CUDA route runs eagerly (debugging)
MAX_GRAPHS = 8  # distinct input shapes captured per runner; further shapes run eagerly


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
        self.failed = f"{type(exc).__name__}: {first_line(exc)}"
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


class HostCopy:
    """Tensors from a GPU to the CPU through pinned host buffers that are reused between calls: every copy
    is queued asynchronously, then one wait for the stream. The returned tensors are those buffers:
    overwritten by the next call with the same shapes (the runner finishes them into fresh tensors first).
    Inference only: the buffers are inference tensors, written in inference mode whoever calls."""

    def __init__(self):
        self._buffers: dict[tuple, list[Tensor]] = {}

    @torch.inference_mode()
    def __call__(self, tensors: list[Tensor]) -> list[Tensor]:
        if not tensors or tensors[0].device.type != "cuda":
            return [t.cpu() for t in tensors]
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            self._buffers[key] = buffers
        for buffer, t in zip(buffers, tensors):
            buffer.copy_(t, non_blocking=True)
        torch.cuda.current_stream(tensors[0].device).synchronize()
        return buffers


class InferenceRunner:
    """Network + post-processing of a (possibly optimised) model, by the route of its device (see the module docstring),
    as separate stages that ``fcpose bench`` times. ``postprocessor`` (default :meth:`PostProcessor.from_model`) turns
    the dense outputs into people; :meth:`with_postprocessor` gives a runner with another one that shares this runner's
    network. The runner changes no process-wide setting except ``cudnn.benchmark`` on CUDA (once, here); it is meant for
    one thread at a time (its graphs and host buffers are reused from call to call)."""

    # Internal, for tests only: the device type whose route the runner takes ("cuda" runs the CUDA route on a
    # CPU, graph capture replaced by its eager stand-in, see :mod:`fcpose.inference.graphs`). Never an option.
    _route_device: ClassVar[str | None] = None

    def __init__(self, model: FCPose, postprocessor: PostProcessor | None = None, *,
                 device: torch.device | str = "cpu", optimize: bool = True, precision: str = "fp32",
                 compile: bool = False, channels_last: bool | None = None, cuda_graphs: bool | None = None):
        self.device = torch.device(device)
        check_precision(self.device, precision)
        route = torch.device(self._route_device or self.device.type)
        self.sync_free = route.type == "cuda"  # the CUDA route: fixed-shape post-processing, no host sync
        self.optimize = bool(optimize)
        self.channels_last = self.optimize if channels_last is None else bool(channels_last)
        if self.channels_last and not self.optimize:
            raise FCPoseError("channels_last needs optimize=True")
        cast = self.optimize and default_cast_weights(route) and precision != "fp32"
        self.policy = Precision(self.device, precision, cast_weights=cast)
        model = model.to(self.device).eval()
        if self.optimize:
            model = optimize_for_inference(model, channels_last=self.channels_last, dtype=self.policy.weight_dtype)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = model
        self.postprocessor = postprocessor or PostProcessor.from_model(model)
        self.precision = precision
        self.compile = bool(compile)
        self.network_fn = CompiledNetwork(model) if compile else model
        self.cuda_graphs = self._use_graphs(cuda_graphs)
        self._fresh_state()

    def _use_graphs(self, cuda_graphs: bool | None) -> bool:
        """Whether the CUDA route captures graphs: by default yes, unless ``compile`` or ``FCPOSE_CUDA_GRAPHS=0``."""
        if not self.sync_free:
            if cuda_graphs:
                raise FCPoseError("cuda_graphs needs a CUDA device")
            return False
        if cuda_graphs is None:
            return not self.compile and os.environ.get(GRAPHS_ENV, "1").strip() != "0"
        return bool(cuda_graphs)

    def _fresh_state(self) -> None:
        """Graphs, host buffers and the fallback count: what belongs to one post-processor."""
        self.graphs = (GraphedFunction(self.run_fixed, max_graphs=MAX_GRAPHS, capture=self.device.type == "cuda")
                       if self.cuda_graphs else None)
        self.host_copy = HostCopy()
        self.fallbacks = 0  # batches the fixed-shape post-processing could not vouch for (rerun dynamically)

    def with_postprocessor(self, postprocessor: PostProcessor) -> InferenceRunner:
        """This runner with ``postprocessor`` instead: the same (optimised) network, no copy of it; graphs and
        host buffers of its own (a graph records the post-processing too)."""
        other = copy.copy(self)
        other.postprocessor = postprocessor
        other._fresh_state()
        return other

    @property
    def cast_weights(self) -> bool:
        """Whether the network's weights are in the precision's dtype (the CUDA route under bf16/fp16)."""
        return self.policy.cast_weights

    @property
    def compile_failed(self) -> str | None:
        return getattr(self.network_fn, "failed", None)

    def network_input(self, batch: Tensor) -> Tensor:
        """The batch as the network gets it (device, dtype, memory format)."""
        batch = batch.to(self.device, dtype=self.policy.weight_dtype)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def network(self, batch: Tensor, *, cache_enabled: bool = True) -> DenseOutputs:
        """``[B, 3, H, W]`` normalised padded images -> dense outputs (in the precision's dtype)."""
        batch = self.network_input(batch)
        with torch.inference_mode(), self.policy.autocast(cache_enabled):
            return self.network_fn(batch)

    def postprocess(self, dense: DenseOutputs, input_sizes, output_sizes, *,
                    on_stage: StageHook | None = None) -> list[PoseDetections]:
        """The dynamic post-processing on the dense outputs -> one detection set per image, on the device."""
        with torch.inference_mode():
            return self.postprocessor(self.model, dense, input_sizes, output_sizes, on_stage=on_stage)

    def fixed(self, dense: DenseOutputs, *, on_stage: StageHook | None = None) -> PeopleSlots:
        """The sync-free post-processing on the dense outputs -> :class:`PeopleSlots` on the device."""
        with torch.inference_mode():
            return self.postprocessor.fixed(self.model, dense, on_stage=on_stage)

    def run_fixed(self, batch: Tensor) -> tuple[PeopleSlots, DenseOutputs]:
        """Network + fixed post-processing: what a CUDA graph records (no host synchronisation; autocast's
        weight cache off, as a capture requires)."""
        dense = self.network(batch, cache_enabled=False)
        return self.fixed(dense), dense

    def finish(self, slots: PeopleSlots, dense: DenseOutputs, input_sizes, output_sizes) -> list[PoseDetections]:
        """Slots on the device -> detections on the CPU: one copy (pinned buffers), then
        :meth:`PostProcessor.finish`; a batch whose slots are not ``exact`` is rerun by the dynamic path."""
        host = PeopleSlots.from_tensors(self.host_copy(slots.tensors()))
        if not bool(host.exact.all()):
            self.fallbacks += 1
            return [d.to("cpu") for d in self.postprocess(dense, input_sizes, output_sizes)]
        with torch.inference_mode():
            return self.postprocessor.finish(host, input_sizes, output_sizes)

    def detect(self, dense: DenseOutputs, input_sizes, output_sizes, *,
               on_stage: StageHook | None = None) -> list[PoseDetections]:
        """Dense outputs -> people by this runner's route, eagerly (the CUDA route: fixed form, one copy,
        :meth:`finish`). ``on_stage`` marks the end of the selection (see ``PostProcessor``)."""
        if not self.sync_free:
            return self.postprocess(dense, input_sizes, output_sizes, on_stage=on_stage)
        return self.finish(self.fixed(dense, on_stage=on_stage), dense, input_sizes, output_sizes)

    def __call__(self, batch: Tensor, input_sizes, output_sizes) -> list[PoseDetections]:
        """Normalised, padded ``[B, 3, H, W]`` -> one :class:`PoseDetections` per image (on the CPU on the
        CUDA route, else on the device)."""
        if self.graphs is None:
            return self.detect(self.network(batch), input_sizes, output_sizes)
        slots, dense = self.graphs(batch.to(self.device, dtype=torch.float32))
        return self.finish(slots, dense, input_sizes, output_sizes)

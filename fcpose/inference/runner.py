"""The inference runner: the network (optionally a folded channels-last copy, in reduced precision, under
``torch.compile`` or in CUDA graphs) followed by the :class:`~fcpose.postprocess.PostProcessor`, behind one
:class:`InferenceRunner` that the :class:`~fcpose.Predictor`, ``fcpose eval`` and ``fcpose bench`` share.
Where a tensor lives and in which dtype it is computed is decided here, from one
:class:`~fcpose.precision.Precision` policy (DESIGN.md §14).

* :func:`~fcpose.model.deploy.optimize_for_inference` returns a **copy** (by default) of the model in eval mode, without
  gradients, with every frozen batch norm folded into the convolution before it
  (:func:`~fcpose.model.norm.fold_frozen_bn`) and, optionally, channels-last weights (NHWC, what oneDNN
  and cuDNN convolutions prefer). The copy is for inference only: its state dict differs (conv biases
  appear, norm entries vanish), so never train or save it; the original model is left untouched.
* ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (on CPU only where oneDNN has native kernels for it,
  see :func:`check_precision`; bf16 on CUDA needs bf16 support). ``cast_weights`` (default: on CUDA) converts
  the network's weights to that dtype (:func:`~fcpose.model.deploy.cast_weights`; needs ``optimize``),
  otherwise autocast goes around the fp32 network (the CPU default). Either way the selection, NMS, the
  controller, the dynamic heads and the decoding run in float32. Whether reduced precision is faster
  depends on the CPU: without AMX, oneDNN's bf16/fp16 convolutions can be slower than fp32
  (``fcpose bench --precision bf16`` measures it).
* ``sync_free`` (default: on CUDA): the post-processing in its fixed-shape form
  (:meth:`~fcpose.postprocess.PostProcessor.fixed`), which never waits for the GPU; the results come to the
  CPU in one copy through pinned buffers and are finished there (:meth:`~fcpose.postprocess.PostProcessor.finish`),
  equal to the dynamic path's (that path reruns the rare batch the fixed form cannot vouch for).
* ``cuda_graphs`` (default: on CUDA with ``sync_free``, without ``compile``): network + fixed post-processing
  captured as one CUDA graph per input shape (:mod:`fcpose.inference.graphs`; ``buckets`` and
  ``batch_sizes`` pad inputs to a few shapes), eager where a capture fails. ``torch.backends.cudnn.benchmark``
  is switched on for CUDA runners.
* ``compile=True`` wraps the network in ``torch.compile``; if compiling fails (no C++ compiler for
  Inductor on CPU, no Triton on CUDA, an unsupported op) a warning is printed once and the eager network
  is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.transforms import HostUpload
from ..errors import FCPoseError, first_line
from ..model.deploy import optimize_for_inference
from ..model.fcpose import FCPose
from ..postprocess import PostProcessor
from ..precision import PRECISIONS, Precision, check_precision, default_cast_weights
from ..structures import DenseOutputs, PeopleSlots, PoseDetections
from .graphs import GraphedFunction, crop_batch

__all__ = ["PRECISIONS", "CompiledNetwork", "InferenceRunner", "Float32Branch", "HostCopy"]


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
    """Network + post-processing of a (possibly optimised) model, as separate timed stages.

    ``optimize=True``: :func:`optimize_for_inference` (a folded, channels-last copy unless ``inplace``;
    with ``cast_weights`` its network weights in the precision's dtype); with ``fp32_keypoint_branch`` the
    keypoint branch stays in float32 under bf16/fp16 (:class:`Float32Branch`; on random R-50 weights it did
    not reduce the keypoint deviations, see benchmarks/README.md). ``optimize=False``: the model as given.
    Either way the selection, NMS and the dynamic heads (``postprocessor``, default
    :meth:`PostProcessor.from_model`) run in float32 outside autocast. See the module docstring for
    ``sync_free``, ``cuda_graphs``, ``buckets``, ``batch_sizes`` and ``max_graphs``.

    The runner changes no process-wide setting except ``cudnn.benchmark`` on CUDA (once, here); it is meant
    for one thread at a time (its graphs and host buffers are reused from call to call).
    """

    def __init__(self, model: FCPose, postprocessor: PostProcessor | None = None, *,
                 device: torch.device | str = "cpu", optimize: bool = True, precision: str = "fp32",
                 compile: bool = False, channels_last: bool | None = None, inplace: bool = False,
                 fp32_keypoint_branch: bool = False, cast_weights: bool | None = None, sync_free: bool | None = None,
                 cuda_graphs: bool | None = None, buckets: Sequence[tuple[int, int]] | None = None,
                 batch_sizes: Sequence[int] | None = None, max_graphs: int = 8):
        self.device = torch.device(device)
        check_precision(self.device, precision)
        if cast_weights is None:
            cast_weights = bool(optimize) and default_cast_weights(self.device)
        if cast_weights and not optimize:
            raise FCPoseError("cast_weights needs optimize=True (the weights of an inference copy are converted)")
        self.policy = Precision(self.device, precision, cast_weights=bool(cast_weights) and precision != "fp32")
        model = model.to(self.device).eval()
        self.optimize = bool(optimize)
        if channels_last is None:
            channels_last = self.optimize
        if self.optimize:
            dtype = self.policy.weight_dtype
            model = optimize_for_inference(model, channels_last=channels_last, inplace=inplace, dtype=dtype)
            if precision != "fp32" and fp32_keypoint_branch:
                model.keypoint_branch = Float32Branch(model.keypoint_branch.float())
        elif channels_last:
            raise FCPoseError("channels_last needs optimize=True")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = model
        self.postprocessor = postprocessor or PostProcessor.from_model(model)
        self.channels_last = bool(channels_last)
        self.precision = precision
        self.network_fn = CompiledNetwork(model) if compile else model
        self.compile = bool(compile)
        self.sync_free = self.device.type == "cuda" if sync_free is None else bool(sync_free)
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda" and self.sync_free and not compile
        if cuda_graphs and not self.sync_free:
            raise FCPoseError("cuda_graphs needs sync_free=True (the dynamic post-processing waits for the GPU)")
        self.cuda_graphs = bool(cuda_graphs)
        self.graphs = GraphedFunction(self.run_fixed, buckets=buckets, batch_sizes=batch_sizes,
                                      max_graphs=max_graphs, capture=self.device.type == "cuda"
                                      ) if self.cuda_graphs else None
        # uint8 frames -> people with the preprocessing in the graph too (:meth:`pixels`); one graph per frame size
        self.pixel_graphs: GraphedFunction | None = None
        self._pixel_prepare: Callable[[Tensor], Tensor] | None = None
        self.host_copy = HostCopy()
        self.upload = HostUpload()
        self.fallbacks = 0  # batches the fixed-shape post-processing could not vouch for (rerun dynamically)

    @property
    def cast_weights(self) -> bool:
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

    def postprocess(self, dense: DenseOutputs, input_sizes, output_sizes) -> list[PoseDetections]:
        """:class:`~fcpose.postprocess.PostProcessor` on the dense outputs -> one detection set per image
        (the dynamic path, on the device)."""
        with torch.inference_mode():
            return self.postprocessor(self.model, dense, input_sizes, output_sizes)

    def fixed(self, dense: DenseOutputs) -> PeopleSlots:
        """The sync-free post-processing on the dense outputs -> :class:`PeopleSlots` on the device."""
        with torch.inference_mode():
            return self.postprocessor.fixed(self.model, dense)

    def run_fixed(self, batch: Tensor) -> tuple[PeopleSlots, DenseOutputs]:
        """Network + fixed post-processing: what a CUDA graph records (no host synchronisation; autocast's
        weight cache off, as a capture requires)."""
        dense = self.network(batch, cache_enabled=False)
        return self.fixed(dense), dense

    def graph_pixels(self, prepare: Callable[[Tensor], Tensor], max_graphs: int = 4) -> None:
        """Capture the preprocessing as well, from the uint8 frames (:meth:`pixels`): ``prepare`` turns
        ``uint8 [B, 3, H, W]`` frames into the normalised, padded network input, from their shape alone (it
        must not synchronise). One graph per frame size and batch (``max_graphs``, then :meth:`pixels` says
        no and the caller takes its usual route). Needs ``cuda_graphs``; without buckets (a frame's padded
        input is then exactly what the usual route gives it)."""
        if self.graphs is None or self.graphs.buckets is not None:
            raise FCPoseError("graphing the preprocessing needs cuda_graphs without buckets")
        self._pixel_prepare = prepare
        self.pixel_graphs = GraphedFunction(self._run_pixels, batch_sizes=self.graphs.batch_sizes,
                                            max_graphs=max_graphs, capture=self.graphs.capture)

    def _run_pixels(self, frames: Tensor) -> tuple[PeopleSlots, DenseOutputs]:
        return self.run_fixed(self._pixel_prepare(frames))

    def pixels(self, arrays: Sequence[np.ndarray], input_sizes, output_sizes) -> list[PoseDetections] | None:
        """RGB ``uint8`` arrays of one size -> one :class:`PoseDetections` per image (on the CPU), with the
        upload through pinned memory and then resize, normalisation, padding, network and fixed
        post-processing replayed as one graph; None (nothing run) when that size would not get a graph
        (see :meth:`graph_pixels`)."""
        if self.pixel_graphs is None:
            return None
        b, (h, w) = len(arrays), arrays[0].shape[:2]
        if not self.pixel_graphs.would_replay(b, h, w):
            return None
        with torch.inference_mode():
            frames = self.upload(arrays, self.device)
        (slots, dense), ran = self.pixel_graphs(frames)
        if ran != b:
            slots, dense = crop_batch(slots, b), crop_batch(dense, b)
        return self.finish(slots, dense, input_sizes, output_sizes)

    def finish(self, slots: PeopleSlots, dense: DenseOutputs, input_sizes, output_sizes) -> list[PoseDetections]:
        """Slots on the device -> detections on the CPU: one copy (pinned buffers), then
        :meth:`PostProcessor.finish`; a batch whose slots are not ``exact`` is rerun by the dynamic path."""
        host = PeopleSlots.from_tensors(self.host_copy(slots.tensors()))
        if not bool(host.exact.all()):
            self.fallbacks += 1
            return [d.to("cpu") for d in self.postprocess(dense, input_sizes, output_sizes)]
        with torch.inference_mode():
            return self.postprocessor.finish(host, input_sizes, output_sizes)

    def __call__(self, batch: Tensor, input_sizes, output_sizes) -> list[PoseDetections]:
        """Normalised, padded ``[B, 3, H, W]`` -> one :class:`PoseDetections` per image (on the CPU with
        ``sync_free``, else on the device)."""
        if not self.sync_free:
            return self.postprocess(self.network(batch), input_sizes, output_sizes)
        b = int(batch.shape[0])
        if self.graphs is not None:
            (slots, dense), ran = self.graphs(batch.to(self.device, dtype=torch.float32))
            if ran != b:
                slots, dense = crop_batch(slots, b), crop_batch(dense, b)
        else:
            dense = self.network(batch)
            slots = self.fixed(dense)
        return self.finish(slots, dense, input_sizes, output_sizes)

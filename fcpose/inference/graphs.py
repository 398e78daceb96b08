"""CUDA graphs, one per input shape, with an eager fallback.

A CUDA graph replays a recorded sequence of kernels with one launch: no Python, no per-kernel launch cost,
which at batch 1 is most of a GPU's time for a network like FCPose (hundreds of small kernels). A graph
reads its input from, and writes its outputs to, fixed memory, so it holds for one input shape only.
:class:`GraphedFunction` keeps one graph per ``[B, 3, H, W]`` shape (results are exactly the eager ones):

* the batch is copied into the shape's static input buffer;
* the function's outputs are the graph's static output tensors: valid until the next call with the same shape;
* new shapes beyond ``max_graphs`` and shapes whose capture failed (with one warning) run eagerly.

The first call of a shape warms the function up on a side stream (cuDNN's algorithm search, lazy
initialisation, the post-processor's device constants) and then captures it; the function must not
synchronise with the host (see :meth:`fcpose.postprocess.PostProcessor.fixed`). On a CPU — and wherever
``capture=False`` — :class:`StaticCall` *replays* by calling the function on its static buffer, the same
buffer semantics without a graph, which is how the CUDA route is tested without a GPU."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import first_line

__all__ = ["StaticCall", "GraphedFunction"]


class StaticCall:
    """``fn`` on one static input buffer: captured in a CUDA graph (``capture=True``, on a CUDA buffer), or
    called on the buffer at every replay (``capture=False``: the eager stand-in, same semantics).

    Copy the input into :attr:`input`, then ``call()`` returns the outputs — with a graph, the same tensors
    every time, overwritten by the next replay."""

    def __init__(self, fn: Callable[[Tensor], Any], example: Tensor, *, capture: bool, warmup: int = 2):
        self.fn = fn
        self.input = example.clone()  # the example's memory format is kept
        self.graph = None
        self.outputs: Any = None
        if capture:
            stream = torch.cuda.Stream(device=self.input.device)
            stream.wait_stream(torch.cuda.current_stream(self.input.device))
            with torch.cuda.stream(stream):
                for _ in range(max(1, warmup)):
                    fn(self.input)
            torch.cuda.current_stream(self.input.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.outputs = fn(self.input)
            self.graph = graph

    def __call__(self) -> Any:
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        return self.fn(self.input)


class GraphedFunction:
    """``fn(batch)`` with one :class:`StaticCall` per input shape (see the module docstring). ``fn`` takes a
    ``[B, 3, H, W]`` tensor and returns tensors (in any nesting); ``__call__`` returns them (a graph's
    static outputs: valid until the next call of that shape). ``capture`` default: on CUDA devices.
    Inference only: every call runs in ``torch.inference_mode`` (its buffers are inference tensors, so a
    graph captured inside an inference-mode caller replays for any caller)."""

    def __init__(self, fn: Callable[[Tensor], Any], *, max_graphs: int = 8, capture: bool | None = None,
                 warmup: int = 2):
        self.fn = fn
        self.max_graphs = int(max_graphs)
        self.capture = capture
        self.warmup = warmup
        self.calls: dict[tuple[int, ...], StaticCall | None] = {}  # None: this shape runs eagerly (capture failed)
        self.failed: str | None = None
        self.eager_calls = 0

    def _make(self, batch: Tensor) -> StaticCall | None:
        capture = batch.device.type == "cuda" if self.capture is None else self.capture
        try:
            return StaticCall(self.fn, batch, capture=capture, warmup=self.warmup)
        except Exception as exc:  # an op that cannot be captured, out of memory, ...
            failed = f"{type(exc).__name__}: {first_line(exc)}"
            if self.failed is None:
                warnings.warn(f"fcpose: CUDA graph capture failed, running eagerly ({failed})", RuntimeWarning,
                              stacklevel=3)
            self.failed = failed
            if capture and batch.device.type == "cuda":
                torch.cuda.synchronize(batch.device)
            return None

    @torch.inference_mode()
    def __call__(self, batch: Tensor) -> Any:
        shape = tuple(batch.shape)
        if shape not in self.calls:
            if len(self.calls) >= self.max_graphs:
                self.eager_calls += 1
                return self.fn(batch)
            self.calls[shape] = self._make(batch)
        call = self.calls[shape]
        if call is None:
            self.eager_calls += 1
            return self.fn(batch)
        call.input.copy_(batch)
        return call()

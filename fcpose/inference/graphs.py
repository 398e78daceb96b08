"""CUDA graphs over a few padded input shapes ("buckets"), with an eager fallback.

A CUDA graph replays a recorded sequence of kernels with one launch: no Python, no per-kernel launch cost,
which at batch 1 is most of a GPU's time for a network like FCPose (hundreds of small kernels). A graph
reads its input from, and writes its outputs to, fixed memory, so it holds for one input shape only.
:class:`GraphedFunction` keeps one graph per shape:

* the shape of a batch ``[B, 3, H, W]`` is mapped to a bucket by :func:`choose_bucket` — by default the
  batch's own shape (results are then exactly the eager ones); with ``buckets`` (padded (H, W) sizes) and
  ``batch_sizes``, the smallest bucket holding it, so that many image sizes share a few graphs (the extra
  zero padding changes the network's outputs a little near the bottom/right edge, as a larger image would);
* :func:`pad_into` writes the batch into the bucket's static input buffer (zeros around it);
* the function's outputs are the graph's static output tensors: valid until the next call with the same
  bucket, and they cover the whole bucket batch — :func:`crop_batch` gives the first B images back;
* new shapes beyond ``max_graphs``, shapes no bucket holds, and shapes whose capture failed (with one
  warning) run eagerly.

The first call of a shape warms the function up on a side stream (cuDNN's algorithm search, lazy
initialisation, the post-processor's device constants) and then captures it; the function must not
synchronise with the host (see :meth:`fcpose.postprocess.PostProcessor.fixed`). On a CPU — and wherever
``capture=False`` — :class:`StaticCall` *replays* by calling the function on its static buffer, the same
buffer semantics without a graph, which is how the bucketing and padding are tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import first_line

__all__ = ["choose_bucket", "pad_into", "crop_batch", "StaticCall", "GraphedFunction"]

Shape = tuple[int, int, int]  # (batch, height, width) of a [B, 3, H, W] network input


def choose_bucket(batch: int, height: int, width: int, buckets: Sequence[tuple[int, int]] | None = None,
                  batch_sizes: Sequence[int] | None = None) -> Shape | None:
    """The (B, H, W) a ``[batch, 3, height, width]`` input runs as, or None when no bucket holds it.

    ``buckets``: padded (H, W) sizes; the one of least area with ``H >= height`` and ``W >= width`` (ties:
    the first listed). None: the input's own (height, width). ``batch_sizes``: the smallest ``>= batch``;
    None: ``batch`` itself.
    """
    if buckets is None:
        size = (int(height), int(width))
    else:
        fits = [(int(h), int(w)) for h, w in buckets if h >= height and w >= width]
        if not fits:
            return None
        size = min(fits, key=lambda hw: hw[0] * hw[1])
    if batch_sizes is None:
        b = int(batch)
    else:
        larger = [int(n) for n in batch_sizes if n >= batch]
        if not larger:
            return None
        b = min(larger)
    return b, size[0], size[1]


def pad_into(buffer: Tensor, batch: Tensor) -> Tensor:
    """Write ``batch [B, C, H, W]`` into the top-left corner of ``buffer [B', C, H', W']`` (``B <= B'``,
    ``H <= H'``, ``W <= W'``) and zero the rest — the zero padding :func:`~fcpose.data.transforms.batch_images`
    adds, extended to the bucket. Returns ``buffer``."""
    b, c, h, w = batch.shape
    if b > buffer.shape[0] or c != buffer.shape[1] or h > buffer.shape[2] or w > buffer.shape[3]:
        raise ValueError(f"a {tuple(batch.shape)} batch does not fit a {tuple(buffer.shape)} buffer")
    if tuple(batch.shape) == tuple(buffer.shape):
        return buffer.copy_(batch)
    buffer.zero_()
    buffer[:b, :, :h, :w].copy_(batch)
    return buffer


def crop_batch(outputs: Any, batch: int) -> Any:
    """The first ``batch`` images of every tensor in ``outputs`` (tensors, lists, tuples, dicts and
    dataclasses of them, batch first; other values as they are): a bucket's outputs cropped back to the
    images that were run. Views, no copies."""
    if isinstance(outputs, Tensor):
        return outputs[:batch] if outputs.dim() > 0 else outputs
    if dataclasses.is_dataclass(outputs) and not isinstance(outputs, type):
        return dataclasses.replace(outputs, **{f.name: crop_batch(getattr(outputs, f.name), batch)
                                               for f in dataclasses.fields(outputs) if f.init})
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(crop_batch(v, batch) for v in outputs)
    if isinstance(outputs, dict):
        return {k: crop_batch(v, batch) for k, v in outputs.items()}
    return outputs


class StaticCall:
    """``fn`` on one static input buffer: captured in a CUDA graph (``capture=True``, on a CUDA buffer), or
    called on the buffer at every replay (``capture=False``: the eager stand-in, same semantics).

    Write the input with :func:`pad_into` (or into :attr:`input`), then ``call()`` returns the outputs —
    with a graph, the same tensors every time, overwritten by the next replay.
    """

    def __init__(self, fn: Callable[[Tensor], Any], example: Tensor, *, capture: bool, warmup: int = 2):
        self.fn = fn
        self.input = torch.zeros_like(example)
        pad_into(self.input, example)
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
    """``fn(batch)`` over bucketed input shapes, one :class:`StaticCall` per bucket (see the module
    docstring). ``fn`` takes a ``[B, 3, H, W]`` tensor and returns tensors (in any nesting) with the batch
    first; ``__call__`` returns ``(outputs, bucket_batch)``: the outputs of the bucket (crop them to the B
    images with :func:`crop_batch`) and the bucket's batch size. ``capture`` default: on CUDA devices.
    Inference only: every call runs in ``torch.inference_mode`` (its buffers are inference tensors, so a
    graph captured inside an inference-mode caller replays for any caller)."""

    def __init__(self, fn: Callable[[Tensor], Any], *, buckets: Sequence[tuple[int, int]] | None = None,
                 batch_sizes: Sequence[int] | None = None, max_graphs: int = 8, capture: bool | None = None,
                 warmup: int = 2):
        self.fn = fn
        self.buckets = None if buckets is None else [(int(h), int(w)) for h, w in buckets]
        self.batch_sizes = None if batch_sizes is None else sorted({int(b) for b in batch_sizes})
        self.max_graphs = int(max_graphs)
        self.capture = capture
        self.warmup = warmup
        self.calls: dict[Shape, StaticCall | None] = {}  # None: this shape runs eagerly (capture failed)
        self.failed: str | None = None
        self.eager_calls = 0

    def bucket(self, batch: Tensor) -> Shape | None:
        b, _, h, w = batch.shape
        return choose_bucket(b, h, w, self.buckets, self.batch_sizes)

    def would_replay(self, batch: int, height: int, width: int) -> bool:
        """Whether a ``[batch, C, height, width]`` input runs as a graph (one that exists, or a new one within
        ``max_graphs``) rather than eagerly: for callers with a cheaper eager route of their own."""
        shape = choose_bucket(batch, height, width, self.buckets, self.batch_sizes)
        if shape is None:
            return False
        if shape in self.calls:
            return self.calls[shape] is not None
        return len(self.calls) < self.max_graphs

    def _make(self, shape: Shape, batch: Tensor) -> StaticCall | None:
        capture = batch.device.type == "cuda" if self.capture is None else self.capture
        # the batch's memory format is kept (a uint8 image batch viewed from [B, H, W, 3] is channels-last)
        layout = (torch.channels_last if not batch.is_contiguous() and batch.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format)
        example = batch.new_zeros((shape[0], batch.shape[1], shape[1], shape[2])).contiguous(memory_format=layout)
        pad_into(example, batch)
        try:
            return StaticCall(self.fn, example, capture=capture, warmup=self.warmup)
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
    def __call__(self, batch: Tensor) -> tuple[Any, int]:
        shape = self.bucket(batch)
        if shape is None or (shape not in self.calls and len(self.calls) >= self.max_graphs):
            self.eager_calls += 1
            return self.fn(batch), int(batch.shape[0])
        if shape not in self.calls:
            self.calls[shape] = self._make(shape, batch)
        call = self.calls[shape]
        if call is None:
            self.eager_calls += 1
            return self.fn(batch), int(batch.shape[0])
        pad_into(call.input, batch)
        return call(), shape[0]

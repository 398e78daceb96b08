"""Dynamic batching: concurrent requests share network calls, on one thread that owns the model.

:class:`DynamicBatcher` keeps a FIFO of submitted images. Its worker takes the oldest and gathers waiting
images **of the same padded input size** (:func:`~fcpose.inference.predictor.batch_key`, the one batching
rule) until ``max_batch`` or ``max_wait_ms`` after the oldest was submitted, runs one
``predictor.predict(images)`` and answers each caller through a :class:`concurrent.futures.Future`. Images
of other sizes stay queued, in order; an image that already waited while the model was busy does not wait
again. Only this thread calls the model, so nothing in the predictor (torch's thread count, onnxruntime or
OpenVINO sessions) runs concurrently; the event loop only awaits futures (:func:`asyncio.wrap_future`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ..inference.predictor import batch_key
from ..structures import PoseDetections, PosePredictor

__all__ = ["BatchResult", "DynamicBatcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """More images are waiting for the model than the batcher accepts (the server answers 503)."""


@dataclass
class BatchResult:
    """One image's detections and how it was run."""

    detections: PoseDetections  # in the submitted image's pixels
    batch_size: int  # images in the network call this image ran in
    queue_seconds: float  # from submit to the start of that call
    inference_seconds: float  # the call (preprocessing, network, post-processing) for the whole batch


@dataclass
class _Job:
    image: np.ndarray
    key: tuple[int, int]
    future: Future
    submitted: float


class DynamicBatcher:
    """Run ``predictor`` (any :class:`~fcpose.structures.PosePredictor`) on one worker thread, batching
    concurrent submissions.

    ``max_batch``: most images per network call (the predictor must accept that many in one call: a
    :class:`~fcpose.Predictor` built with ``batch_size >= max_batch``; the ONNX and OpenVINO predictors run
    their one-image graph once per image, so they gain nothing from batching). ``max_wait_ms``: how long the
    oldest image may wait for others. ``max_queue``: images allowed to wait; :meth:`submit` raises
    :class:`QueueFullError` beyond it. ``initializer`` runs first on the worker thread (e.g. to set the
    thread count once); ``on_batch(size)`` is called after every network call."""

    def __init__(self, predictor: PosePredictor, *, max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 64, initializer: Callable[[], None] | None = None,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.predictor = predictor
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._initializer = initializer
        self._on_batch = on_batch
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="fcpose-model", daemon=True)
        self._thread.start()

    def key(self, height: int, width: int) -> tuple[int, int]:
        """What images of ``height x width`` pixels are batched by: :func:`~fcpose.inference.predictor.batch_key`,
        the padded network-input size (the one rule ``Predictor.predict`` groups by too)."""
        return batch_key(self.predictor, height, width)

    @property
    def queued(self) -> int:
        """Images waiting for the model (not counting the call in progress)."""
        return len(self._pending)

    def submit(self, image: np.ndarray) -> Future:
        """Queue an RGB ``uint8 [H, W, 3]`` array; the future's result is a :class:`BatchResult` (or the
        predictor's exception). Raises :class:`QueueFullError` when ``max_queue`` images already wait and
        ``RuntimeError`` after :meth:`close`."""
        job = _Job(image, self.key(image.shape[0], image.shape[1]), Future(), time.monotonic())
        with self._cond:
            if self._closing:
                raise RuntimeError("the batcher is closed")
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(f"{len(self._pending)} images are already waiting for the model")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    def _take(self) -> list[_Job] | None:
        """The next group to run (oldest image first, same padded size, at most ``max_batch``); None once
        closed and drained."""
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._pending[0]
            deadline = first.submitted + self.max_wait
            while True:
                same = [job for job in self._pending if job.key == first.key]
                remaining = deadline - time.monotonic()
                if len(same) >= self.max_batch or remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            group = same[:self.max_batch]
            taken = {id(job) for job in group}
            self._pending = deque(job for job in self._pending if id(job) not in taken)
        return [job for job in group if job.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (group := self._take()) is not None:
            if not group:
                continue
            start = time.monotonic()
            try:
                detections = self.predictor.predict([job.image for job in group])
            except BaseException as exc:  # handed to every caller of this batch; the worker keeps serving
                for job in group:
                    job.future.set_exception(exc)
                continue
            elapsed = time.monotonic() - start
            if self._on_batch is not None:
                self._on_batch(len(group))
            for job, dets in zip(group, detections):
                job.future.set_result(BatchResult(dets, len(group), start - job.submitted, elapsed))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking images, run the ones already queued (without waiting for more), and stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

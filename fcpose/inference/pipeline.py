"""Overlapping decoding, inference and rendering/encoding of a video with threads and bounded queues.

* :class:`Prefetcher` decodes frames in a background thread into a queue of ``maxsize`` frames. By default nothing is
  dropped (the decoder waits when the queue is full); with ``drop=True`` (``--realtime`` on a live source) the oldest
  queued frame is dropped instead, so inference always works on a recent frame and the count of dropped frames is kept.
* :class:`OrderedSink` runs a function (render + encode + write) on each item in a background thread,
  in submission order; :meth:`~OrderedSink.put` blocks when ``maxsize`` items wait.

Inference stays in the calling thread: PyTorch releases the GIL inside its kernels, so the decoder and
the encoder (OpenCV, also GIL-free inside) run alongside the network. An exception in a worker thread
is raised again in the caller (at the next frame or at :meth:`close`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Iterate ``source`` in a background thread; yields ``(index, item)`` with the source's 0-based index
    (indices skip the dropped frames)."""

    def __init__(self, source: Iterable[Any], maxsize: int = 8, drop: bool = False):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(maxsize)))
        self._drop = bool(drop)
        self._stop = threading.Event()
        self.dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="fcpose-decode", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            if self._drop and item is not _END and not isinstance(item, _Failure):
                with self._lock:
                    if self._queue.full():
                        try:
                            self._queue.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            pass
                    try:
                        self._queue.put_nowait(item)
                        return True
                    except queue.Full:
                        continue
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for i, item in enumerate(self._source):
                if not self._put((i, item)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put(_Failure(exc))
            return
        self._put(_END)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the decoder (it finishes the frame it is reading)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrderedSink:
    """Apply ``fn`` to every submitted item in one background thread, in order."""

    def __init__(self, fn: Callable[[Any], None], maxsize: int = 8):
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(maxsize)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fcpose-encode", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain after a failure
            try:
                self._fn(item)
            except BaseException as exc:
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def put(self, item: Any) -> None:
        self._raise()
        self._queue.put(item)

    def close(self) -> None:
        """Finish every submitted item, stop the thread, and raise a worker error if there was one."""
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
        self._raise()

    def __enter__(self) -> OrderedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

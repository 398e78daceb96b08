"""What ``GET /metrics`` reports, in the Prometheus text exposition format (version 0.0.4).

* ``fcpose_requests_total{route, code}`` — counter of answered requests by route and HTTP status;
* ``fcpose_request_seconds`` — summary of the server-side latency of successful ``POST /v1/predict``
  requests (from the first byte of the request handled to the response built): quantiles 0.5, 0.9, 0.99
  over the last ``window`` requests, plus ``_sum`` and ``_count`` over all of them;
* ``fcpose_batch_size`` — histogram of the images in each network call (buckets 1, 2, 4, ... up to ``max_batch``);
* ``fcpose_images_total`` — counter of images run through the model;
* ``fcpose_queue_images`` / ``fcpose_inflight_requests`` — gauges: images waiting for the model, requests being handled.

Updated from the event loop and from the model's worker thread, so every update takes one lock."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

__all__ = ["Metrics"]

QUANTILES = (0.5, 0.9, 0.99)


def _buckets(max_batch: int) -> list[int]:
    edges, b = [], 1
    while b < max_batch:
        edges.append(b)
        b *= 2
    return edges + [max_batch]


def _number(value: float) -> str:
    return "NaN" if value != value else f"{value:.6g}"


class Metrics:
    """Thread-safe counters, a latency window and a batch-size histogram; :meth:`render` writes them out."""

    def __init__(self, max_batch: int, window: int = 2048):
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._latency: deque[float] = deque(maxlen=int(window))
        self._latency_sum = 0.0
        self._latency_count = 0
        self._edges = _buckets(max(1, int(max_batch)))
        self._batch_counts = [0] * len(self._edges)
        self._batch_sum = 0
        self._batch_count = 0
        self._inflight = 0
        self.queue_images = lambda: 0  # set by the app to the batcher's queue length

    def request(self, route: str, code: int, seconds: float | None = None) -> None:
        """One answered request; ``seconds``: its latency (successful predictions only)."""
        with self._lock:
            self._requests[(route, int(code))] += 1
            if seconds is not None:
                self._latency.append(float(seconds))
                self._latency_sum += float(seconds)
                self._latency_count += 1

    def batch(self, size: int) -> None:
        """One network call on ``size`` images."""
        with self._lock:
            for i, edge in enumerate(self._edges):
                if size <= edge:
                    self._batch_counts[i] += 1
                    break
            else:
                self._batch_counts[-1] += 1
            self._batch_sum += int(size)
            self._batch_count += 1

    def inflight(self, delta: int) -> None:
        with self._lock:
            self._inflight += delta

    def latency_quantiles(self) -> dict[float, float]:
        """Quantiles of the recent latencies in seconds (NaN when there are none)."""
        with self._lock:
            values = np.asarray(self._latency, dtype=np.float64)
        if not values.size:
            return {q: float("nan") for q in QUANTILES}
        return {q: float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}

    def batch_sizes(self) -> dict[str, float]:
        """``{"calls": network calls, "images": images, "mean": images per call}``."""
        with self._lock:
            calls, images = self._batch_count, self._batch_sum
        return {"calls": calls, "images": images, "mean": images / calls if calls else 0.0}

    def render(self) -> str:
        quantiles = self.latency_quantiles()
        with self._lock:
            requests = sorted(self._requests.items())
            lat_sum, lat_count = self._latency_sum, self._latency_count
            edges, counts = list(self._edges), list(self._batch_counts)
            batch_sum, batch_count, inflight = self._batch_sum, self._batch_count, self._inflight
        lines = ["# HELP fcpose_requests_total Requests answered, by route and HTTP status code.",
                 "# TYPE fcpose_requests_total counter"]
        lines += [f'fcpose_requests_total{{route="{route}",code="{code}"}} {n}' for (route, code), n in requests]
        lines += ["# HELP fcpose_request_seconds Server-side latency of successful POST /v1/predict requests "
                  "(quantiles over the most recent requests).",
                  "# TYPE fcpose_request_seconds summary"]
        lines += [f'fcpose_request_seconds{{quantile="{q:g}"}} {_number(v)}' for q, v in quantiles.items()]
        lines += [f"fcpose_request_seconds_sum {lat_sum:.6g}", f"fcpose_request_seconds_count {lat_count}",
                  "# HELP fcpose_batch_size Images per network call.", "# TYPE fcpose_batch_size histogram"]
        cumulative = 0
        for edge, n in zip(edges, counts):
            cumulative += n
            lines.append(f'fcpose_batch_size_bucket{{le="{edge}"}} {cumulative}')
        lines += [f'fcpose_batch_size_bucket{{le="+Inf"}} {batch_count}', f"fcpose_batch_size_sum {batch_sum}",
                  f"fcpose_batch_size_count {batch_count}",
                  "# HELP fcpose_images_total Images run through the model.", "# TYPE fcpose_images_total counter",
                  f"fcpose_images_total {batch_sum}",
                  "# HELP fcpose_queue_images Images waiting for the model.", "# TYPE fcpose_queue_images gauge",
                  f"fcpose_queue_images {int(self.queue_images())}",
                  "# HELP fcpose_inflight_requests Requests being handled.", "# TYPE fcpose_inflight_requests gauge",
                  f"fcpose_inflight_requests {inflight}"]
        return "\n".join(lines) + "\n"

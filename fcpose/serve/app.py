"""The HTTP application of ``fcpose serve`` (Starlette, run by uvicorn); the API in full: docs/serving.md.

Routes (every error a 4xx or 5xx with a one-line JSON body ``{"error": "..."}``): ``POST /v1/predict`` (one
image as the raw body or a ``multipart/form-data`` file field, checked by decoding it — JPEG, PNG or WebP —
within ``max_upload_bytes`` and ``max_pixels``; query ``score_threshold``, ``draw_threshold``, ``draw_nms``,
the people drawn chosen as ``fcpose predict`` does, :class:`~fcpose.inference.predict_command.PeopleRenderer`;
answered by :func:`people_json` in continuous pixels of the upright uploaded image), ``GET /v1/model``,
``/healthz``, ``/metrics`` (:mod:`fcpose.serve.metrics`), and the browser page ``/`` (``/app.js``,
``/style.css``) from an in-package allow-list read into memory at start: no request path reaches the file
system (a ``..`` segment is a 400, any other unknown path a 404).

The model runs on the :class:`~fcpose.serve.batcher.DynamicBatcher`'s single worker thread; decoding and
answer building run in the thread pool, so the event loop only parses HTTP and waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from importlib.resources import files
from urllib.parse import unquote

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..data.images import ImageFormatError, ImageTooLargeError, decode_image
from ..errors import FCPoseError, InputError, one_line
from ..inference.predict_command import PeopleRenderer
from ..structures import PEOPLE_OKS_THRESHOLD, PEOPLE_SCORE_THRESHOLD, PoseDetections, PosePredictor
from .batcher import BatchResult, DynamicBatcher, QueueFullError
from .metrics import Metrics

__all__ = ["ACCEPTED_FORMATS", "ServeSettings", "create_app", "people_json"]

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP"}  # PIL format names, decided from the content
RAW_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/webp", "application/octet-stream", ""}
PREDICT_OPTIONS = ("score_threshold", "draw_threshold", "draw_nms")
DRAIN_BYTES = 1 << 30  # the most of an unread body dropped before an early answer (about 1 s over loopback)

# the page and its two files: URL path -> (file in fcpose/serve/static, media type). Nothing else is served.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# the page loads only its own files; the webcam frames and the uploaded photo are blob: URLs
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass
class ServeSettings:
    """Limits and defaults of one server (``fcpose serve`` options).

    Args:
        max_batch: The most images per network call.
        max_wait_ms: How long the oldest waiting image waits for others to batch with.
        max_queue: The most images waiting for the model; beyond it requests get 503.
        max_upload_bytes: The largest request body.
        max_pixels: The largest width x height of an upload, checked before decoding.
        drain_seconds: How long an early error answer waits for the rest of the body (read and dropped).
        draw_threshold: The default of the ``draw_threshold`` request option.
        draw_nms: The default of the ``draw_nms`` request option.
        keypoint_threshold: The score above which the page draws a keypoint; ``None``: the ``predict`` default.
    """

    max_batch: int = 8  # images per network call
    max_wait_ms: float = 5.0  # how long the oldest waiting image waits for others
    max_queue: int = 64  # images waiting for the model before requests get 503
    max_upload_bytes: int = 20 * 1024 * 1024  # request body (20 MiB)
    max_pixels: int = 40_000_000  # width x height of an upload, checked before decoding
    # An error answered before the body was read (413, 415, ...) waits until the client has sent the rest, read
    # and dropped, so that clients which send the whole body before reading (urllib, requests) see the answer
    # instead of a connection reset; for at most this long (and DRAIN_BYTES), then it answers and closes.
    drain_seconds: float = 10.0
    draw_threshold: float = PEOPLE_SCORE_THRESHOLD  # the request option's default, as predict --draw-threshold
    draw_nms: float = PEOPLE_OKS_THRESHOLD  # as `fcpose predict --draw-nms`
    keypoint_threshold: float | None = None  # keypoints drawn by the page (None: the predict default)


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with this HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.headers = headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _unit_option(params, name: str, default: float) -> float:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ApiError(400, f"query option {name} must be a number in [0, 1], got {text!r}")
    return value


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond it, from Content-Length before reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"upload of {int(declared):,} bytes is larger than the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"upload is larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of a predict request: the raw body, or the file of a multipart form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data" and media not in RAW_TYPES:
        raise ApiError(415, f"unsupported Content-Type {media!r}: send the image as the body (image/jpeg, image/png, "
                            f"image/webp or application/octet-stream) or as a multipart/form-data file field "
                            f"(curl -F image=@photo.jpg)")
    body = await _read_body(request, limit)
    if media != "multipart/form-data":
        return body

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:  # Starlette's parser (python-multipart) on the bytes already read and size-checked
        async with Request(request.scope, replay).form(max_files=1, max_fields=len(PREDICT_OPTIONS) + 4) as form:
            field = form.get("image")
            if not isinstance(field, UploadFile):
                field = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if field is None:
                raise ApiError(400, "the multipart form has no file field (send the image as the field 'image')")
            return await field.read()
    except HTTPException as exc:  # malformed multipart, too many parts
        raise ApiError(400, f"bad multipart form: {exc.detail}") from None
    except ValueError as exc:  # python-multipart's own errors on a broken boundary
        raise ApiError(400, f"bad multipart form: {one_line(exc)}") from None


def people_json(dets: PoseDetections, renderer: PeopleRenderer, score_threshold: float) -> dict:
    """The people of one image with score >= ``score_threshold``, best first, as JSON-ready lists; ``drawn``
    marks those the renderer selects (draw threshold, duplicates removed), ``num_drawn`` counts them.
    Coordinates: continuous pixels of the image (``dets.image_size``), rounded to 0.01 px.

    Args:
        dets: The image's detections.
        renderer: What ``fcpose predict`` would draw (its draw threshold and NMS).
        score_threshold: The lowest score listed.

    Returns:
        ``{"people": [{"bbox", "score", "keypoints", "drawn"}, ...], "num_drawn": n}``.
    """
    order = np.argsort(-dets.scores.numpy(), kind="stable")
    order = order[dets.scores.numpy()[order] >= score_threshold]
    drawn = set(renderer.select_indices(dets).tolist())
    boxes, scores, kpts = dets.boxes.numpy(), dets.scores.numpy(), dets.keypoints.numpy()
    people = []
    for i in order.tolist():
        people.append({
            "bbox": [round(float(v), 2) for v in boxes[i]],
            "score": round(float(scores[i]), 5),
            "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 5)] for x, y, s in kpts[i]],
            "drawn": i in drawn,
        })
    return {"people": people, "num_drawn": sum(p["drawn"] for p in people)}


async def _drop_body(receive, max_bytes: int, seconds: float) -> None:
    """Read and drop what is left of a request body: until it ends, ``max_bytes`` more have come, or ``seconds``
    have passed (a slow or endless body then gets its answer and the connection closes)."""
    async def drain() -> None:
        dropped = 0
        while dropped <= max_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), seconds)


class _Guard:
    """ASGI middleware: refuses paths with a ``..`` segment (400), counts every answer by route and status,
    times the successful predictions (:class:`~fcpose.serve.metrics.Metrics`), and lets a client see an answer
    given before its body was read (:func:`_drop_body`; not when it waits for ``100 Continue``, as curl does
    with large uploads: it then never sends the body)."""

    def __init__(self, app, metrics: Metrics, routes: set[str], settings: ServeSettings):
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.settings = settings

    @staticmethod
    def _dot_segments(path: str) -> bool:
        return ".." in path.replace("\\", "/").split("/")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}
        headers = scope.get("headers", [])
        has_body = any(k == b"transfer-encoding" or (k == b"content-length" and v != b"0") for k, v in headers)
        body = {"read": False, "ended": not has_body}  # a request without a body has nothing to drop
        waits_for_continue = (b"expect", b"100-continue") in headers

        async def receive_body():
            message = await receive()
            body["read"] = True
            body["ended"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if not body["ended"] and not (waits_for_continue and not body["read"]):
                    await _drop_body(receive_body, DRAIN_BYTES, self.settings.drain_seconds)
            await send(message)

        path = scope.get("path", "")
        raw = unquote((scope.get("raw_path") or b"").decode("latin-1"))
        route = path if path in self.routes else "other"
        self.metrics.inflight(+1)
        try:
            if self._dot_segments(path) or self._dot_segments(raw):
                await _error(400, "path with a '..' segment refused")(scope, receive_body, send_status)
            else:
                await self.app(scope, receive_body, send_status)
        finally:
            self.metrics.inflight(-1)
            ok = route == "/v1/predict" and status["code"] == 200
            self.metrics.request(route, status["code"], time.perf_counter() - start if ok else None)


def _static_routes() -> list[Route]:
    routes = []
    for url, (name, media) in STATIC_FILES.items():
        content = (files("fcpose.serve") / "static" / name).read_bytes()

        async def page(request: Request, content=content, media=media) -> Response:
            return Response(content, media_type=media, headers=PAGE_HEADERS)

        routes.append(Route(url, page, methods=["GET"]))
    return routes


def _model_info(predictor: PosePredictor, settings: ServeSettings, info: dict | None) -> dict:
    """The answer of ``GET /v1/model``: the model, its input sizes and thresholds, ``info`` (backend, device,
    weights), and the server's batching, limits and request defaults."""
    cfg = predictor.cfg
    keypoint_threshold = PeopleRenderer(predictor, 0.0, settings.keypoint_threshold).keypoint_threshold
    return {
        "preset": cfg.name or None,
        "keypoints": {"names": list(cfg.keypoints.names), "skeleton": [list(e) for e in cfg.keypoints.skeleton]},
        "input": {"min_size": predictor.min_size, "max_size": predictor.max_size,
                  "size_divisibility": int(getattr(predictor, "size_divisibility", 1))},
        "trained_on": predictor.trained_on,
        "score_threshold": float(predictor.params.score_threshold),
        **(info or {}),
        "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                     "max_queue": settings.max_queue},
        "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels},
        "defaults": {"draw_threshold": settings.draw_threshold, "draw_nms": settings.draw_nms,
                     "keypoint_threshold": keypoint_threshold},
    }


async def _decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """The uploaded image, decoded in the thread pool; an empty, too large or undecodable upload is an
    :class:`ApiError` (400, 413, 415)."""
    if not data:
        raise ApiError(400, "empty upload: the request has no image")
    try:
        return await run_in_threadpool(decode_image, data, "upload", formats=ACCEPTED_FORMATS, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise ApiError(413, str(exc)) from None
    except ImageFormatError as exc:
        raise ApiError(415, str(exc)) from None
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


def _predict_endpoint(predictor: PosePredictor, settings: ServeSettings, state: dict):
    """The handler of ``POST /v1/predict``; ``state["batcher"]`` is the running :class:`DynamicBatcher`."""
    default_score = float(predictor.params.score_threshold)
    keypoints = {"names": list(predictor.cfg.keypoints.names),
                 "skeleton": [list(e) for e in predictor.cfg.keypoints.skeleton]}

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        params = request.query_params
        unknown = sorted(set(params) - set(PREDICT_OPTIONS))
        if unknown:
            raise ApiError(400, f"unknown query option {unknown[0]!r} (valid: {', '.join(PREDICT_OPTIONS)})")
        score_threshold = max(_unit_option(params, "score_threshold", default_score), default_score)
        draw_threshold = _unit_option(params, "draw_threshold", settings.draw_threshold)
        draw_nms = _unit_option(params, "draw_nms", settings.draw_nms)
        data = await _read_upload(request, settings.max_upload_bytes)
        received = time.perf_counter()
        image = await _decode_upload(data, settings.max_pixels)
        decoded = time.perf_counter()
        try:
            future = state["batcher"].submit(image)
        except QueueFullError as exc:
            raise ApiError(503, f"server busy: {exc}; retry shortly", headers={"Retry-After": "1"}) from None
        try:
            result: BatchResult = await asyncio.wrap_future(future)
        except FCPoseError as exc:  # e.g. an image too large for a fixed-size exported model
            raise ApiError(422, str(exc)) from None
        renderer = PeopleRenderer(predictor, draw_threshold, settings.keypoint_threshold, draw_nms)
        body = await run_in_threadpool(people_json, result.detections, renderer, score_threshold)
        height, width = image.shape[:2]
        body = {
            "image": {"width": int(width), "height": int(height)},
            **body,
            "keypoint_names": keypoints["names"],
            "skeleton": keypoints["skeleton"],
            "thresholds": {"score": score_threshold, "draw": draw_threshold, "draw_nms": draw_nms,
                           "keypoint": renderer.keypoint_threshold},
            "batch_size": result.batch_size,
            "timings_ms": {k: round(v * 1000.0, 2) for k, v in (
                ("receive", received - start), ("decode", decoded - received), ("queue", result.queue_seconds),
                ("inference", result.inference_seconds), ("total", time.perf_counter() - start))},
        }
        return JSONResponse(body)

    return predict


async def _api_error(request: Request, exc: ApiError) -> Response:
    return _error(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"not found: {request.url.path}", 405: f"method {request.method} not allowed here"}
    return _error(exc.status_code, message.get(exc.status_code, str(exc.detail)), exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def create_app(predictor: PosePredictor, *, settings: ServeSettings | None = None, info: dict | None = None,
               initializer=None) -> Starlette:
    """The ASGI app serving ``predictor``. The :class:`DynamicBatcher` (and its model thread, which first
    runs ``initializer``) starts with the app's lifespan and, at shutdown, finishes what is queued.
    ``info``: extra fields of ``GET /v1/model`` (backend, device, weights).

    Args:
        predictor: Any predictor (``Predictor``, ``OnnxPredictor``, ``OpenVinoPredictor``; see ``load_predictor``).
        settings: Limits and defaults; default ``ServeSettings()``.
        info: Extra fields of ``GET /v1/model``.
        initializer: Called first on the model thread (e.g. to set its torch threads), or ``None``.

    Returns:
        The app, for uvicorn or any ASGI server.
    """
    settings = settings or ServeSettings()
    metrics = Metrics(settings.max_batch)
    state: dict = {}
    model_info = _model_info(predictor, settings, info)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = DynamicBatcher(predictor, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                                 max_queue=settings.max_queue, initializer=initializer, on_batch=metrics.batch)
        state["batcher"] = batcher
        metrics.queue_images = lambda: batcher.queued
        app.state.batcher = batcher
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    async def model(request: Request) -> Response:
        return JSONResponse(model_info)

    async def healthz(request: Request) -> Response:
        batcher = state.get("batcher")
        return JSONResponse({"status": "ok" if batcher is not None else "starting",
                             "queued": batcher.queued if batcher is not None else 0})

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route("/v1/predict", _predict_endpoint(predictor, settings, state), methods=["POST"]),
              Route("/v1/model", model, methods=["GET"]), Route("/healthz", healthz, methods=["GET"]),
              Route("/metrics", prometheus, methods=["GET"]), *_static_routes()]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.metrics = metrics
    app.state.settings = asdict(settings)
    app.add_middleware(_Guard, metrics=metrics, routes={r.path for r in routes}, settings=settings)
    return app

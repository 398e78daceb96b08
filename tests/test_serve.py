"""``fcpose serve``: predictions over HTTP equal the Predictor's, dynamic batching, hostile requests, metrics,
SIGTERM with requests in flight, and the command's one-line errors.

Every server here listens on 127.0.0.1 on a free port, gets a bounded number of requests and is stopped by
the test. The model is the bundled demo model (trained on synthetic scenes) on the bundled synthetic scene,
at a small test size so each network call takes tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="fcpose serve needs the [serve] extra (starlette, uvicorn, python-multipart)")
pytest.importorskip("uvicorn", reason="fcpose serve needs the [serve] extra")
pytest.importorskip("multipart", reason="fcpose serve needs the [serve] extra")

from helpers import serve_in_thread  # noqa: E402
from PIL import Image  # noqa: E402

import fcpose  # noqa: E402
from fcpose.assets import DEMO_MODEL, asset  # noqa: E402
from fcpose.assets import SCENE as SCENE_FILE  # noqa: E402
from fcpose.cli import main  # noqa: E402
from fcpose.data.images import read_image  # noqa: E402
from fcpose.inference.predict_command import PeopleRenderer  # noqa: E402
from fcpose.serve.app import ServeSettings, create_app  # noqa: E402
from fcpose.serve.batcher import DynamicBatcher, QueueFullError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = asset(DEMO_MODEL)
SCENE = asset(SCENE_FILE)
SIZE = dict(min_size=192, max_size=256)  # small and fast; the demo model still finds the scene's six people
LIMITS = dict(max_upload_bytes=1 << 20, max_pixels=4_000_000)


def _predictor(**kwargs):
    return fcpose.Predictor.from_checkpoint(DEMO, batch_size=8, **SIZE, **kwargs)


def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: dict | None = None, timeout: float = 60.0) -> tuple[int, dict, bytes]:
    """One HTTP request with the standard library (the path is sent as given: no normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post_image(url: str, data: bytes, content_type: str = "image/jpeg", query: str = "") -> tuple[int, dict]:
    status, _, body = request(url, "POST", "/v1/predict" + query, data, {"Content-Type": content_type})
    return status, json.loads(body)


def multipart(field: str, filename: str, data: bytes, ctype: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = "fcpose-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def encode(image: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **options)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (1-bit grey) with a token IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return read_image(SCENE)


@pytest.fixture(scope="module")
def reference(scene):
    """The Predictor's answer on the scene and on a 200x300 crop, computed before any server runs."""
    predictor = _predictor()
    crop = np.ascontiguousarray(scene[50:250, 100:400])
    return predictor, {"scene": predictor(scene), "crop": predictor(crop)}, crop


@pytest.fixture(scope="module")
def server():
    """A server with its own Predictor (the model's thread is the only one that runs it)."""
    predictor = _predictor()
    app = create_app(predictor, settings=ServeSettings(max_batch=4, max_wait_ms=50, drain_seconds=2.0, **LIMITS),
                     info={"backend": "torch", "device": "cpu", "weights": DEMO.name})
    with serve_in_thread(app) as url:
        yield url, app


def assert_same_people(answer: dict, dets, renderer: PeopleRenderer) -> None:
    """The HTTP answer lists exactly the Predictor's detections (above the default score threshold), best
    first, to the 0.01 px / 1e-5 rounding of the JSON, and marks the same people drawn."""
    order = torch.argsort(dets.scores, descending=True, stable=True)
    assert len(answer["people"]) == len(dets) > 0
    for person, i in zip(answer["people"], order.tolist()):
        assert person["score"] == pytest.approx(float(dets.scores[i]), abs=2e-5)
        np.testing.assert_allclose(person["bbox"], dets.boxes[i].numpy(), atol=0.02)
        np.testing.assert_allclose(np.asarray(person["keypoints"])[:, :2], dets.keypoints[i, :, :2].numpy(),
                                   atol=0.02)
        np.testing.assert_allclose(np.asarray(person["keypoints"])[:, 2], dets.keypoints[i, :, 2].numpy(),
                                   atol=2e-5)
    drawn = {i for i, p in zip(order.tolist(), answer["people"]) if p["drawn"]}
    assert drawn == set(renderer.select_indices(dets).tolist())
    assert answer["num_drawn"] == len(drawn) > 0


# ----------------------------------------------------------------------------------------------
def test_predictions_over_http_equal_the_predictor(server, reference, scene):
    url, _ = server
    predictor, expected, crop = reference
    renderer = PeopleRenderer(predictor, 0.3, None)
    status, answer = post_image(url, SCENE.read_bytes())
    assert status == 200, answer
    assert_same_people(answer, expected["scene"], renderer)
    assert answer["image"] == {"width": 512, "height": 384}
    assert answer["keypoint_names"] == predictor.cfg.keypoints.names and len(answer["skeleton"]) == 19
    assert answer["thresholds"]["draw"] == 0.3 and answer["batch_size"] == 1
    assert set(answer["timings_ms"]) == {"receive", "decode", "queue", "inference", "total"}

    # the same image as a multipart file field, and a PNG of the crop: content decides, not names
    body, ctype = multipart("image", "photo.png", SCENE.read_bytes())
    status, again = post_image(url, body, ctype)
    assert status == 200 and again["people"] == answer["people"]
    status, answer = post_image(url, encode(crop, "PNG"), "application/octet-stream")
    assert status == 200
    assert_same_people(answer, expected["crop"], renderer)

    # query options: a higher score threshold lists fewer people; draw_threshold 1 draws nobody
    status, high = post_image(url, SCENE.read_bytes(), query="?score_threshold=0.5&draw_threshold=1")
    assert status == 200 and high["num_drawn"] == 0
    assert 0 < len(high["people"]) < len(expected["scene"])
    assert all(p["score"] >= 0.5 for p in high["people"])


def test_concurrent_requests_share_network_calls_grouped_by_size(server, reference):
    """Six concurrent requests of two sizes: each answer is its own image's, and some network calls held
    several images (never two padded sizes in one call, never more than --max-batch)."""
    url, app = server
    predictor, expected, crop = reference
    renderer = PeopleRenderer(predictor, 0.3, None)
    uploads = [("scene", SCENE.read_bytes()), ("crop", encode(crop, "PNG"))] * 3
    before = app.state.metrics.batch_sizes()
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda u: post_image(url, u[1], "image/png" if u[0] == "crop" else "image/jpeg"),
                                uploads))
    for (name, _), (status, answer) in zip(uploads, answers):
        assert status == 200, answer
        assert_same_people(answer, expected[name], renderer)
    sizes = [answer["batch_size"] for _, answer in answers]
    after = app.state.metrics.batch_sizes()
    assert after["images"] - before["images"] == 6
    assert after["calls"] - before["calls"] < 6 and max(sizes) > 1 and max(sizes) <= 4


def test_batcher_groups_by_padded_size_and_survives_errors(scene):
    """The batcher's own contract, on a real Predictor wrapped to record each call."""
    predictor = _predictor()
    calls: list[list[tuple[int, int]]] = []

    class Recording:
        cfg, min_size, max_size, trained_on = predictor.cfg, predictor.min_size, predictor.max_size, None
        size_divisibility = predictor.size_divisibility

        def predict(self, images):
            calls.append([im.shape[:2] for im in images])
            if any(im.shape[0] == 99 for im in images):
                raise fcpose.errors.InputError("an image the model refuses")
            return predictor.predict(images)

    wide = np.ascontiguousarray(np.concatenate([scene, scene], axis=1))  # 384x1024: another padded size
    batcher = DynamicBatcher(Recording(), max_batch=3, max_wait_ms=200)
    try:
        assert batcher.key(*scene.shape[:2]) != batcher.key(*wide.shape[:2])
        futures = [batcher.submit(im) for im in (scene, wide, scene, scene, scene, wide)]
        results = [f.result(timeout=60) for f in futures]
        assert [r.detections.image_size for r in results] == [im.shape[:2] for im in
                                                              (scene, wide, scene, scene, scene, wide)]
        # oldest first; same padded size only; at most max_batch; the rest waits in order
        assert calls == [[(384, 512)] * 3, [(384, 1024)] * 2, [(384, 512)]]
        assert [r.batch_size for r in results] == [3, 2, 3, 3, 1, 2]
        bad = batcher.submit(np.zeros((99, 120, 3), np.uint8))
        with pytest.raises(fcpose.errors.InputError):
            bad.result(timeout=60)
        assert len(batcher.submit(scene).result(timeout=60).detections) > 0  # still serving
    finally:
        batcher.close(timeout=60)
    with pytest.raises(RuntimeError):
        batcher.submit(scene)


def test_batcher_queue_limit_and_close_runs_what_is_queued(scene):
    """Beyond max_queue waiting images submit raises (the server answers 503); close() runs the queued images
    at once, without waiting out max_wait_ms."""
    batcher = DynamicBatcher(_predictor(), max_batch=8, max_wait_ms=60_000, max_queue=2)
    futures = [batcher.submit(scene), batcher.submit(scene)]
    with pytest.raises(QueueFullError):
        batcher.submit(scene)
    start = time.monotonic()
    batcher.close(timeout=60)
    assert time.monotonic() - start < 30
    assert [f.result(timeout=0).batch_size for f in futures] == [2, 2]


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "GIF")
    return buf.getvalue()


BAD_REQUESTS = [
    # (what, method, path, body, content type, expected status)
    ("not an image", "POST", "/v1/predict", b"hello, this is text" * 10, "image/jpeg", 400),
    ("truncated JPEG", "POST", "/v1/predict", SCENE.read_bytes()[:4000], "image/jpeg", 400),
    ("empty body", "POST", "/v1/predict", b"", "image/jpeg", 400),
    ("too large", "POST", "/v1/predict", b"\xff" * ((1 << 20) + 1000), "image/jpeg", 413),
    ("decompression bomb (our pixel limit)", "POST", "/v1/predict", png_header_only(5000, 5000), "image/png", 413),
    ("decompression bomb (PIL's limit)", "POST", "/v1/predict", png_header_only(100_000, 100_000), "image/png", 413),
    ("GIF content", "POST", "/v1/predict", _gif(), "image/png", 415),
    ("wrong content type", "POST", "/v1/predict", SCENE.read_bytes(), "text/plain", 415),
    ("form-encoded (curl -d)", "POST", "/v1/predict", SCENE.read_bytes(), "application/x-www-form-urlencoded", 415),
    ("multipart without a file", "POST", "/v1/predict",
     b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n", "multipart/form-data; boundary=b",
     400),
    ("broken multipart", "POST", "/v1/predict", b"garbage", "multipart/form-data", 400),
    ("score threshold out of range", "POST", "/v1/predict?score_threshold=2", SCENE.read_bytes(), "image/jpeg", 400),
    ("unknown query option", "POST", "/v1/predict?treshold=0.5", SCENE.read_bytes(), "image/jpeg", 400),
    ("wrong method", "GET", "/v1/predict", None, None, 405),
    ("unknown path", "GET", "/index.php", None, None, 404),
    ("a file's name", "GET", "/app.py", None, None, 404),
    ("path with ..", "GET", "/../../etc/passwd", None, None, 400),
    ("path with encoded ..", "GET", "/static/%2e%2e/%2e%2e/etc/passwd", None, None, 400),
    ("path with backslash ..", "GET", "/..\\..\\pyproject.toml", None, None, 400),
]


@pytest.mark.parametrize("what,method,path,body,ctype,expected", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server, what, method, path, body, ctype, expected):
    url, _ = server
    status, headers, raw = request(url, method, path, body, {"Content-Type": ctype} if ctype else {})
    assert status == expected, raw
    assert headers.get("content-type") == "application/json"
    text = raw.decode()
    assert "\n" not in text
    error = json.loads(text)
    assert list(error) == ["error"] and error["error"], error
    assert request(url, "GET", "/healthz")[0] == 200


def test_page_model_health_and_metrics(server):
    url, _ = server
    status, headers, page = request(url, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'id="count"' in page
    assert "default-src 'self'" in headers["content-security-policy"]  # nothing from elsewhere
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, _ = request(url, "GET", path)
        assert status == 200 and headers["content-type"].startswith(kind)
    status, _, body = request(url, "GET", "/v1/model")
    info = json.loads(body)
    assert status == 200 and info["preset"] == "synth_r18" and info["trained_on"] == "synthetic"
    assert info["keypoints"]["names"][0] == "nose" and info["input"] == {"min_size": 192, "max_size": 256,
                                                                        "size_divisibility": 32}
    assert info["backend"] == "torch" and info["batching"]["max_batch"] == 4
    assert json.loads(request(url, "GET", "/healthz")[2])["status"] == "ok"
    assert post_image(url, SCENE.read_bytes())[0] == 200
    status, headers, body = request(url, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['fcpose_requests_total{route="/v1/predict",code="200"}'] >= 1
    assert 0 < values['fcpose_request_seconds{quantile="0.5"}'] <= values['fcpose_request_seconds{quantile="0.99"}']
    assert values["fcpose_batch_size_count"] >= 1 and values['fcpose_batch_size_bucket{le="+Inf"}'] >= 1
    assert values["fcpose_images_total"] == values["fcpose_batch_size_sum"]


# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_errors_are_one_line(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["serve", "--weights", str(DEMO), "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "port is in use" in err[0], err
    code = main(["serve", "--weights", str(tmp_path / "missing.pt"), "--port", str(_free_port())])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "checkpoint not found" in err[0], err
    code = main(["serve", "--weights", str(DEMO), "--backend", "onnxruntime", "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and ".onnx" in err[0], err


def test_missing_server_stack_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the [serve] extra were not installed
    assert main(["serve", "--weights", str(DEMO)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fcpose serve: error: fcpose serve needs uvicorn (pip install 'fcpose[serve]')"], err


def test_sigterm_finishes_the_requests_in_flight(tmp_path):
    """`fcpose serve` in a subprocess: three requests wait in the batcher (max wait 2 s), SIGTERM arrives, and
    all three are still answered with their people before the process exits 0."""
    cmd = [sys.executable, "-m", "fcpose", "serve", "--weights", str(DEMO), "--port", "0", "--size", "192",
           "--max-size", "256", "--max-batch", "8", "--max-wait-ms", "2000", "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stderr.readline()
        assert "http://127.0.0.1:" in first, first
        url = "http://" + first.split("http://")[1].split()[0]
        data = SCENE.read_bytes()
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(post_image, url, data) for _ in range(3)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # all three queued, none answered yet
                metrics = request(url, "GET", "/metrics")[2].decode()
                if "fcpose_queue_images 3" in metrics:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the three requests never queued up")
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        assert all(status == 200 and answer["num_drawn"] > 0 for status, answer in answers), answers
        assert [answer["batch_size"] for _, answer in answers] == [3, 3, 3]
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read()
        assert "stopped on SIGTERM after 3 images in 1 network calls" in rest, rest
        with pytest.raises(OSError):  # no longer listening
            request(url, "GET", "/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_in_thread_stops_cleanly():
    """Leaving serve_in_thread stops uvicorn and the model's thread."""
    def servers() -> int:
        return sum(t.name == "fcpose-serve" and t.is_alive() for t in threading.enumerate())

    app = create_app(_predictor(), settings=ServeSettings(max_batch=2, max_wait_ms=0))
    before = servers()
    with serve_in_thread(app) as url:
        assert request(url, "GET", "/healthz")[0] == 200
        assert servers() == before + 1
        batcher = app.state.batcher
    assert not batcher._thread.is_alive() and servers() == before
    with pytest.raises(OSError):
        request(url, "GET", "/healthz", timeout=5)


def test_chunked_upload_over_the_limit_is_cut_off(server):
    """Without a Content-Length the body is counted while it arrives: 413 once it passes the limit."""
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/v1/predict", body=(b"\xff" * 65536 for _ in range(40)),
                     headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413 and "larger than the limit" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert request(url, "GET", "/healthz")[0] == 200


@pytest.fixture(scope="module")
def default_server():
    """A server with the default limits (20 MiB uploads), for the sizes at which a dropped body shows."""
    app = create_app(_predictor(), info={"backend": "torch", "device": "cpu", "weights": DEMO.name})
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize("factor", [1.05, 2, 10])
def test_oversized_body_sent_whole_gets_the_413(default_server, factor):
    """A client that sends the whole body before reading (http.client, urllib, requests: no ``Expect:
    100-continue``) still reads the 413 and its one-line JSON: the server reads and drops the rest of the body
    (within ``drain_seconds``) before answering, instead of closing on unread data (a connection reset: what
    21 MB and 40 MB bodies got before)."""
    limit = ServeSettings().max_upload_bytes
    size = int(factor * limit)
    status, headers, raw = request(default_server, "POST", "/v1/predict", bytes(size), {"Content-Type": "image/jpeg"})
    assert status == 413 and headers.get("content-type") == "application/json", raw
    assert json.loads(raw)["error"] == f"upload of {size:,} bytes is larger than the limit of {limit:,} bytes"
    assert request(default_server, "GET", "/healthz")[0] == 200


def test_oversized_upload_from_urllib(default_server):
    """The measured case: 40 MB from ``urllib`` against the default 20 MiB limit gets the 413 body."""
    req = urllib.request.Request(default_server + "/v1/predict", data=bytes(40_000_000), method="POST",
                                 headers={"Content-Type": "image/jpeg"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=60)
    assert info.value.code == 413
    assert "larger than the limit of 20,971,520 bytes" in json.loads(info.value.read())["error"]


def _raw_upload(url: str, declared: int, extra_headers: str = "") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                 f"Content-Length: {declared}\r\n{extra_headers}\r\n".encode())
    return sock


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head


def test_trickling_oversized_body_is_answered_within_the_drain_bound(server, scene):
    """A body that arrives slowly (or never ends) is read for at most ``drain_seconds`` (2 s here): then the
    413 goes out and the connection closes. Meanwhile the server answers other requests (nothing is held)."""
    url, _ = server
    sock = _raw_upload(url, 2 * LIMITS["max_upload_bytes"])
    stop = threading.Event()

    def trickle():
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(b"\xff" * 1024)
                time.sleep(0.02)

    sender = threading.Thread(target=trickle, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        assert request(url, "GET", "/healthz", timeout=5)[0] == 200
        assert post_image(url, encode(scene))[0] == 200
        status, _ = _read_status(sock)
        assert status == 413 and 1.5 <= time.monotonic() - start <= 10
    finally:
        stop.set()
        sender.join(5)
        sock.close()
    assert request(url, "GET", "/healthz")[0] == 200


def test_expect_100_continue_gets_the_413_without_sending_the_body(server):
    """curl's way (``Expect: 100-continue`` on large uploads): the 413 comes at once, from Content-Length,
    and the client never has to send the body."""
    url, _ = server
    sock = _raw_upload(url, 50 * LIMITS["max_upload_bytes"], "Expect: 100-continue\r\n")
    try:
        start = time.monotonic()
        status, head = _read_status(sock)
        assert status == 413 and time.monotonic() - start < 1.0, head
    finally:
        sock.close()


@pytest.mark.slow
def test_onnxruntime_backend_serves(tmp_path, scene):
    """Any PosePredictor serves: an ONNX export (static 192x256) answers as OnnxPredictor does, and an image
    that does not fit the fixed graph size is a 422 with the predictor's message (the server keeps serving).
    Slow: the export takes ~40 s on a busy 2-core machine."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from fcpose.export.onnx import export_onnx
    from fcpose.export.onnx_predictor import OnnxPredictor
    from fcpose.weights.checkpoint import load_model

    path = export_onnx(load_model(DEMO), tmp_path / "demo.onnx", size=(192, 256), dynamic=False)
    reference = OnnxPredictor(path, **SIZE)
    expected = reference(scene)
    app = create_app(OnnxPredictor(path, batch_size=4, **SIZE), settings=ServeSettings(max_batch=4, max_wait_ms=20),
                     info={"backend": "onnxruntime", "device": "cpu", "weights": path.name})
    with serve_in_thread(app) as url:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: post_image(url, SCENE.read_bytes()), range(3)))
        for status, answer in answers:
            assert status == 200, answer
            assert_same_people(answer, expected, PeopleRenderer(reference, 0.3, None))
        status, error = post_image(url, encode(scene[:, :288].copy(), "PNG"), "image/png")  # portrait: 256x192
        assert status == 422 and "exported for 192x256" in error["error"], error
        assert json.loads(request(url, "GET", "/v1/model")[2])["backend"] == "onnxruntime"
        assert post_image(url, SCENE.read_bytes())[0] == 200

"""``fcpose serve``: load a predictor, bind the address, and run the app under uvicorn until SIGINT/SIGTERM.

The address is bound before the model loads, so a port in use (or a host that is not ours) is one line and
exit status 2 at once; so is a bad ``--weights``. On SIGINT or SIGTERM uvicorn stops accepting connections,
the requests in flight are answered (their images still queued are run without waiting for more), then the
model's thread stops and the command returns 0. A second SIGINT quits at once.

One process serves one device: for several GPUs or machines run one ``fcpose serve`` per device and put
any HTTP load balancer in front (docs/serving.md)."""

from __future__ import annotations

import errno
import signal
import socket
import sys
from pathlib import Path

from ..errors import FCPoseError
from . import require_server_stack
from .app import ServeSettings, create_app

__all__ = ["bind_socket", "run_serve"]

GRACEFUL_SECONDS = 60  # longest wait for the requests in flight at shutdown


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not yet listening) to ``host:port``; port 0 picks a free one. One-line
    :class:`FCPoseError` when the address is in use or not available."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise FCPoseError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = ("the port is in use (another server? pick another --port)" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        raise FCPoseError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_serve(weights: str, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
              backend: str = "torch", size: int | None = None, max_size: int | None = None,
              score_threshold: float | None = None, threads: int | None = None, precision: str = "fp32",
              settings: ServeSettings | None = None, log_level: str = "warning", say=None) -> int:
    """Serve ``weights`` until SIGINT/SIGTERM; returns the exit status (0 after a graceful stop)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    settings = settings or ServeSettings()
    require_server_stack()
    sock = bind_socket(host, port)
    try:
        from ..inference.backends import load_predictor

        predictor = load_predictor(backend, weights, device=device, min_size=size, max_size=max_size,
                                   score_threshold=score_threshold, batch_size=settings.max_batch, threads=threads,
                                   **({"precision": precision} if backend == "torch" else {}))
        initializer = None
        if backend == "torch" and threads:
            def initializer() -> None:  # once, on the model's thread (the only thread that runs the model)
                import torch

                torch.set_num_threads(int(threads))
        info = {"backend": backend, "device": str(device), "weights": Path(str(weights)).name,
                "precision": precision if backend == "torch" else None}
        app = create_app(predictor, settings=settings, info=info, initializer=initializer)
        import uvicorn

        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False)
        server = uvicorn.Server(config)
        stops: list[int] = []
        previous = {sig: signal.signal(sig, lambda signum, frame: stops.append(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}  # what uvicorn re-raises after its graceful stop
        sock.listen(config.backlog)  # connections wait in the backlog from now on, until uvicorn accepts them
        say(f"fcpose serve: {Path(str(weights)).name} ({backend}, {device}) on {_url(sock)} "
            f"(max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms); Ctrl-C stops")
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        sock.close()
    if not server.started:
        raise FCPoseError(f"the server on {host}:{port} did not start (see the lines above)")
    served = app.state.metrics.batch_sizes()
    why = f" on {signal.Signals(stops[0]).name}" if stops else ""
    say(f"fcpose serve: stopped{why} after {served['images']} images in {served['calls']} network calls")
    return 0


"""``fcpose serve``: an HTTP inference server (Starlette + uvicorn, the optional ``[serve]`` extra).

* :mod:`fcpose.serve.app` — the routes (``POST /v1/predict``, ``GET /v1/model``, ``/healthz``, ``/metrics``,
  the browser page at ``/``), upload limits and errors;
* :mod:`fcpose.serve.batcher` — dynamic batching on one thread that owns the model;
* :mod:`fcpose.serve.metrics` — the Prometheus counters;
* :mod:`fcpose.serve.command` — the command: bind, load, run until SIGINT/SIGTERM;
* ``static/`` — the page (plain HTML, CSS and JavaScript: no build step, nothing fetched from elsewhere).

Design and measured numbers: docs/serving.md.
"""

from ..errors import FCPoseError

__all__ = ["require_server_stack"]


def require_server_stack() -> None:
    """The optional ``[serve]`` dependencies are importable, or one line saying what to install."""
    try:
        import multipart  # noqa: F401  (python-multipart, for multipart/form-data uploads)
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise FCPoseError(f"fcpose serve needs {exc.name or 'starlette, uvicorn and python-multipart'} "
                          f"(pip install 'fcpose[serve]')") from None

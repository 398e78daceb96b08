"""``fcpose serve``: an HTTP inference server (Starlette + uvicorn, the optional ``[serve]`` extra): routes
(:mod:`.app`), dynamic batching (:mod:`.batcher`), Prometheus counters (:mod:`.metrics`), the command
(:mod:`.command`) and the browser page (``static/``, no build step). Design and numbers: docs/serving.md."""

from ..errors import FCPoseError

__all__ = ["require_server_stack"]


def require_server_stack() -> None:
    """The optional ``[serve]`` dependencies are importable, or one line saying what to install.

    Raises:
        FCPoseError: starlette, uvicorn or python-multipart is missing.
    """
    try:
        import multipart  # noqa: F401  (python-multipart, for multipart/form-data uploads)
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise FCPoseError(f"fcpose serve needs {exc.name or 'starlette, uvicorn and python-multipart'} "
                          f"(pip install 'fcpose[serve]')") from None

"""``fcpose serve``: an HTTP inference server (Starlette + uvicorn, the optional ``[serve]`` extra).

* :mod:`fcpose.serve.app` — the routes (``POST /v1/predict``, ``GET /v1/model``, ``/healthz``, ``/metrics``,
  the browser page at ``/``), upload limits and errors;
* :mod:`fcpose.serve.batcher` — dynamic batching on one thread that owns the model;
* :mod:`fcpose.serve.metrics` — the Prometheus counters;
* :mod:`fcpose.serve.command` — the command: bind, load, run until SIGINT/SIGTERM;
* ``static/`` — the page (plain HTML, CSS and JavaScript: no build step, nothing fetched from elsewhere).

Design and measured numbers: docs/serving.md.
"""

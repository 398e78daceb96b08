"""The predictor for ``--backend``: one place that ``predict``, ``eval`` and ``bench`` take it from.

* ``torch`` — :class:`~fcpose.Predictor` on a checkpoint (fcpose, official .pth or zoo name);
* ``onnxruntime`` — :class:`~fcpose.export.onnx_predictor.OnnxPredictor` on an ``fcpose export`` .onnx;
* ``openvino`` — :class:`~fcpose.export.openvino_predictor.OpenVinoPredictor` on an ``fcpose export
  --format openvino`` .xml (fp32 or int8)."""

from __future__ import annotations

from ..errors import InputError

__all__ = ["BACKENDS", "load_predictor"]

BACKENDS = ("torch", "onnxruntime", "openvino")
_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


def load_predictor(backend: str, weights: str, *, device: str = "cpu", min_size: int | None = None,
                   max_size: int | None = None, score_threshold: float | None = None, batch_size: int = 1,
                   threads: int | None = None, **torch_options):
    """``torch_options`` (``optimize``, ``precision``, ``compile``, ``preprocess``) go to the torch backend only.

    Args:
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (``BACKENDS``).
        weights: A checkpoint or zoo name (torch), an ``.onnx`` file (onnxruntime) or an ``.xml`` file (openvino).
        device: Where the model runs.
        min_size: The short side images are resized to; default: the config's test size.
        max_size: The longest the long side may get; default: the config's test size.
        score_threshold: The lowest detection score returned; default: the config's.
        batch_size: The most images of one padded size run together (torch).
        threads: The runtime's threads (onnxruntime, openvino).
        **torch_options: ``optimize``, ``precision``, ``compile``, ``preprocess`` (torch).

    Returns:
        (Predictor | OnnxPredictor | OpenVinoPredictor): The predictor: ``predictor(image)``,
            ``predictor.predict(images)``.

    Raises:
        InputError: An unknown backend, or weights that are not the backend's file type.
        CheckpointError: The weights are missing or unreadable.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    common = dict(device=device, min_size=min_size, max_size=max_size, score_threshold=score_threshold,
                  batch_size=batch_size)
    if backend == "torch":
        from .predictor import Predictor

        return Predictor.from_checkpoint(weights, **common, **torch_options)
    if not str(weights).lower().endswith(_SUFFIX[backend]):
        raise InputError(f"--backend {backend} runs an `fcpose export` {_SUFFIX[backend]} file, got --weights "
                         f"{weights}")
    if backend == "onnxruntime":
        from ..export.onnx_predictor import OnnxPredictor

        return OnnxPredictor(weights, threads=threads, **common)
    from ..export.openvino_predictor import OpenVinoPredictor

    return OpenVinoPredictor(weights, threads=threads, **common)

"""Batch inference on Ray Data: :class:`RayPredictor` goes straight into ``Dataset.map_batches``.

    import ray
    from fcpose.inference.ray_data import RayPredictor, read_image_files, write_coco_results

    ds = read_image_files(["photos/"])                       # or ray.data.read_parquet / read_images / ...
    rows = ds.map_batches(RayPredictor, fn_constructor_kwargs={"weights": "fcpose_r50_official"},
                          batch_size=16, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2))
    write_coco_results(rows, "predictions.json")               # rows streamed (iter_rows), not all taken at once

Each Ray worker builds one :class:`RayPredictor` (the model loads once per worker, by
:func:`~fcpose.inference.backends.load_predictor`: a zoo name, checkpoint, ``.onnx`` or OpenVINO ``.xml``) and calls it
on batches in Ray's numpy format (a dict of column arrays). The images run through
:meth:`fcpose.Predictor.predict`, so the people are those of ``fcpose predict``. Ray itself is only needed to build
the dataset (:func:`require_ray`); the class and :func:`write_coco_results` run without it. docs/ray.md: running it
on a cluster with GPUs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..data.images import as_rgb_array, decode_image, read_image
from ..errors import FCPoseError, InputError, one_line
from ..fileio import atomic_write_text
from ..structures import PoseDetections
from .backends import load_predictor
from .sources import collect_sources, expand_globs, image_id

__all__ = ["IMAGE_COLUMNS", "RayPredictor", "detections_of", "image_column", "read_image_files", "require_ray",
           "write_coco_results"]

IMAGE_COLUMNS = ("image", "bytes", "path")  # the image column, when not named: the first of these a batch has


def require_ray():
    """The ``ray`` module with Ray Data, or one clear :class:`FCPoseError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the ``ray[data]`` extra; plain ``ray`` lacks pyarrow)
    except ImportError as exc:
        raise FCPoseError(f"Ray Data needs the ray package with its data extra (pip install 'fcpose[ray]'): "
                          f"{one_line(exc)}") from None
    return ray


def read_image_files(inputs: Iterable[str | Path]):
    """A Ray dataset of the image files of ``inputs`` (files, folders and glob patterns, expanded as ``fcpose
    predict`` expands them): columns ``bytes`` (the encoded file) and ``path``, one row per image. The files are
    read by Ray's workers, so on a cluster they must be on shared storage (or use ``ray.data.read_binary_files`` /
    ``read_parquet`` on object storage directly).

    Raises:
        InputError: A pattern matches nothing, a path is missing, a file is not an image, or nothing is left.
    """
    ray = require_ray()
    expanded, problems = expand_globs(inputs)
    sources, more = collect_sources(expanded)
    problems += more + [f"{s.path}: a video (Ray Data runs images; use fcpose predict for videos)"
                        for s in sources if s.kind != "image"]
    if problems or not sources:
        raise InputError("; ".join(problems) or "no input images were given")
    return ray.data.read_binary_files([str(s.path) for s in sources], include_paths=True)


def image_column(names: Iterable[str], column: str | None = None) -> str:
    """The image column of a batch or dataset with columns ``names``: ``column`` if given, else the first of
    :data:`IMAGE_COLUMNS` present.

    Raises:
        InputError: That column is missing.
    """
    names = list(names)
    if column is not None:
        if column not in names:
            raise InputError(f"the rows have no column {column!r} (columns: {', '.join(names)})")
        return column
    for name in IMAGE_COLUMNS:
        if name in names:
            return name
    raise InputError(f"the rows have none of the image columns {', '.join(IMAGE_COLUMNS)} (columns: "
                     f"{', '.join(names)}); name it with column=")


def _as_image(item, name: str) -> np.ndarray:
    """One cell of the image column -> an RGB ``uint8`` array: encoded bytes, a path, or an array."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item), name)
    if isinstance(item, (str, Path)):
        return read_image(item)
    array = as_rgb_array(item)
    return array if array.flags.writeable else array.copy()  # Arrow-backed arrays are read-only


def _objects(items: list) -> np.ndarray:
    """A 1-D object array of ``items`` (numpy would stack equal-shaped arrays into one)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


class RayPredictor:
    """A callable class for ``Dataset.map_batches(RayPredictor, fn_constructor_kwargs={...}, batch_format="numpy")``.

    The model loads once, in ``__init__`` (once per Ray worker). Each call takes a batch (a dict of column arrays)
    whose image column (``column``, default the first of :data:`IMAGE_COLUMNS` present) holds encoded image bytes
    (``read_binary_files``, a Parquet binary column), paths, or RGB ``uint8 [H, W, 3]`` arrays (``read_images``), and
    returns one row per input row: every input column but the image bytes or arrays, unchanged, then

    * ``image_id`` (int): the input's ``image_id`` column if it has one, else the file name's number as ``fcpose
      predict`` takes it (``000123.jpg`` -> 123), else -1; ``file_name`` (str): the path's name, else "";
    * ``height``, ``width``: the image's size (0 when it failed);
    * ``boxes`` ``[N, 4]`` xyxy, ``scores`` ``[N]``, ``keypoints`` ``[N, K, 3]`` (x, y, score), float32, in the image's
      pixels: every detection the predictor returns (score >= its threshold), as ``predictions.json`` keeps them;
      :func:`detections_of` gives a row's :class:`~fcpose.structures.PoseDetections` (``.people()``: those drawn);
    * ``error`` (str): "" or the one-line reason this image failed (its people are then empty); a bad image never
      stops the batch;
    * ``decode_ms`` (reading and decoding this image), ``predict_ms`` (its share of the batch's ``predict`` call).

    Images of one batch run through :meth:`fcpose.Predictor.predict`, which runs those of the same padded size
    together, up to ``batch_size`` per network call (``map_batches``' own ``batch_size`` is rows per call).

    Args:
        weights: A zoo name or checkpoint (torch), an ``.onnx`` (onnxruntime) or an ``.xml`` file (openvino).
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        device: Where the model runs; on a Ray GPU worker (``num_gpus=1``) ``"cuda"`` is the GPU Ray assigned.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (torch).
        min_size: The short side images are resized to; default: the model's test size.
        max_size: The longest the long side may get; default: the model's test size.
        score_threshold: The lowest detection score returned; default: the model's.
        batch_size: The most images of one padded size per network call.
        column: The image column; default: the first of :data:`IMAGE_COLUMNS` in the batch.

    Raises:
        FCPoseError: Bad weights, backend, device or precision (when the worker starts).
    """

    def __init__(self, weights: str, *, backend: str = "torch", device: str = "cpu", precision: str = "fp32",
                 min_size: int | None = None, max_size: int | None = None, score_threshold: float | None = None,
                 batch_size: int = 4, column: str | None = None):
        self.predictor = load_predictor(backend, weights, device=device, min_size=min_size, max_size=max_size,
                                        score_threshold=score_threshold, batch_size=batch_size,
                                        **({"precision": precision} if backend == "torch" else {}))
        self.num_keypoints = self.predictor.cfg.keypoints.num_keypoints
        self.column = column

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        column = image_column(batch, self.column)
        cells = batch[column]
        keep_paths = len(cells) and isinstance(cells[0], (str, Path))  # the image column goes unless it is paths
        paths = batch.get("path", cells if keep_paths else None)
        names = [Path(str(p)).name for p in paths] if paths is not None else [""] * len(cells)
        arrays: list[np.ndarray | None] = []
        errors, decode_ms = [], []
        for i, cell in enumerate(cells):
            start = time.perf_counter()
            try:
                arrays.append(_as_image(cell, names[i] or f"in row {i} of the batch"))
                errors.append("")
            except FCPoseError as exc:
                arrays.append(None)
                errors.append(one_line(exc))
            decode_ms.append((time.perf_counter() - start) * 1000)
        ok = [i for i, a in enumerate(arrays) if a is not None]
        start = time.perf_counter()
        found = dict(zip(ok, self.predictor.predict([arrays[i] for i in ok]))) if ok else {}
        share = (time.perf_counter() - start) * 1000 / max(1, len(ok))
        people = [found[i].numpy() if i in found else PoseDetections.empty(self.num_keypoints).numpy()
                  for i in range(len(cells))]
        out = {name: values for name, values in batch.items() if name != column or keep_paths}
        if "image_id" not in out:
            ids = [image_id(Path(n)) if n else None for n in names]
            out["image_id"] = np.array([-1 if i is None else i for i in ids], dtype=np.int64)
        out["file_name"] = _objects(names)
        out["height"] = np.array([a.shape[0] if a is not None else 0 for a in arrays], dtype=np.int64)
        out["width"] = np.array([a.shape[1] if a is not None else 0 for a in arrays], dtype=np.int64)
        for key in ("boxes", "scores", "keypoints"):
            out[key] = _objects([p[key] for p in people])
        out["error"] = _objects(errors)
        out["decode_ms"] = np.array(decode_ms, dtype=np.float64)
        out["predict_ms"] = np.array([share if i in found else 0.0 for i in range(len(cells))], dtype=np.float64)
        return out


def detections_of(row: Mapping) -> PoseDetections:
    """A result row of :class:`RayPredictor` (``ds.iter_rows()``, ``take_all()``) as
    :class:`~fcpose.structures.PoseDetections` (``.people()``, ``.to_coco()``)."""
    boxes = torch.tensor(np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4))  # a copy: Ray's are read-only
    scores = torch.tensor(np.asarray(row["scores"], dtype=np.float32).reshape(-1))
    keypoints = np.asarray(row["keypoints"], dtype=np.float32)  # [N, K, 3], or flattened (a Parquet round trip)
    if keypoints.ndim != 3:  # K is unknown when flattened with N = 0: [0, 0, 3]
        keypoints = keypoints.reshape(len(scores), -1, 3) if len(scores) else keypoints.reshape(0, 0, 3)
    keypoints = torch.tensor(keypoints)
    return PoseDetections(boxes=boxes, scores=scores, keypoints=keypoints,
                          image_size=(int(row["height"]), int(row["width"])))


def write_coco_results(rows, path: str | Path, category_id: int = 1) -> tuple[Path, int]:
    """Write the detections of :class:`RayPredictor` rows (an iterable of row dicts, or a Ray dataset) as one COCO
    results file, ``fcpose predict``'s ``predictions.json`` format (:meth:`PoseDetections.to_coco`: ``image_id``
    when known, ``file_name``), complete or absent, in (``image_id``, ``file_name``) order whatever order Ray's workers
    gave the rows in, so the same images give the same file. Rows with an ``error`` are left out.

    Raises:
        InputError: A row has neither an ``image_id`` nor a file name (its detections would belong to no image).

    Returns:
        The path written and the number of rows left out for an error.
    """
    if hasattr(rows, "iter_rows"):
        rows = rows.iter_rows()
    found, failed = [], 0
    for row in rows:
        if row["error"]:
            failed += 1
            continue
        image_id = int(row["image_id"])
        if image_id < 0 and not str(row["file_name"]):
            raise InputError("a row has neither an image_id nor a file name, so its detections could not be told "
                             "apart in a COCO results file: give the dataset an image_id or a path column")
        found.append(((image_id, str(row["file_name"])), detections_of(row).to_coco(
            image_id=image_id if image_id >= 0 else None, file_name=str(row["file_name"]) or None,
            category_id=category_id)))
    found.sort(key=lambda item: item[0])  # stable: a row's people keep their order
    entries = [entry for _, row_entries in found for entry in row_entries]
    return atomic_write_text(Path(path), json.dumps(entries), what="predictions"), failed

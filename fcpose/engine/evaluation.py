"""COCO keypoint (and box) evaluation with pycocotools' ``COCOeval``.

Results use the COCO results format, in COCO's own coordinate convention (keypoints are pixel
indices, i.e. fcpose's continuous coordinates minus 0.5; boxes ``[x, y, w, h]``)::

    [{"image_id": int, "category_id": 1, "keypoints": [x1, y1, s1, ..., xK, yK, sK],
      "score": float, "bbox": [x, y, w, h]}, ...]

The protocol is exactly pycocotools': keypoints with ``maxDets = [20]`` and the area ranges
all / medium / large, OKS with per-keypoint sigmas; boxes with the standard 12 numbers. Metrics are
returned as fractions in [0, 1]; where pycocotools reports -1 (no ground truth in that area
range, so the metric is undefined) this module returns ``float("nan")``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import COCO_SIGMAS
from ..errors import ConfigError, FCPoseError, InputError, one_line

__all__ = ["KEYPOINT_METRICS", "BBOX_METRICS", "evaluate_keypoints", "load_gt"]

logger = logging.getLogger(__name__)

# Names of COCOeval.stats entries, in order.
KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_IOU_TYPES = ("keypoints", "bbox")


def _quiet(verbose: bool):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: Any, *, verbose: bool = False):
    """A ``pycocotools.coco.COCO`` from a path to an annotation JSON, a loaded dataset dict, or a
    ``COCO`` (returned as is).

    Args:
        gt: A COCO annotation JSON path, a loaded dataset dict, or a ``COCO``.
        verbose: Let pycocotools print while indexing.

    Returns:
        (pycocotools.coco.COCO): The indexed ground truth.

    Raises:
        FCPoseError: ``gt`` is none of those, or the file is missing, unreadable or malformed.
    """
    from pycocotools.coco import COCO

    from ..data.coco import check_coco_dataset, read_coco_json

    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, Path)):
        gt = read_coco_json(gt, for_eval=True)  # one-line errors for a missing, unreadable or malformed file
    elif isinstance(gt, dict):
        gt = copy.deepcopy(check_coco_dataset(gt, "the ground truth", for_eval=True))
    else:
        raise FCPoseError(f"ground truth must be a path, a dict or a pycocotools COCO, got {type(gt).__name__}")
    coco = COCO()
    coco.dataset = gt
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _load_results(results: Any) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise FCPoseError(f"results file not found: {path}")
        try:
            results = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise FCPoseError(f"results file {path} is not valid JSON: {one_line(exc)}") from None
        except OSError as exc:
            raise FCPoseError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    if not isinstance(results, (list, tuple)):
        raise FCPoseError(f"results must be a list of dicts or a path to a JSON list, got {type(results).__name__}")
    return list(results)


def _keypoint_category(coco) -> dict | None:
    """The keypoint category, chosen as for training (:func:`~fcpose.data.coco.select_keypoint_category`),
    or None for a dataset without one."""
    from ..data.coco import select_keypoint_category

    try:
        return select_keypoint_category(coco.dataset.get("categories", []))
    except InputError:
        return None


def _num_keypoints(coco, cat: dict | None) -> int:
    """K from the keypoint category (its ``keypoints`` names), else from the first annotation."""
    if cat is not None:
        return len(cat["keypoints"])
    for ann in coco.dataset.get("annotations", []):
        if ann.get("keypoints"):
            return len(ann["keypoints"]) // 3
    return len(COCO_SIGMAS)


def _resolve_sigmas(cat: dict | None, sigmas: Sequence[float] | None, k: int) -> np.ndarray | None:
    """The OKS sigmas to set on ``COCOeval.params`` or None to keep pycocotools' own COCO values (the
    category's, by :func:`~fcpose.data.coco.category_sigmas`, when not given)."""
    from ..data.coco import category_sigmas

    if sigmas is None and cat is not None and "sigmas" in cat:
        try:
            sigmas = category_sigmas(cat)
        except ConfigError as exc:
            raise FCPoseError(str(exc)) from None
    if sigmas is None:
        if k != len(COCO_SIGMAS):
            raise FCPoseError(f"the dataset has {k} keypoints: OKS sigmas are required (pass sigmas= or add a 'sigmas' "
                              "list to its category); COCO's defaults only fit the 17 COCO keypoints")
        return None
    arr = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if arr.shape[0] != k:
        raise FCPoseError(f"got {arr.shape[0]} OKS sigmas for {k} keypoints")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise FCPoseError("OKS sigmas must be positive finite numbers")
    return arr


def _numbers(values: Any, what: str) -> list[float]:
    """A flat list of finite floats, or a one-line FCPoseError."""
    if isinstance(values, np.ndarray):
        values = values.reshape(-1).tolist()
    if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        raise FCPoseError(f"{what} must be a list of finite numbers")
    return [float(v) for v in values]


def _ids_by_file_name(coco) -> dict[str, int]:
    """Ground-truth image id of each file name (and of its base name, when that is unambiguous)."""
    out: dict[str, int] = {}
    base: dict[str, list[int]] = {}
    for img in coco.dataset.get("images", []):
        name = img.get("file_name") if isinstance(img, dict) else None
        if isinstance(name, str):
            out[name] = img["id"]
            base.setdefault(Path(name).name, []).append(img["id"])
    for name, ids in base.items():
        if len(ids) == 1:
            out.setdefault(name, ids[0])
    return out


def _check_results(results: list[dict], gt_ids: set, k: int, need: Iterable[str],
                   ids_by_name: dict[str, int] | None = None) -> list[dict]:
    """Validate results and return deep copies with plain-float lists (pycocotools mutates them). A result without
    ``image_id`` but with a ``file_name`` (as ``fcpose predict`` writes for images whose names are not numeric ids) is
    matched to the ground-truth image of that file name."""
    out = []
    unknown = set()
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise FCPoseError(f"result {i} is not a JSON object (a COCO results file is a list of objects)")
        if "frame" in r:
            raise FCPoseError(f"result {i} is from a video (it has a 'frame'); COCO evaluation scores images only")
        if "image_id" not in r and isinstance(r.get("file_name"), str) and ids_by_name is not None:
            name = r["file_name"]
            if name not in ids_by_name and Path(name).name not in ids_by_name:
                raise FCPoseError(f"result {i} has file_name {name!r} and no image_id, and no ground-truth image "
                                  f"has that file name")
            r = {**r, "image_id": ids_by_name.get(name, ids_by_name.get(Path(name).name))}
        missing = [key for key in ("image_id", "category_id", "score", *need) if key not in r]
        if missing:
            hint = ""
            if "image_id" in missing:
                hint = (" (results need an image_id, or a file_name of a ground-truth image: run `fcpose predict "
                        "--annotations ANN.json` to write the dataset's image ids)")
            raise FCPoseError(f"result {i} lacks {', '.join(missing)}{hint}")
        c = dict(r)
        for key in ("image_id", "category_id"):
            if not isinstance(c[key], int) or isinstance(c[key], bool):
                raise FCPoseError(f"result {i} has {key} {c[key]!r}, not an integer")
        if "keypoints" in c:
            kps = _numbers(c["keypoints"], f"result {i}: 'keypoints'")
            if len(kps) != 3 * k:
                raise FCPoseError(f"result {i} has {len(kps)} keypoint values, expected {3 * k} for {k} keypoints")
            c["keypoints"] = kps
        if "bbox" in c:
            box = _numbers(c["bbox"], f"result {i}: 'bbox'")
            if len(box) != 4:
                raise FCPoseError(f"result {i} has a bbox of {len(box)} values, expected [x, y, w, h]")
            c["bbox"] = box
        score = c["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float, np.floating)) or not np.isfinite(score):
            raise FCPoseError(f"result {i} has score {score!r}, not a finite number")
        c["score"] = float(score)
        image_id = c["image_id"]
        if image_id not in gt_ids:
            unknown.add(image_id)
        out.append(c)
    if unknown:
        shown = ", ".join(str(v) for v in sorted(unknown, key=str)[:5])
        raise FCPoseError(f"results refer to {len(unknown)} image id(s) not in the ground truth (e.g. {shown})")
    return out


def _empty_results(coco):
    """A results COCO with no detections (``COCO.loadRes`` cannot load an empty list)."""
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {
        "images": list(coco.dataset["images"]),
        "categories": copy.deepcopy(coco.dataset.get("categories", [])),
        "annotations": [],
    }
    res.createIndex()
    return res


def _run(coco_gt, dets: list[dict], iou_type: str, sigmas: np.ndarray | None, image_ids, verbose: bool):
    from pycocotools.cocoeval import COCOeval

    with _quiet(verbose):
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None and iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = sigmas
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = KEYPOINT_METRICS if iou_type == "keypoints" else BBOX_METRICS
    return {name: (float("nan") if v < 0 else float(v)) for name, v in zip(names, ev.stats)}


def evaluate_keypoints(gt: Any, results: Any, *, sigmas: Sequence[float] | None = None,
                       iou_types: Sequence[str] = ("keypoints", "bbox"), image_ids: Iterable[int] | None = None,
                       verbose: bool = False) -> dict[str, dict[str, float]]:
    """Evaluate COCO-format results against ground truth with pycocotools' ``COCOeval``.

    Args:
        gt: path to a COCO annotation JSON, a loaded dataset dict, or a ``pycocotools.coco.COCO``.
        results: list of result dicts (see the module doc; K keypoints -> 3K values, COCO pixel-index
            coordinates) or a path to a results JSON.
        sigmas: K OKS sigmas. Default: the category's ``sigmas`` field if the dataset has one, else
            COCO's 17 sigmas (for K != 17 sigmas are required).
        iou_types: any of ``"keypoints"`` and ``"bbox"``. Box evaluation needs a ``bbox`` on every
            result; if some lack it, it is skipped (logged) and ``"bbox"`` is absent from the output.
        image_ids: evaluate on these images only (default: all ground-truth images).
        verbose: let pycocotools print its progress and summary tables.

    Returns ``{"keypoints": {AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl}, "bbox": {AP, AP50, AP75, APs,
    APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}}`` as floats in [0, 1]; NaN where the metric is undefined (no
    ground truth in that area range); with no results every defined metric is 0. :class:`FCPoseError` for
    unreadable inputs, results for unknown image ids, wrong keypoint counts, missing or mis-sized sigmas,
    unknown iou types or image ids.

    Returns:
        The metrics of each IoU type evaluated, by name (as above).

    Raises:
        FCPoseError: Unreadable inputs, results for unknown image ids, wrong keypoint counts, missing or mis-sized
            sigmas, unknown IoU types or image ids.
    """
    iou_types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
    bad = [t for t in iou_types if t not in _IOU_TYPES]
    if bad or not iou_types:
        raise FCPoseError(f"iou_types must be a non-empty subset of {list(_IOU_TYPES)}, got {list(iou_types)}")
    coco_gt = load_gt(gt, verbose=verbose)
    category = _keypoint_category(coco_gt)
    k = _num_keypoints(coco_gt, category)
    oks_sigmas = _resolve_sigmas(category, sigmas, k) if "keypoints" in iou_types else None
    gt_ids = set(coco_gt.getImgIds())
    if image_ids is not None:
        image_ids = sorted(set(image_ids))
        missing = [i for i in image_ids if i not in gt_ids]
        if missing:
            raise FCPoseError(f"image_ids not in the ground truth: {missing[:5]}")
    need = ("keypoints",) if "keypoints" in iou_types else ("bbox",)
    dets = _check_results(_load_results(results), gt_ids, k, need, _ids_by_file_name(coco_gt))

    out: dict[str, dict[str, float]] = {}
    have_boxes = all("bbox" in d for d in dets)
    if "keypoints" in iou_types:
        # Consistent loadRes branch: with boxes on every result pycocotools takes the detection
        # area from the box; otherwise from the keypoints' extent (boxes are then dropped).
        kp_dets = dets if have_boxes else [{k2: v for k2, v in d.items() if k2 != "bbox"} for d in dets]
        out["keypoints"] = _run(coco_gt, copy.deepcopy(kp_dets), "keypoints", oks_sigmas, image_ids, verbose)
    if "bbox" in iou_types:
        if have_boxes:
            box_dets = [{k2: v for k2, v in d.items() if k2 != "keypoints"} for d in dets]
            out["bbox"] = _run(coco_gt, copy.deepcopy(box_dets), "bbox", None, image_ids, verbose)
        else:
            n = sum("bbox" not in d for d in dets)
            logger.warning("bbox evaluation skipped: %d of %d results have no 'bbox'", n, len(dets))
    return out


"""COCO keypoint (and box) evaluation with pycocotools' ``COCOeval``.

Results use the COCO results format, in COCO's own coordinate convention (keypoints are pixel
indices, i.e. fcpose's continuous coordinates minus 0.5; boxes ``[x, y, w, h]``)::

    [{"image_id": int, "category_id": 1, "keypoints": [x1, y1, s1, ..., xK, yK, sK],
      "score": float, "bbox": [x, y, w, h]}, ...]

The COCO protocol is exactly pycocotools': keypoints with ``maxDets = [20]`` and the area ranges
all / medium / large, OKS with per-keypoint sigmas; boxes with the standard 12 numbers. The CrowdPose
protocol is exactly xtcocotools' (``iouType="keypoints_crowd"``, ``use_area=False``: a person's OKS scale is
0.53 x its box; ``maxDets = [20]``; AP easy / medium / hard over the images of crowd index < 0.2 / < 0.8 /
>= 0.8, read from the file's ``crowdIndex``). Metrics are returned as fractions in [0, 1]; where the
evaluator reports -1 (no ground truth in that range, so the metric is undefined) this module returns
``float("nan")``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BOX_AREA_FACTOR, COCO_SIGMAS, CROWDPOSE_KEYPOINT_NAMES
from ..errors import ConfigError, FCPoseError, InputError, one_line

__all__ = ["KEYPOINT_METRICS", "CROWDPOSE_METRICS", "BBOX_METRICS", "PROTOCOLS", "evaluate_keypoints", "load_gt",
           "load_results", "complete_for_eval", "resolve_protocol"]

logger = logging.getLogger(__name__)

# Names of COCOeval.stats entries, in order.
KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# xtcocotools' stats of iouType "keypoints_crowd", in order (AP easy / medium / hard: crowd index < 0.2, < 0.8, >= 0.8).
CROWDPOSE_METRICS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "APeasy", "APmedium", "APhard")
PROTOCOLS = ("auto", "coco", "crowdpose")
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_IOU_TYPES = ("keypoints", "bbox")


def _quiet(verbose: bool):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: Any, *, verbose: bool = False):
    """A ``pycocotools.coco.COCO`` from a path to an annotation JSON, a loaded dataset dict, or a
    ``COCO`` (returned as is), completed for evaluation by :func:`complete_for_eval`. Loaded from a path, its
    ``source_file`` attribute is that path (what the CrowdPose protocol reads the ``crowdIndex`` from).

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
    source = gt if isinstance(gt, (str, Path)) else None
    if isinstance(gt, (str, Path)):
        gt = read_coco_json(gt)  # one-line errors for a missing, unreadable or malformed file
    elif isinstance(gt, dict):
        gt = copy.deepcopy(check_coco_dataset(gt, "the ground truth"))
    else:
        raise FCPoseError(f"ground truth must be a path, a dict or a pycocotools COCO, got {type(gt).__name__}")
    complete_for_eval(gt)
    coco = COCO()
    coco.source_file = source
    coco.dataset = gt
    with _quiet(verbose):
        coco.createIndex()
    return coco



def _segmentation_area(segmentation: Any, image: dict) -> float | None:
    """The pixel area of a COCO segmentation (polygons or RLE) of ``image``, or None when it cannot be measured."""
    from pycocotools import mask

    height, width = image.get("height"), image.get("width")
    if not segmentation or not height or not width:
        return None
    try:
        rles = mask.frPyObjects(segmentation, int(height), int(width))
        return float(mask.area(mask.merge(rles) if isinstance(rles, list) else rles))
    except Exception:  # noqa: BLE001 - a malformed segmentation: the caller falls back to the box
        return None


def complete_for_eval(dataset: dict) -> dict:
    """Fill in, in place, what COCO evaluation needs and some COCO-format files (OCHuman's, CrowdPose's, exports of
    annotation tools) leave out, and say what was filled in one logged line: ``area`` (of the ``segmentation``,
    else ``BOX_AREA_FACTOR`` x the box, CrowdPose's rule), ``iscrowd`` (0), ``keypoints`` (none labelled: the
    person is then ignored by keypoint AP, as COCO does for people without keypoints) and ``num_keypoints`` (the
    labelled ones). Crowd regions (``iscrowd: 1``) stay ignore regions, and images without people stay in (their
    detections are false positives). Returns ``dataset``."""
    images = {img["id"]: img for img in dataset["images"]}
    k = _num_keypoints(dataset, _keypoint_category(dataset))
    filled: dict[str, int] = {}
    for ann in dataset.get("annotations", []):
        if "area" not in ann:
            area = _segmentation_area(ann.get("segmentation"), images[ann["image_id"]])
            ann["area"] = area if area is not None else BOX_AREA_FACTOR * ann["bbox"][2] * ann["bbox"][3]
            filled["area"] = filled.get("area", 0) + 1
        if not ann.get("keypoints"):
            ann["keypoints"] = [0] * (3 * k)
            filled["keypoints"] = filled.get("keypoints", 0) + 1
        for key, value in (("iscrowd", 0), ("num_keypoints", sum(v > 0 for v in ann["keypoints"][2::3]))):
            if key not in ann:
                ann[key] = value
                filled[key] = filled.get(key, 0) + 1
    if filled:
        logger.warning("note: the ground truth lacks %s on some annotations; filled in for evaluation (see "
                       "fcpose.engine.evaluation.complete_for_eval)",
                       ", ".join(f"'{key}' ({n})" for key, n in filled.items()))
    return dataset


def load_results(results: Any) -> list[dict]:
    """COCO results as a list: ``results`` itself (a list) or the JSON list of the file it names; one-line
    :class:`FCPoseError` for a missing, unreadable or malformed file."""
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


def _keypoint_category(dataset: dict) -> dict | None:
    """The keypoint category, chosen as for training (:func:`~fcpose.data.coco.select_keypoint_category`),
    or None for a dataset without one."""
    from ..data.coco import select_keypoint_category

    try:
        return select_keypoint_category(dataset.get("categories", []))
    except InputError:
        return None


def _num_keypoints(dataset: dict, cat: dict | None) -> int:
    """K from the keypoint category (its ``keypoints`` names), else from the first annotation."""
    if cat is not None:
        return len(cat["keypoints"])
    for ann in dataset.get("annotations", []):
        if ann.get("keypoints"):
            return len(ann["keypoints"]) // 3
    return len(COCO_SIGMAS)


def _resolve_sigmas(cat: dict | None, sigmas: Sequence[float] | None, k: int) -> np.ndarray | None:
    """The OKS sigmas to set on ``COCOeval.params`` or None to keep pycocotools' own COCO values (the
    category's, by :func:`~fcpose.data.coco.category_sigmas`, when not given)."""
    from ..data.coco import category_sigmas

    if sigmas is None and cat is not None:
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


def has_crowd_index(dataset: dict) -> bool:
    """Whether every image carries a finite numeric ``crowdIndex`` (what CrowdPose's files give, and what the
    CrowdPose protocol splits easy / medium / hard by)."""
    values = [img.get("crowdIndex") for img in dataset["images"]]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def is_crowdpose(dataset: dict) -> bool:
    """Whether a dataset is CrowdPose's: its keypoint category has CrowdPose's 14 names, in its order, and every
    image a ``crowdIndex`` (:func:`has_crowd_index`)."""
    cat = _keypoint_category(dataset)
    return cat is not None and cat["keypoints"] == CROWDPOSE_KEYPOINT_NAMES and has_crowd_index(dataset)


def resolve_protocol(protocol: str, dataset: dict) -> str:
    """``"coco"`` or ``"crowdpose"``: ``protocol`` itself, or for ``"auto"`` the one the dataset is for
    (:func:`is_crowdpose`). The CrowdPose protocol on a file it cannot score, or without xtcocotools, is one
    :class:`FCPoseError` line (with ``auto`` too: CrowdPose's numbers are never silently COCO's)."""
    if protocol not in PROTOCOLS:
        raise FCPoseError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "auto":
        protocol = "crowdpose" if is_crowdpose(dataset) else "coco"
    elif protocol == "crowdpose" and not has_crowd_index(dataset):
        raise FCPoseError("the CrowdPose protocol needs a 'crowdIndex' on every image of the ground truth (CrowdPose's "
                          "own files carry one); use --protocol coco, and --split-by crowd-index for AP by crowdedness")
    if protocol == "crowdpose":
        _xtcocotools()  # installed and importable, before anything slow
    return protocol


def _xtcocotools():
    """xtcocotools' ``COCO`` and ``COCOeval``, or one FCPoseError line saying how to install it."""
    fix = ("pip install cython && pip install --no-binary xtcocotools --no-build-isolation xtcocotools (built against "
           "the installed numpy; see docs/crowdpose_ochuman.md)")
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except ImportError:
        raise FCPoseError(f"the CrowdPose protocol needs xtcocotools, which is not installed: {fix}") from None
    except ValueError as exc:  # the PyPI wheel, built against numpy 1.x, under numpy 2: "numpy.dtype size changed"
        raise FCPoseError(f"xtcocotools does not import ({one_line(exc)}): reinstall it with --force-reinstall "
                          f"--no-deps; {fix}") from None
    return COCO, COCOeval


def _run_crowdpose(ann_file: str | Path, dataset: dict, dets: list[dict], sigmas: np.ndarray | None, image_ids,
                   verbose: bool) -> dict[str, float]:
    """xtcocotools' CrowdPose protocol on ``dataset`` (the checked, completed contents of ``ann_file``, whose
    ``crowdIndex`` xtcocotools reads again for AP easy / medium / hard)."""
    COCO, COCOeval = _xtcocotools()
    with _quiet(verbose):
        coco_gt = COCO(str(ann_file), ann_data=copy.deepcopy(dataset))
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "keypoints_crowd", sigmas, use_area=False)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
            # its easy / medium / hard re-evaluate the whole file's images; on a subset they are not asked for
            ev.get_type_result = lambda *args, **kwargs: [-1.0, -1.0, -1.0]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float("nan") if v < 0 else float(v)) for name, v in zip(CROWDPOSE_METRICS, ev.stats)}


def evaluate_keypoints(gt: Any, results: Any, *, sigmas: Sequence[float] | None = None,
                       iou_types: Sequence[str] = ("keypoints", "bbox"), image_ids: Iterable[int] | None = None,
                       protocol: str = "coco", verbose: bool = False) -> dict[str, dict[str, float]]:
    """Evaluate COCO-format results against ground truth with pycocotools' ``COCOeval`` (or, for keypoints under
    the CrowdPose protocol, xtcocotools').

    Args:
        gt: path to a COCO annotation JSON, a loaded dataset dict, or a ``pycocotools.coco.COCO``.
        results: list of result dicts (see the module doc; K keypoints -> 3K values, COCO pixel-index
            coordinates) or a path to a results JSON.
        sigmas: K OKS sigmas. Default: the category's ``sigmas`` field if the dataset has one, else
            COCO's 17 sigmas (for K != 17 sigmas are required).
        iou_types: any of ``"keypoints"`` and ``"bbox"``. Box evaluation needs a ``bbox`` on every
            result; if some lack it, it is skipped (logged) and ``"bbox"`` is absent from the output.
        image_ids: evaluate on these images only (default: all ground-truth images).
        protocol: ``"coco"``, ``"crowdpose"`` (keypoints scored as CrowdPose does, through xtcocotools; needs ``gt``
            as a path or :func:`load_gt` of one, whose images carry a ``crowdIndex``) or ``"auto"`` (CrowdPose's for
            CrowdPose's files).
        verbose: let pycocotools print its progress and summary tables.

    Returns:
        The metrics of each IoU type evaluated, by name: ``{"keypoints": {AP, AP50, AP75, APm, APl, AR, AR50, AR75,
        ARm, ARl}, "bbox": {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}}`` (CrowdPose protocol:
        ``keypoints`` holds :data:`CROWDPOSE_METRICS`) as floats in [0, 1]; NaN where the metric is undefined (no
        ground truth in that range); with no results every defined metric is 0.

    Raises:
        FCPoseError: Unreadable inputs, results for unknown image ids, wrong keypoint counts, missing or mis-sized
            sigmas, unknown IoU types or image ids.
    """
    iou_types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
    bad = [t for t in iou_types if t not in _IOU_TYPES]
    if bad or not iou_types:
        raise FCPoseError(f"iou_types must be a non-empty subset of {list(_IOU_TYPES)}, got {list(iou_types)}")
    coco_gt = load_gt(gt, verbose=verbose)
    category = _keypoint_category(coco_gt.dataset)
    k = _num_keypoints(coco_gt.dataset, category)
    protocol = resolve_protocol(protocol, coco_gt.dataset)
    if protocol == "crowdpose" and getattr(coco_gt, "source_file", None) is None:
        raise FCPoseError("the CrowdPose protocol reads the annotation file: pass its path (or load_gt(path)) as the "
                          "ground truth")
    oks_sigmas = _resolve_sigmas(category, sigmas, k) if "keypoints" in iou_types else None
    gt_ids = set(coco_gt.getImgIds())
    if image_ids is not None:
        image_ids = sorted(set(image_ids))
        missing = [i for i in image_ids if i not in gt_ids]
        if missing:
            raise FCPoseError(f"image_ids not in the ground truth: {missing[:5]}")
    need = ("keypoints",) if "keypoints" in iou_types else ("bbox",)
    dets = _check_results(load_results(results), gt_ids, k, need, _ids_by_file_name(coco_gt))

    out: dict[str, dict[str, float]] = {}
    have_boxes = all("bbox" in d for d in dets)
    if "keypoints" in iou_types:
        # Consistent loadRes branch: with boxes on every result pycocotools takes the detection
        # area from the box; otherwise from the keypoints' extent (boxes are then dropped).
        kp_dets = dets if have_boxes else [{k2: v for k2, v in d.items() if k2 != "bbox"} for d in dets]
        if protocol == "crowdpose":
            out["keypoints"] = _run_crowdpose(coco_gt.source_file, coco_gt.dataset, copy.deepcopy(kp_dets),
                                              oks_sigmas, image_ids, verbose)
        else:
            out["keypoints"] = _run(coco_gt, copy.deepcopy(kp_dets), "keypoints", oks_sigmas, image_ids, verbose)
    if "bbox" in iou_types:
        if have_boxes:
            box_dets = [{k2: v for k2, v in d.items() if k2 != "keypoints"} for d in dets]
            out["bbox"] = _run(coco_gt, copy.deepcopy(box_dets), "bbox", None, image_ids, verbose)
        else:
            n = sum("bbox" not in d for d in dets)
            logger.warning("bbox evaluation skipped: %d of %d results have no 'bbox'", n, len(dets))
    return out


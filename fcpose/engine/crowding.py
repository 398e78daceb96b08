"""Keypoint AP by crowdedness, for any COCO-format dataset (``fcpose eval --split-by``).

The images are partitioned by a per-image value and each part is scored alone (``COCOeval`` with
``params.imgIds`` = the part's images, under the protocol of the whole evaluation):

- ``crowd-index``: CrowdPose's crowd index — the file's ``crowdIndex`` when every image carries one, else computed
  from the ground truth by :func:`crowd_index` — in CrowdPose's parts easy (< 0.2), medium (< 0.8), hard (>= 0.8);
- ``people``: the people keypoint AP scores (non-crowd annotations with a labelled keypoint): 0-1, 2-3, 4-7, 8+.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import FCPoseError
from .evaluation import evaluate_keypoints, has_crowd_index, load_gt, load_results

__all__ = ["SPLITS", "crowd_index", "image_values", "partition", "evaluate_split", "format_split"]

SPLITS = ("crowd-index", "people")
# (label, lower bound) of each part, in order; a part runs up to the next one's bound.
_PARTS = {
    "crowd-index": (("easy (< 0.2)", -math.inf), ("medium (0.2-0.8)", 0.2), ("hard (>= 0.8)", 0.8)),
    "people": (("0-1 people", -math.inf), ("2-3 people", 2), ("4-7 people", 4), ("8+ people", 8)),
}
_COLUMNS = ("AP", "AP50", "AP75", "AR")


def _people(dataset: dict) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """(box x0 y0 x1 y1, labelled keypoints (n, 2)) of every non-crowd person of each image."""
    out: dict[int, list] = defaultdict(list)
    for ann in dataset.get("annotations", []):
        if ann.get("iscrowd"):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        kps = np.asarray(ann.get("keypoints") or [], np.float64).reshape(-1, 3)
        out[ann["image_id"]].append((np.array([x, y, x + w, y + h]), kps[kps[:, 2] > 0, :2]))
    return out


def crowd_index(dataset: dict) -> dict[int, float]:
    """Each image's crowd index as the CrowdPose paper defines it (Li et al., "CrowdPose", CVPR 2019, the dataset's
    "Crowd Index"; arXiv:1812.00324): the mean over the image's people i of N_b(i) / N_a(i), where N_a(i) is the
    number of i's own labelled keypoints and N_b(i) the number of other people's labelled keypoints inside i's box
    (edges included). Our choices where the paper says nothing: people without labelled keypoints count only as
    others (their ratio is undefined), crowd regions not at all, and an image without a person with keypoints has
    index 0."""
    people = _people(dataset)
    out = {}
    for img in dataset["images"]:
        persons = people.get(img["id"], [])
        ratios = []
        for i, (box, own) in enumerate(persons):
            if len(own) == 0:
                continue
            inside = sum(int(np.sum((kps[:, 0] >= box[0]) & (kps[:, 0] <= box[2]) & (kps[:, 1] >= box[1])
                                    & (kps[:, 1] <= box[3])))
                         for j, (_, kps) in enumerate(persons) if j != i)
            ratios.append(inside / len(own))
        out[img["id"]] = float(np.mean(ratios)) if ratios else 0.0
    return out


def image_values(dataset: dict, by: str) -> tuple[dict[int, float], str]:
    """Each image's value for the split ``by`` and where it comes from (a few words for the table's title)."""
    if by == "crowd-index":
        if has_crowd_index(dataset):
            return {img["id"]: float(img["crowdIndex"]) for img in dataset["images"]}, "the file's crowdIndex"
        return crowd_index(dataset), "computed from the ground truth as CrowdPose defines it"
    if by == "people":
        people = _people(dataset)
        return ({img["id"]: float(sum(len(kps) > 0 for _, kps in people.get(img["id"], [])))
                 for img in dataset["images"]}, "people with labelled keypoints")
    raise FCPoseError(f"split-by must be one of {', '.join(SPLITS)}, got {by!r}")


def partition(values: dict[int, float], by: str) -> list[tuple[str, list[int]]]:
    """(label, sorted image ids) of each part of the split ``by``: every image in exactly one part."""
    parts = _PARTS[by]
    out: list[tuple[str, list[int]]] = [(label, []) for label, _ in parts]
    for image_id, value in sorted(values.items()):
        index = max(i for i, (_, low) in enumerate(parts) if value >= low)
        out[index][1].append(image_id)
    return out


def evaluate_split(gt: Any, results: Any, by: str, *, protocol: str = "coco", sigmas=None) -> dict:
    """Keypoint AP of each part of the split ``by`` (:data:`SPLITS`), each part scored alone.

    Args:
        gt: The ground truth: a path, a dataset dict or :func:`~fcpose.engine.evaluation.load_gt` of one (a path
            for the CrowdPose protocol).
        results: COCO keypoint results (a list or a path), as for ``evaluate_keypoints``.
        by: ``"crowd-index"`` or ``"people"``.
        protocol: The protocol of ``evaluate_keypoints`` each part is scored with.
        sigmas: OKS sigmas, as for ``evaluate_keypoints``.

    Returns:
        ``{"by", "source", "parts": [{"part", "images", "people", "AP", "AP50", "AP75", "AR"}, ...]}``; a part
        without images has NaN metrics.
    """
    coco, results = load_gt(gt), load_results(results)  # once for all the parts
    values, source = image_values(coco.dataset, by)
    people, _ = image_values(coco.dataset, "people")
    parts = []
    for label, ids in partition(values, by):
        metrics = (evaluate_keypoints(coco, results, sigmas=sigmas, iou_types=("keypoints",), image_ids=ids,
                                      protocol=protocol)["keypoints"] if ids else {})
        parts.append({"part": label, "images": len(ids), "people": int(sum(people[i] for i in ids)),
                      **{name: metrics.get(name, math.nan) for name in _COLUMNS}})
    return {"by": by, "source": source, "parts": parts}


def format_split(split: dict) -> str:
    """The split as a small table (fractions with three decimals, as ``format_metrics``)."""
    lines = [f"keypoint AP by {split['by']} ({split['source']}):",
             f"{'part':18s} {'images':>6s} {'people':>6s}" + "".join(f" {name:>6s}" for name in _COLUMNS)]
    for part in split["parts"]:
        lines.append(f"{part['part']:18s} {part['images']:6d} {part['people']:6d}"
                     + "".join(f" {part[name]:6.3f}" for name in _COLUMNS))
    return "\n".join(lines)

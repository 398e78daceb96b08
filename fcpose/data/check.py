"""``fcpose dataset check``: what a COCO-keypoints dataset holds and what keeps it from training, before training.

The checks are the ones training itself makes, run on the whole file instead of stopping at the first problem:
:func:`~fcpose.data.coco.coco_problems` (the file's shape), :func:`~fcpose.data.coco.select_keypoint_category`
and :func:`~fcpose.data.coco.keypoint_set_from_category` (the keypoint set, its sigmas and flip pairs), the
loader's own parsing (:func:`~fcpose.data.coco.parse_annotations`: boxes clipped and dropped, keypoints outside
the image unlabelled) and, with an image folder, every image's presence and size (read from its header). A
*problem* stops training (or `fcpose eval`) on the file as it is; a *note* is worth knowing but trains."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import (
    BOX_AREA_FACTOR,
    BUILTIN_KEYPOINT_SETS,
    KeypointSetConfig,
    builtin_keypoint_set,
    builtin_keypoint_set_of,
)
from ..errors import FCPoseError, InputError
from .coco import (
    category_sigmas,
    coco_problems,
    keypoint_set_from_category,
    parse_annotations,
    read_json_file,
    select_keypoint_category,
)
from .images import read_image_size

MAX_LINES = 20  # problems (and notes) listed one by one; the rest are counted


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found: ``summary`` lines, ``notes`` and ``problems`` (one line each)."""

    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> bool:
        """Whether ``fcpose train`` can start on the dataset as it is (no problems).

        Returns:
            True without problems.
        """
        return not self.problems

    def lines(self) -> list[str]:
        """The report as printed.

        Returns:
            The summary lines, at most :data:`MAX_LINES` notes and problems (then their count), the verdict.
        """
        out = list(self.summary)
        for kind, items in (("note", self.notes), ("problem", self.problems)):
            out += [f"{kind}: {item}" for item in items[:MAX_LINES]]
            if len(items) > MAX_LINES:
                out.append(f"{kind}: ... and {len(items) - MAX_LINES} more {kind}s")
        n = len(self.problems)
        out.append("result: ready to train" if not n else
                   f"result: {n} problem{'s' * (n != 1)}: cannot be trained on as it is")
        return out


def check_dataset(ann_file: str | Path, images: str | Path | None = None) -> DatasetReport:
    """Summarise and check a COCO-keypoints annotation file (and, with ``images``, its image folder).

    Args:
        ann_file: The annotation file (COCO keypoints; e.g. CVAT's "COCO Keypoints 1.0" export as it comes, or
            ``fcpose dataset import``'s output).
        images: The folder the images' ``file_name`` are relative to; None: the images are not checked.

    Returns:
        The report.

    Raises:
        InputError: The file is missing or not JSON.
    """
    data = read_json_file(ann_file)
    report = DatasetReport()
    report.problems = list(coco_problems(data))
    if report.problems:  # the rest reads the file's fields as training does, which needs its shape first
        report.summary.append(f"{ann_file}: not a valid COCO keypoint annotation file")
        return report
    try:
        category = select_keypoint_category(data["categories"], None, str(ann_file))
    except FCPoseError as exc:
        report.problems.append(str(exc))
        return report
    k = len(category["keypoints"])
    report.summary.append(f"{ann_file}: category '{category.get('name')}' (id {category['id']}), {k} keypoints")
    anns = [a for a in data.get("annotations", []) if a["category_id"] == category["id"]]
    _check_images(data["images"], anns, images, report)
    _count_people(data["images"], anns, k, str(ann_file), report)
    _keypoint_set(category, report)
    _count_keypoints(anns, category["keypoints"], report)
    _note_fields(anns, report)
    return report


def _keypoint_set(category: dict, report: DatasetReport) -> None:
    """The sigmas and flip pairs lines, from the keypoint set as training reads it (a problem when it cannot)."""
    try:
        kset = keypoint_set_from_category(category, verbose=False)
    except FCPoseError as exc:
        report.problems.append(str(exc))
        kset = None
    names = category.get("keypoints")
    builtin = builtin_keypoint_set_of(names) if isinstance(names, list) else None
    if "sigmas" in category:
        source = "the category's 'sigmas' field"
    elif builtin is not None and _builtin_name(builtin) != "coco":
        source = f"the built-in {_builtin_name(builtin)} set's (the category has no 'sigmas' field)"
    elif category_sigmas(category) is not None:
        source = "COCO's, by keypoint name (the category has no 'sigmas' field)"
    else:
        source = "none (add a 'sigmas' field to the category)"
    report.summary.append(f"sigmas: {source}")
    if kset is not None:
        report.summary.append(f"flip pairs: {_flip_source(category, kset)}")


def _builtin_name(kset: KeypointSetConfig) -> str:
    return next(name for name in BUILTIN_KEYPOINT_SETS if builtin_keypoint_set(name).names == kset.names)


def _flip_source(category: dict, kset: KeypointSetConfig) -> str:
    """How many flip pairs and where they come from."""
    pairs = ", ".join(f"{kset.names[a]}/{kset.names[b]}" for a, b in kset.flip_pairs[:3])
    pairs += ", ..." if len(kset.flip_pairs) > 3 else ""
    if "flip_pairs" in category:
        source = "the category's 'flip_pairs' field"
    elif (builtin := builtin_keypoint_set_of(kset.names)) is not None and kset.flip_pairs == builtin.flip_pairs:
        source = "COCO's" if _builtin_name(builtin) == "coco" else f"the built-in {_builtin_name(builtin)} set's"
    elif kset.flip_pairs:
        source = "by left/right in the names"
    else:
        return ("none: a horizontal flip swaps no keypoints (if the set has sides, add 'flip_pairs' to the category, "
                "or train with --set input.flip=false)")
    return f"{len(kset.flip_pairs)} ({source}: {pairs})"


def _check_images(images: list[dict], anns: list[dict], folder: str | Path | None, report: DatasetReport) -> None:
    """The images line; with ``folder``, one problem per missing or unreadable image or size that differs from
    the annotation's (training stops on each)."""
    with_people = {a["image_id"] for a in anns if not a.get("iscrowd", 0)}
    empty = sum(img["id"] not in with_people for img in images)
    line = f"images: {len(images)} listed, {empty} without people"
    if folder is None:
        report.summary.append(line + " (files not checked: pass --images DIR)")
        return
    folder, found = Path(folder), 0
    for img in images:
        path = folder / img["file_name"]
        try:
            size = read_image_size(path)
        except FCPoseError as exc:
            report.problems.append(f"image {img['id']}: {exc}")
            continue
        found += 1
        if "height" in img and "width" in img and size != (img["height"], img["width"]):
            report.problems.append(f"image {img['id']}: {path} is {size[0]}x{size[1]} (h x w) but the file says "
                                   f"{img['height']}x{img['width']}")
    report.summary.append(f"{line}; {found} of them found in {folder}")


def _count_people(images: list[dict], anns: list[dict], k: int, source: str, report: DatasetReport) -> None:
    """People, crowd regions and boxes as the training loader keeps them (clipped to the image, tiny ones
    dropped), and the labelled keypoints it drops for lying outside their image."""
    by_image: dict[Any, list[dict]] = {}
    for ann in anns:
        by_image.setdefault(ann["image_id"], []).append(ann)
    people = sum(not a.get("iscrowd", 0) for a in anns)
    kept = crowd = dropped_kpts = with_kpts = 0
    for img in images:
        own = by_image.get(img["id"], [])
        target = parse_annotations(own, k, img.get("height"), img.get("width"), source)
        kept += len(target["boxes"])
        crowd += len(target["ignore_boxes"])
        labelled = target["keypoints"][..., 2] > 0
        with_kpts += int(labelled.any(axis=1).sum())
        in_file = sum(sum(v > 0 for v in (a.get("keypoints") or [])[2::3]) for a in own if not a.get("iscrowd", 0))
        dropped_kpts += in_file - int(labelled.sum())
    report.summary.append(f"people: {people} ({with_kpts} with labelled keypoints), {crowd} crowd regions; boxes "
                          f"kept for training: {kept}")
    if people > kept:
        report.notes.append(f"{people - kept} people have boxes under 1 pixel (after clipping to the image): "
                            "training leaves them out")
    if dropped_kpts:
        report.notes.append(f"{dropped_kpts} labelled keypoints are dropped at load (outside their image, or of a "
                            "dropped box): training treats them as unlabelled")
    if not with_kpts:
        report.problems.append("no person has a labelled keypoint (v > 0): nothing to train the keypoint heads on")


def _count_keypoints(anns: list[dict], names: list[str], report: DatasetReport) -> None:
    """Labelled keypoints per joint (visible v=2 + occluded v=1), and visibility values other than 0, 1, 2."""
    kps = [a["keypoints"] for a in anns if a.get("keypoints") and not a.get("iscrowd", 0)]
    v = np.asarray(kps, np.float64).reshape(len(kps), len(names), 3)[..., 2] if kps else np.zeros((0, len(names)))
    width = max(len(n) for n in names)
    report.summary.append(f"labelled keypoints per joint (visible + occluded) of {len(kps)} people with keypoints:")
    for j, name in enumerate(names):
        vis, occ = int((v[:, j] == 2).sum()), int((v[:, j] == 1).sum())
        report.summary.append(f"  {name:<{width}} {vis + occ:6d} ({vis} + {occ})")
    odd = Counter(float(x) for x in v[(v != 0) & (v != 1) & (v != 2)])
    if odd:
        values = ", ".join(f"{x:g} ({n})" for x, n in sorted(odd.items()))
        report.notes.append(f"keypoint visibility values other than 0, 1, 2: {values}; training counts any v > 0 as "
                            "labelled, COCO evaluation too")


def _note_fields(anns: list[dict], report: DatasetReport) -> None:
    """Fields evaluation needs, and the extra ones annotation tools write (CVAT's ``attributes``)."""
    lacking = Counter(key for a in anns for key in ("area", "iscrowd", "num_keypoints", "keypoints") if key not in a)
    if lacking:
        fields = ", ".join(f"'{key}' ({n})" for key, n in sorted(lacking.items()))
        report.notes.append(f"annotations lack {fields}: training works; `fcpose eval` with this file as ground "
                            f"truth fills them in (area: from the segmentation, else {BOX_AREA_FACTOR} x the box)")
    attributes = sorted({key for a in anns if isinstance(a.get("attributes"), dict) for key in a["attributes"]})
    if attributes:
        report.notes.append(f"annotation attributes ({', '.join(attributes)}; CVAT writes them) are not used: the "
                            "keypoints' own visibility flags are")
    hidden_at = sum(any(v == 0 and (x or y) for x, y, v in zip(*[iter(a.get("keypoints") or [])] * 3)) for a in anns)
    if hidden_at:
        report.notes.append(f"{hidden_at} annotations give coordinates to unlabelled keypoints (v = 0; CVAT keeps "
                            "them for points marked outside): they are ignored, as COCO intends")


def run_dataset_check(ann_file: str, images: str | None = None) -> int:
    """``fcpose dataset check``: print the report; 0 when the dataset can be trained on, 1 otherwise."""
    if images is not None and not Path(images).is_dir():
        raise InputError(f"--images folder not found: {images}")
    report = check_dataset(ann_file, images)
    print("\n".join(report.lines()))
    return 0 if report.trainable else 1

"""``fcpose dataset import --from label-studio``: a Label Studio JSON export -> a COCO-keypoints annotation file.

What the export holds (Label Studio's docs: the KeyPointLabels and RectangleLabels tags and the export guide): a
list of tasks, each with ``data`` (the image's URL or path) and ``annotations`` (each a ``result`` list of
regions, ``was_cancelled`` when skipped). A ``keypointlabels`` region has ``value.x``/``value.y`` in percent of
``original_width``/``original_height`` and its label in ``value.keypointlabels``; a ``rectanglelabels`` region
has ``value.x``/``y``/``width``/``height`` in percent. Keypoints belong to a person's rectangle through their
``parentID`` (Label Studio's grouping of regions); a keypoint without one goes to the only rectangle it lies in,
and a task without rectangles is one person whose box is its keypoints' extent (a problem when that is under
a pixel across: training would drop it).

Label names map to the keypoint set's names; Label Studio has no visibility flag, so every point is v = 2 and a
missing one v = 0. A point at ``x`` percent is at the continuous coordinate ``x / 100 * width``; COCO stores pixel
indices, half a pixel less (see :mod:`fcpose.data.coco`). Problems (an unknown label, a point with no person, a
rotated image or box) are one line each and leave that item out; tasks without a (non-cancelled) annotation are
left out (not labelled yet), while an annotation without regions makes an image without people."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from ..config import BUILTIN_KEYPOINT_SETS, KeypointSetConfig, builtin_keypoint_set, load_config
from ..errors import InputError
from ..fileio import atomic_write_text
from .coco import MIN_BOX_SIZE, check_coco_dataset, keypoint_set_from_coco, read_json_file
from .images import read_image_size

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files' names with 8 hex digits


def image_file_name(task: dict, images: Path | None) -> str | None:
    """The image's file name, relative to ``images``: the last part of the task's image URL or path (a local-files
    URL's ``?d=`` path), without Label Studio's upload prefix when only the name without it exists in ``images``."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    url = data.get("image")
    if not isinstance(url, str):
        strings = [v for v in data.values() if isinstance(v, str)]
        url = strings[0] if len(strings) == 1 else None
    if not url:
        return None
    parsed = urlparse(url)
    path = parse_qs(parsed.query).get("d", [parsed.path])[0]
    name = Path(unquote(path)).name
    short = UPLOAD_PREFIX.sub("", name)
    if images is not None and short != name and not (images / name).exists() and (images / short).exists():
        return short
    return name or None


def _regions(task: dict, where: str, problems: list[str]) -> list[dict] | None:
    """The regions of the task's first annotation that was not cancelled (None: no such annotation)."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    if len(done) > 1:
        problems.append(f"{where} has {len(done)} annotations: the first (id {done[0].get('id')}) is used")
    result = done[0].get("result") or []
    regions = []
    for r in (r for r in result if isinstance(r, dict) and isinstance(r.get("value"), dict)):
        keys = _COORDINATES.get(r.get("type"), ())
        if all(isinstance(r["value"].get(key), (int, float)) for key in keys):
            regions.append(r)
        else:  # e.g. a point that only prompted an interactive model
            problems.append(f"{where}: region {r.get('id')} ({r.get('type')}) lacks {'/'.join(keys)}: left out")
    return regions


_COORDINATES = {"keypointlabels": ("x", "y"), "rectanglelabels": ("x", "y", "width", "height")}


def _image_size(regions: list[dict], images: Path | None, file_name: str) -> tuple[int, int] | None:
    """``(height, width)`` of the image: the regions' ``original_height``/``original_width``, else the file's."""
    for r in regions:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_height"]), int(r["original_width"])
    if images is not None and (images / file_name).is_file():
        return read_image_size(images / file_name)
    return None


def _people(regions: list[dict], names: list[str], size: tuple[int, int], where: str,
            problems: list[str]) -> list[dict]:
    """The task's people: ``{"box": [x, y, w, h], "points": {index: (x, y)}}`` in continuous pixels."""
    h, w = size
    boxes = {r.get("id"): r for r in regions if r.get("type") == "rectanglelabels"}
    people: dict[Any, dict] = {}
    dropped = set()  # the rotated boxes: their keypoints go with them, without a line of their own
    for rid, r in boxes.items():
        v = r["value"]
        if v.get("rotation"):
            problems.append(f"{where}: box {rid} is rotated ({v['rotation']} degrees): left out with its keypoints")
            dropped.add(rid)
            continue
        people[rid] = {"box": [v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100, v["height"] * h / 100],
                       "points": {}}
    for r in (r for r in regions if r.get("type") == "keypointlabels"):
        if r.get("parentID") is not None and r["parentID"] in dropped:
            continue
        label = (r["value"].get("keypointlabels") or [None])[0]
        if label not in names:
            problems.append(f"{where}: label {label!r} is not a keypoint of the set ({', '.join(names[:4])}, ...): "
                            "left out")
            continue
        x, y = r["value"]["x"] * w / 100, r["value"]["y"] * h / 100
        owner = _owner(r, x, y, people, boxes)
        if owner is None:
            problems.append(f"{where}: keypoint {label!r} at ({x:.1f}, {y:.1f}) belongs to no single box (no "
                            "parentID, inside none or several): left out")
            continue
        person = people.setdefault(owner, {"box": None, "points": {}})
        if names.index(label) in person["points"]:
            problems.append(f"{where}: a second {label!r} for the same person: left out")
            continue
        person["points"][names.index(label)] = (x, y)
    boxless = people.get("no box")
    if boxless is not None and not _box_from_points(boxless, where, problems):
        del people["no box"]
    return list(people.values())


def _box_from_points(person: dict, where: str, problems: list[str]) -> bool:
    """Give a box-less person its points' extent as box; False (and a problem line) when that extent is under
    :data:`~fcpose.data.coco.MIN_BOX_SIZE` either way (one point, points in a line): training would drop the box,
    and with it the keypoints, without a word."""
    xs, ys = zip(*person["points"].values())
    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if box[2] < MIN_BOX_SIZE or box[3] < MIN_BOX_SIZE:
        n = len(xs)
        problems.append(f"{where}: no box, and the {n} keypoint{'s' * (n != 1)} span only {box[2]:.1f} x "
                        f"{box[3]:.1f} px (a person's box needs {MIN_BOX_SIZE:g} px each way): left out; draw a box "
                        "around the person")
        return False
    person["box"] = box
    return True


def _owner(region: dict, x: float, y: float, people: dict, boxes: dict) -> Any:
    """The person a keypoint belongs to: its ``parentID``, else the only box it lies in, else (a task without
    boxes) the one box-less person; None when none of these holds."""
    parent = region.get("parentID")
    if parent is not None:
        return parent if parent in people else None
    if not boxes:
        return "no box"
    inside = [rid for rid, p in people.items() if p["box"] is not None
              and p["box"][0] <= x <= p["box"][0] + p["box"][2] and p["box"][1] <= y <= p["box"][1] + p["box"][3]]
    return inside[0] if len(inside) == 1 else None


def _annotation(person: dict, k: int, ann_id: int, image_id: int) -> dict:
    """A COCO annotation of a person (keypoints as pixel indices)."""
    kps = [0.0] * (3 * k)
    for j, (x, y) in person["points"].items():
        kps[3 * j:3 * j + 3] = [x - 0.5, y - 0.5, 2]  # continuous coordinate -> COCO pixel index
    box = [round(float(v), 3) for v in person["box"]]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": box, "area": round(box[2] * box[3], 3),
            "iscrowd": 0, "keypoints": [round(float(v), 3) for v in kps], "num_keypoints": len(person["points"])}


def convert_label_studio(tasks: Any, keypoints: KeypointSetConfig, images: Path | None = None,
                         source: str = "the export") -> tuple[dict, list[str]]:
    """A Label Studio JSON export (the list of tasks) -> (a COCO-keypoints dict, the problem lines).

    Args:
        tasks: The export's JSON value.
        keypoints: The keypoint set: label names map to its names; its skeleton, flip pairs and sigmas go into the
            category, so the file trains as it is.
        images: The image folder, for sizes of images without regions and file names without the upload prefix.
        source: How messages name the export.

    Returns:
        The COCO dict and one line per problem (each left something out).

    Raises:
        InputError: ``tasks`` is not a Label Studio JSON export.
    """
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InputError(f"{source} is not a Label Studio JSON export (a list of tasks); export with the 'JSON' "
                         "format, not JSON-MIN or COCO")
    names, problems, coco_images, anns = list(keypoints.names), [], [], []
    unlabelled = 0
    for task in tasks:
        where = f"task {task.get('id')}"
        regions = _regions(task, where, problems)
        file_name = image_file_name(task, images)
        if regions is None or file_name is None:
            unlabelled += regions is None
            if file_name is None:
                problems.append(f"{where} has no image path in 'data': left out")
            continue
        size = _image_size(regions, images, file_name)
        rotated = any(r.get("image_rotation") for r in regions)
        if size is None or rotated:
            problems.append(f"{where}: the image was rotated in Label Studio: left out" if rotated else
                            f"{where}: no image size (no region, and {file_name} not found in --images): left out")
            continue
        image_id = len(coco_images) + 1
        coco_images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1],
                            "label_studio_task": task.get("id")})
        for person in _people(regions, names, size, where, problems):
            anns.append(_annotation(person, len(names), len(anns) + 1, image_id))
    if unlabelled:
        problems.append(f"{unlabelled} task{' has' if unlabelled == 1 else 's have'} no annotation (not labelled "
                        "yet, or skipped): left out")
    if not coco_images:
        raise InputError(f"{source}: no labelled task to convert" + (f" ({problems[0]})" if problems else ""))
    return {"info": {"description": f"converted from the Label Studio export {Path(source).name}"},
            "images": coco_images, "annotations": anns,
            "categories": [keypoints.coco_category(fcpose_fields=True)]}, problems


def keypoint_set(spec: str | None) -> KeypointSetConfig:
    """The keypoint set ``--keypoints`` names: a built-in set (``coco``, the default, or ``crowdpose``), a COCO
    annotation file (``.json``: its keypoint category) or a preset name or YAML file (its ``keypoints:`` section)."""
    if spec is None or spec in BUILTIN_KEYPOINT_SETS:
        return builtin_keypoint_set(spec or "coco")
    if spec.endswith(".json"):
        return keypoint_set_from_coco(spec, verbose=False)
    return load_config(spec).keypoints


def run_dataset_import(source_format: str, export: str, out: str, *, images: str | None = None,
                       keypoints: str | None = None) -> int:
    """``fcpose dataset import``: convert ``export`` and write ``out`` (atomically), one line per problem; 0."""
    if source_format != "label-studio":
        raise InputError(f"unknown export format {source_format!r} (known: label-studio)")
    folder = Path(images) if images is not None else None
    if folder is not None and not folder.is_dir():
        raise InputError(f"--images folder not found: {folder}")
    kset = keypoint_set(keypoints)
    coco, problems = convert_label_studio(read_json_file(export, "Label Studio export"), kset, folder, export)
    check_coco_dataset(coco, out)
    atomic_write_text(out, json.dumps(coco), "annotation file")
    for line in problems:
        print(f"problem: {line}")
    people = len(coco["annotations"])
    labelled = sum(a["num_keypoints"] for a in coco["annotations"])
    print(f"wrote {out}: {len(coco['images'])} images, {people} people, {labelled} labelled keypoints "
          f"({kset.num_keypoints} per person: {', '.join(kset.names[:3])}, ...)"
          + (f"; {len(problems)} problems above left items out" if problems else "")
          + f"; next: fcpose dataset check {out}" + (f" --images {images}" if images else ""))
    return 0

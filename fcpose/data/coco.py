"""COCO-keypoints datasets: the person category of COCO, or the single keypoint category of a custom set.

Coordinates convention: COCO stores keypoints as pixel *indices*; we add 0.5 at load so that they are continuous pixel
coordinates (pixel ``i`` spans ``[i, i + 1)``) — the results writer (:meth:`~fcpose.structures.PoseDetections.to_coco`)
subtracts it again. Boxes ``[x, y, w, h]`` become xyxy unchanged (they already are continuous coordinates).

Annotation handling (the way detectron2-based detectors train):

- ``iscrowd = 1`` -> an ignore region (its box): locations inside are neither positives nor negatives;
- people without labelled keypoints (``num_keypoints = 0``) are kept: they supervise the detector (boxes,
  classification) but give no keypoint loss (all their keypoints have v = 0);
- boxes are clipped to the image, and dropped if narrower or lower than 1 pixel;
- labelled keypoints outside the image become unlabelled;
- images without annotations are kept as negatives unless ``filter_empty=True``."""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import COCO_KEYPOINT_NAMES, COCO_SIGMAS, KeypointSetConfig, builtin_keypoint_set_of
from ..errors import ConfigError, InputError, one_line
from .augment import Target, clip_boxes_np
from .images import read_image

MIN_BOX_SIZE = 1.0  # pixels: narrower or lower boxes are dropped at load


# ---- Keypoint set from the annotation file ---------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def coco_problems(data: Any) -> Iterator[str]:
    """Every problem that keeps ``data`` from being a COCO keypoint annotation file, one line each in file order
    (at most one per image, category or annotation; none per annotation while 'images' or 'categories' is missing
    or empty): the checks of :func:`check_coco_dataset`, which stops at the first; ``fcpose dataset check`` lists
    them all."""
    if not isinstance(data, dict):
        yield (f"the top level is a JSON {type(data).__name__}, not an object with 'images', 'annotations' and "
               "'categories'")
        return
    ids: set[int] = set()
    num_kpts: dict[int, int] = {}
    images = yield from _each(data.get("images"), "images", lambda img, i: _check_image(img, i, ids), empty_ok=False)
    categories = yield from _each(data.get("categories"), "categories",
                                  lambda cat, i: _check_category(cat, i, num_kpts), empty_ok=False)
    if not (images and categories):  # the annotations are checked against them: one line each, of the same cause
        return
    yield from _each(data.get("annotations", []), "annotations",
                     lambda ann, i: _check_annotation(ann, i, ids, num_kpts), empty_ok=True)


def check_coco_dataset(data: Any, source: str) -> dict:
    """Check that ``data`` has the shape of a COCO keypoint annotation file; one-line
    :class:`~fcpose.errors.InputError` naming the first problem otherwise. Returns ``data``.

    Checked: a JSON object with a non-empty ``images`` list (integer ``id``, unique, and a ``file_name``
    string; ``width``/``height`` positive numbers when present), ``annotations`` a list (when present)
    of objects with an integer ``id``, an ``image_id`` of a listed image, an integer ``category_id``, a
    ``bbox`` of 4 finite numbers with non-negative width and height, ``keypoints`` (when present) 3 finite
    numbers per keypoint of its category, and ``categories`` a non-empty list of objects with an integer
    ``id`` (``keypoints``, when present, a list of names). (What COCO evaluation needs besides, ``area``, ``iscrowd``,
    ``num_keypoints``, is filled in by :func:`fcpose.engine.evaluation.complete_for_eval`.)"""
    for problem in coco_problems(data):
        raise InputError(f"{source} is not a valid COCO annotation file: {problem}")
    return data


class _Invalid(Exception):
    """A problem :func:`coco_problems` found (its message names it)."""


_LIST_PROBLEMS = {"images": ("no 'images' list", "its 'images' list is empty"),
                  "categories": ("no 'categories' list (or it is empty)",) * 2,
                  "annotations": ("'annotations' is not a list",) * 2}


def _each(items: Any, key: str, check, *, empty_ok: bool) -> Generator[str, None, bool]:
    """``check(item, index)`` on each item of the top-level list ``key``, yielding the problem of each item that
    has one; one problem for the list itself when it is not a (non-empty, unless ``empty_ok``) list. Returns
    whether the list itself is fine."""
    missing, empty = _LIST_PROBLEMS[key]
    if not isinstance(items, list):
        yield missing
        return False
    if not items and not empty_ok:
        yield empty
        return False
    for i, item in enumerate(items):
        try:
            check(item, i)
        except _Invalid as exc:
            yield str(exc)
    return True


def _check_image(img: Any, i: int, ids: set[int]) -> None:
    """Check ``images[i]``; its id joins ``ids``."""
    if not isinstance(img, dict):
        raise _Invalid(f"images[{i}] is not an object")
    if not _is_int(img.get("id")):
        raise _Invalid(f"images[{i}] has no integer 'id'")
    if img["id"] in ids:
        raise _Invalid(f"image id {img['id']} appears twice")
    ids.add(img["id"])
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        raise _Invalid(f"image {img['id']} has no 'file_name' string")
    for key in ("width", "height"):
        if key in img and not (_is_number(img[key]) and img[key] > 0):
            raise _Invalid(f"image {img['id']} has an invalid '{key}' ({img[key]!r})")


def _check_category(cat: Any, i: int, num_kpts: dict[int, int]) -> None:
    """Check ``categories[i]``; the number of its keypoint names (when it has a ``keypoints`` list) joins
    ``num_kpts``."""
    if not isinstance(cat, dict) or not _is_int(cat.get("id")):
        raise _Invalid(f"categories[{i}] is not an object with an integer 'id'")
    names = cat.get("keypoints")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Invalid(f"category {cat['id']} has a 'keypoints' entry that is not a list of names")
        num_kpts[cat["id"]] = len(names)


def _check_annotation(ann: Any, i: int, ids: set[int], num_kpts: dict[int, int]) -> None:
    """Check ``annotations[i]`` against the image ids and the categories' keypoint counts."""
    if not isinstance(ann, dict):
        raise _Invalid(f"annotations[{i}] is not an object")
    where = f"annotation {ann.get('id')!r} (annotations[{i}])"
    if not _is_int(ann.get("id")):
        raise _Invalid(f"annotations[{i}] has no integer 'id'")
    if not _is_int(ann.get("image_id")) or ann["image_id"] not in ids:
        raise _Invalid(f"{where} refers to image {ann.get('image_id')!r}, which is not in 'images'")
    if not _is_int(ann.get("category_id")):
        raise _Invalid(f"{where} has no integer 'category_id'")
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
            and box[2] >= 0 and box[3] >= 0):
        raise _Invalid(f"{where} has no valid 'bbox' [x, y, width, height]")
    kps = ann.get("keypoints")
    if kps is not None:
        k = num_kpts.get(ann["category_id"])
        if not isinstance(kps, list) or not all(_is_number(v) for v in kps):
            raise _Invalid(f"{where} has 'keypoints' that are not a list of numbers")
        if kps and k is not None and len(kps) != 3 * k:
            raise _Invalid(f"{where} has {len(kps)} keypoint values, expected {3 * k} (x, y, v for {k} keypoints)")
        if kps and len(kps) % 3:
            raise _Invalid(f"{where} has {len(kps)} keypoint values, not a multiple of 3")
    if "num_keypoints" in ann and not _is_int(ann["num_keypoints"]):
        raise _Invalid(f"{where} has a 'num_keypoints' that is not an integer")
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
        raise _Invalid(f"{where} has 'iscrowd' {ann['iscrowd']!r} (expected 0 or 1)")
    if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
        raise _Invalid(f"{where} has an invalid 'area' ({ann['area']!r})")


def read_json_file(path: str | Path, what: str = "annotation file") -> Any:
    """The JSON value of a file, unchecked; one-line InputError (naming it as ``what``) when it is missing or not
    JSON."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except PermissionError:
        raise InputError(f"cannot read {what} {path}: permission denied") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"cannot read {what} {path}: {one_line(exc)}") from None


def read_coco_json(ann_file: str | Path) -> dict:
    """Load and check (:func:`check_coco_dataset`) a COCO annotation file; one-line InputError otherwise."""
    return check_coco_dataset(read_json_file(ann_file), str(ann_file))



def select_keypoint_category(categories: list[dict], category_id: int | None = None, source: str = "") -> dict:
    """The category to train on: ``category_id`` if given, else COCO's ``person`` if it has keypoints, else
    the only category with a ``keypoints`` field."""
    where = f" in {source}" if source else ""
    if category_id is not None:
        for cat in categories:
            if cat.get("id") == category_id:
                if not cat.get("keypoints"):
                    raise InputError(f"category {category_id}{where} has no 'keypoints' field")
                return cat
        raise InputError(f"no category with id {category_id}{where}")
    with_kpts = [c for c in categories if c.get("keypoints")]
    people = [c for c in with_kpts if c.get("name") == "person"]
    if len(people) == 1:
        return people[0]
    if len(with_kpts) == 1:
        return with_kpts[0]
    if not with_kpts:
        raise InputError(f"no category with a 'keypoints' field{where}: not a keypoint dataset")
    names = ", ".join(f"{c.get('name')} ({c.get('id')})" for c in with_kpts)
    raise InputError(f"several keypoint categories{where} ({names}); choose one with category_id")


def _infer_flip_pairs(names: list[str]) -> list[list[int]]:
    """Pairs of names that differ only by left <-> right (``left_wrist`` / ``right_wrist``, ``Left`` ...)."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        for a, b in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
            if a in name:
                j = index.get(name.replace(a, b))
                if j is not None and j != i:
                    pairs.append([i, j])
                break
    return pairs


def category_sigmas(category: dict, label: str = "the category") -> list[float] | None:
    """The OKS sigmas of a keypoint category: its ``sigmas`` field; else those of a built-in set with exactly its
    names (CrowdPose's, :func:`~fcpose.config.builtin_keypoint_set`); else COCO's, by name, when every keypoint is
    one of COCO's 17 person keypoints (all of them, or a subset in any order, e.g. COCO without the eyes and ears);
    else None. The one rule for training (:func:`keypoint_set_from_category`) and evaluation."""
    if "sigmas" in category:
        try:
            return [float(s) for s in category["sigmas"]]
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: 'sigmas' must be a list of {len(category.get('keypoints') or [])} "
                              "numbers") from None
    names = category.get("keypoints")
    builtin = builtin_keypoint_set_of(names) if isinstance(names, list) else None
    if builtin is not None:
        return builtin.sigmas
    if isinstance(names, list) and names and all(n in COCO_KEYPOINT_NAMES for n in names) \
            and len(set(names)) == len(names):
        return [COCO_SIGMAS[COCO_KEYPOINT_NAMES.index(n)] for n in names]
    return None


def keypoint_set_from_category(category: dict, source: str = "", verbose: bool = True) -> KeypointSetConfig:
    """A :class:`KeypointSetConfig` from a COCO category dict. ``keypoints`` (names) and ``skeleton`` (1-based pairs,
    COCO style) are read as they are; optional ``flip_pairs`` (pairs of names or 0-based indices) and ``sigmas`` (K OKS
    sigmas) extend the format. COCO's own person keypoints get the standard flip pairs and sigmas when those fields are
    absent; any other set without ``flip_pairs`` gets the pairs whose names differ only by left/right; a set without
    ``sigmas`` is a :class:`~fcpose.errors.ConfigError` (OKS evaluation needs them). ``verbose``: say so when COCO's
    sigmas are taken by name (training passes False on all processes but the main one).

    Args:
        category: A COCO category dict with ``keypoints`` (names) and ``skeleton``; optionally ``flip_pairs`` and
            ``sigmas``.
        source: Where the category comes from, for messages.
        verbose: Print a note when COCO's sigmas are taken by name.

    Returns:
        The keypoint set, validated.

    Raises:
        ConfigError: A field is malformed, or custom keypoints have no ``sigmas``.
    """
    where = f" of {source}" if source else ""
    label = f"category '{category.get('name')}' (id {category.get('id')}){where}"
    names = category.get("keypoints")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{label}: 'keypoints' must be a non-empty list of names")
    k = len(names)
    builtin = builtin_keypoint_set_of(names)
    try:
        skeleton = [[int(a) - 1, int(b) - 1] for a, b in category.get("skeleton") or []]
    except (TypeError, ValueError):
        raise ConfigError(f"{label}: 'skeleton' must be a list of 1-based index pairs") from None
    indices = [i for pair in skeleton for i in pair]
    if builtin is not None and indices and min(indices) >= 0 and max(indices) >= k:
        # CrowdPose's own files carry COCO's 17-keypoint skeleton: its edges are drawing only, so the set's own is used
        if skeleton and verbose:
            print(f"note: {label}: its 'skeleton' names keypoints beyond its {k}; the built-in skeleton of these "
                  "keypoints is used instead", file=sys.stderr)
        skeleton = copy.deepcopy(builtin.skeleton)
    for a, b in skeleton:
        if not (0 <= a < k and 0 <= b < k):
            raise ConfigError(f"{label}: 'skeleton' pair [{a + 1}, {b + 1}] is outside 1..{k}: skeleton pairs "
                              "number the keypoints from 1, as in COCO (and CVAT's export)")

    if "flip_pairs" in category:
        flip_pairs = []
        for pair in category["flip_pairs"]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"{label}: invalid flip pair {pair!r}")
            idx = []
            for item in pair:
                if isinstance(item, str):
                    if item not in names:
                        raise ConfigError(f"{label}: flip pair names an unknown keypoint {item!r}")
                    idx.append(names.index(item))
                elif isinstance(item, int) and not isinstance(item, bool):
                    idx.append(item)
                else:
                    raise ConfigError(f"{label}: invalid flip pair {pair!r}")
            flip_pairs.append(idx)
    elif builtin is not None:
        flip_pairs = copy.deepcopy(builtin.flip_pairs)
    else:
        flip_pairs = _infer_flip_pairs(names)

    sigmas = category_sigmas(category, label)
    if sigmas is None:
        unknown = [n for n in names if n not in COCO_KEYPOINT_NAMES]
        raise ConfigError(f"{label} has {k} custom keypoints but no 'sigmas' field: add the {k} OKS sigmas "
                          "(one per keypoint, as in the COCO API) to the category"
                          + (f" (not COCO keypoint names: {', '.join(unknown[:5])})" if unknown else ""))
    if "sigmas" not in category and builtin is None and verbose:
        print(f"note: {label}: its {k} keypoints are COCO person keypoints (by name) and it has no 'sigmas' "
              "field, so COCO's sigmas are used for them", file=sys.stderr)
    kset = KeypointSetConfig(names=list(names), skeleton=skeleton, flip_pairs=flip_pairs, sigmas=sigmas)
    try:
        kset.validate()
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    return kset


def keypoint_set_from_coco(ann_file: str | Path, category_id: int | None = None, verbose: bool = True
                           ) -> KeypointSetConfig:
    """The keypoint set (names, skeleton, flip pairs, sigmas) of a COCO-keypoints annotation file.

    Args:
        ann_file: A COCO-keypoints annotation file.
        category_id: The keypoint category; default: ``person`` or the only keypoint category.
        verbose: Print a note when COCO's sigmas are taken by name.

    Returns:
        The keypoint set, validated.

    Raises:
        InputError: The file is missing or not COCO-style JSON, or has no such (or several) keypoint categories.
        ConfigError: The category is malformed.
    """
    data = read_coco_json(ann_file)
    cat = select_keypoint_category(data.get("categories") or [], category_id, str(ann_file))
    return keypoint_set_from_category(cat, str(ann_file), verbose)


# ---- Dataset ---------------------------------------------------------------------------------
def parse_annotations(anns: list[dict], num_keypoints: int, height: float | None, width: float | None,
                      source: str, crowd: str = "ignore", min_box_size: float = MIN_BOX_SIZE) -> Target:
    """The training target of one image's annotations, as the loader keeps them (see the module's docstring)."""
    boxes, keypoints, ignore = [], [], []
    for ann in anns:
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise InputError(f"{source}: annotation {ann.get('id')} has no valid 'bbox'")
        x, y, w, h = (float(v) for v in bbox)
        box = np.array([[x, y, x + w, y + h]], np.float32)
        if height is not None and width is not None:
            box = clip_boxes_np(box, height, width)
        if box[0, 2] - box[0, 0] < min_box_size or box[0, 3] - box[0, 1] < min_box_size:
            continue
        if ann.get("iscrowd", 0):
            if crowd == "ignore":
                ignore.append(box[0])
            continue
        kp = ann.get("keypoints")
        if kp:
            if len(kp) != 3 * num_keypoints:
                raise InputError(f"{source}: annotation {ann.get('id')} has {len(kp)} keypoint values, "
                                 f"expected {3 * num_keypoints}")
            kp = np.asarray(kp, np.float32).reshape(num_keypoints, 3)
            labelled = kp[:, 2] > 0
            kp[labelled, :2] += 0.5  # pixel index -> continuous coordinate of the pixel centre
            if height is not None and width is not None:  # outside the image: unlabelled (as detectron2)
                labelled &= (kp[:, 0] >= 0) & (kp[:, 0] <= width) & (kp[:, 1] >= 0) & (kp[:, 1] <= height)
            kp[~labelled] = 0.0
        else:
            kp = np.zeros((num_keypoints, 3), np.float32)
        boxes.append(box[0])
        keypoints.append(kp)
    return {
        "boxes": np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
        "keypoints": np.stack(keypoints) if keypoints else np.zeros((0, num_keypoints, 3), np.float32),
        "ignore_boxes": np.stack(ignore).astype(np.float32) if ignore else np.zeros((0, 4), np.float32),
    }


class CocoKeypointDataset(Dataset):
    """COCO-keypoints annotations + images -> training items.

    Args:
        ann_file: COCO-style JSON (``images``, ``annotations``, ``categories`` with ``keypoints``).
        image_dir: folder the ``file_name`` of each image is relative to.
        keypoints: the keypoint set the model is trained for; ``None`` reads it from the file
            (:func:`keypoint_set_from_coco`). Its names must equal the category's.
        transform: ``(image, target, rng) -> (image, target)`` (see :mod:`fcpose.data.augment`), or None.
        category_id: the keypoint category to use (default: ``person`` or the only keypoint category).
        filter_empty: drop images without any (non-crowd) person.
        crowd: ``"ignore"`` (crowd boxes become ignore regions) or ``"drop"`` (removed, as the official trainer).
        min_keypoints: drop images with fewer labelled keypoints in all (detectron2's
            ``MIN_KEYPOINTS_PER_IMAGE``; the official FCPose recipe uses 1).
        min_box_size: boxes (clipped to the image) narrower or lower than this many pixels are dropped.
        seed: with a seed, the augmentation of item ``i`` in epoch ``e`` uses
            ``numpy.random.default_rng([seed, e, i])`` — the same whatever the worker or process; call
            :meth:`set_epoch` each epoch. Without one, fresh OS entropy per item.

    An item is a dict: ``image`` uint8 ``[3, H, W]`` RGB (after the transform), ``boxes`` float ``[G, 4]`` xyxy,
    ``keypoints`` float ``[G, K, 3]`` (x, y, v), ``ignore_boxes`` float ``[C, 4]`` (all in pixels of ``image``),
    ``image_id`` int, ``file_name`` str, ``orig_size`` (h, w) of the file, ``image_size`` (h, w) of ``image``.

    Raises:
        ConfigError: An invalid ``crowd``, a keypoint set that differs from the file's, or a category without usable
            keypoints.
        InputError: The file is missing or not COCO-style JSON, or has no such (or several) keypoint categories.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, keypoints: KeypointSetConfig | None = None,
                 transform=None, *, category_id: int | None = None, filter_empty: bool = False,
                 seed: int | None = None, crowd: str = "ignore", min_keypoints: int = 0,
                 min_box_size: float = MIN_BOX_SIZE):
        if crowd not in ("ignore", "drop"):
            raise ConfigError(f"crowd must be 'ignore' or 'drop', got {crowd!r}")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        data = read_coco_json(self.ann_file)
        source = str(self.ann_file)
        category = select_keypoint_category(data.get("categories") or [], category_id, source)
        self.category_id = int(category["id"])
        if keypoints is None:
            keypoints = keypoint_set_from_category(category, source)
        elif list(keypoints.names) != list(category["keypoints"]):
            raise ConfigError(f"the configured keypoints ({keypoints.num_keypoints}: {', '.join(keypoints.names)}) "
                              f"differ from those of {source} ({len(category['keypoints'])}: "
                              f"{', '.join(category['keypoints'])})")
        self.keypoints = keypoints
        self.transform = transform
        self.seed = seed
        self.epoch = 0

        by_image: dict[Any, list[dict]] = {}
        for ann in data.get("annotations") or []:
            if ann.get("category_id") == self.category_id:
                by_image.setdefault(ann.get("image_id"), []).append(ann)
        self.records: list[dict] = []
        k = keypoints.num_keypoints
        for img in data["images"]:
            if "id" not in img or "file_name" not in img:
                raise InputError(f"{source}: an image entry lacks 'id' or 'file_name'")
            h, w = img.get("height"), img.get("width")
            target = parse_annotations(by_image.get(img["id"], []), k, h, w, source, crowd, min_box_size)
            if filter_empty and target["boxes"].shape[0] == 0:
                continue
            if min_keypoints > 0 and int((target["keypoints"][..., 2] > 0).sum()) < min_keypoints:
                continue
            self.records.append({"image_id": img["id"], "file_name": img["file_name"],
                                 "height": h, "width": w, "target": target})

    def __len__(self) -> int:
        """The number of items (images kept).

        Returns:
            The number of items.
        """
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the seeded augmentation draws for (call it at the start of each epoch).

        Args:
            epoch: The epoch number.
        """
        self.epoch = int(epoch)

    def annotations(self, index: int) -> dict:
        """The record of item ``index`` without reading the image (targets in original-image pixels).

        Args:
            index: The item's index.

        Returns:
            ``image_id``, ``file_name``, ``height``, ``width`` and ``target`` (``boxes``, ``keypoints``,
            ``ignore_boxes``;
            a copy).
        """
        rec = self.records[index]
        return {**rec, "target": {k: v.copy() for k, v in rec["target"].items()}}

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of item ``index`` in the current epoch (see ``seed``).

        Args:
            index: The item's index.

        Returns:
            A fresh generator.
        """
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict:
        """Item ``index``: its image read and transformed, with its targets (the dict described above).

        Args:
            index: The item's index.

        Returns:
            The item.

        Raises:
            InputError: The image cannot be read or its size differs from its annotation's.
        """
        rec = self.annotations(index)
        path = self.image_dir / rec["file_name"]
        image = read_image(path)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        if rec["height"] is not None and rec["width"] is not None and orig_size != (rec["height"], rec["width"]):
            raise InputError(f"image {path} is {orig_size[0]}x{orig_size[1]} (h x w) but its annotation says "
                             f"{rec['height']}x{rec['width']}")
        target = rec["target"]
        if self.transform is not None:
            image, target = self.transform(image, target, self.rng(index))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.ascontiguousarray(target["boxes"], np.float32)).reshape(-1, 4),
            "keypoints": torch.from_numpy(np.ascontiguousarray(target["keypoints"], np.float32)).reshape(
                -1, self.keypoints.num_keypoints, 3),
            "ignore_boxes": torch.from_numpy(np.ascontiguousarray(target["ignore_boxes"], np.float32)).reshape(-1, 4),
            "image_id": int(rec["image_id"]),
            "file_name": rec["file_name"],
            "orig_size": orig_size,
            "image_size": (int(image.shape[0]), int(image.shape[1])),
        }

"""Datasets: synthetic scenes written as a COCO person-keypoint dataset (JPEG images + one JSON), and the
``fcpose synth`` entry point."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ...config import SYNTH_DESCRIPTION, KeypointSetConfig
from ...errors import InputError
from ...fileio import atomic_write_text
from .scene import MIN_SIDE, check_size, render_scene

DEFAULT_IMAGE_SIZE = (384, 512)  # (H, W)
# A small set of sizes to mix when ``generate_dataset(image_size=SIZE_CHOICES)``.
SIZE_CHOICES = ((384, 512), (512, 384), (384, 384), (320, 480), (448, 576))
JPEG_QUALITY = 92


def coco_categories() -> list[dict]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return [KeypointSetConfig().coco_category()]


def _resolve_sizes(image_size) -> list[tuple[int, int]]:
    """The ``(height, width)`` sizes to draw from (checked) for ``generate_dataset(image_size=...)``."""
    if image_size is None:
        return [DEFAULT_IMAGE_SIZE]
    one = len(image_size) == 2 and all(isinstance(v, (int, np.integer)) for v in image_size)
    sizes = [image_size] if one else list(image_size)
    out = []
    for s in sizes:
        if len(s) != 2:
            raise InputError(f"image sizes are (height, width) pairs, got {s!r}")
        check_size(int(s[0]), int(s[1]))
        out.append((int(s[0]), int(s[1])))
    if not out:
        raise InputError("image_size is empty")
    return out


_IMAGE_NAME = re.compile(r"^\d{6,}\.jpg$")


def _write_jpeg(img_dir: Path, name: str, image: np.ndarray) -> None:
    """The RGB ``image`` as ``img_dir/name`` (through a temporary file: an interrupted run leaves whole images only)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV failure
        raise InputError(f"cannot encode {name}")
    tmp = img_dir / f".{name}.part"
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, img_dir / name)


def generate_dataset(out_dir: str | Path, num_images: int, seed: int = 0, *, min_people: int = 1, max_people: int = 8,
                     image_size: tuple[int, int] | Sequence[tuple[int, int]] | None = DEFAULT_IMAGE_SIZE,
                     progress: bool = True) -> Path:
    """Write ``num_images`` synthetic scenes as a COCO person-keypoint dataset.

    Layout: ``out_dir/images/000001.jpg ...`` (JPEG quality 92), ``out_dir/annotations.json`` and a 3-line
    ``out_dir/README.txt``. ``image_size`` is one ``(H, W)`` or a sequence of them to sample from per image (e.g.
    :data:`SIZE_CHOICES`). The people count per image is uniform in ``[min_people, max_people]``. Image ``i`` (1-based
    id) is drawn from ``numpy.random.default_rng([seed, i])``, so a dataset is deterministic for a seed and its first
    images do not depend on ``num_images``. Stale ``NNNNNN.jpg`` images of a previous, larger run in ``out_dir/images``
    are removed. Returns the path of ``annotations.json``."""
    if int(num_images) < 0:
        raise InputError(f"num_images must be >= 0, got {num_images}")
    if not 0 <= int(min_people) <= int(max_people):
        raise InputError(f"need 0 <= min_people <= max_people, got {min_people}, {max_people}")
    sizes = _resolve_sizes(image_size)
    out = Path(out_dir)
    img_dir = out / "images"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {img_dir}: {exc.strerror or exc}") from None

    from tqdm import tqdm

    images, annotations = [], []
    names = set()
    for image_id in tqdm(range(1, int(num_images) + 1), desc="synth", disable=not progress, unit="img"):
        rng = np.random.default_rng([int(seed), image_id])
        h, w = sizes[int(rng.integers(len(sizes)))] if len(sizes) > 1 else sizes[0]
        n = int(rng.integers(int(min_people), int(max_people) + 1))
        image, anns = render_scene(rng, h, w, n)
        name = f"{image_id:06d}.jpg"
        names.add(name)
        _write_jpeg(img_dir, name, image)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    for stale in img_dir.iterdir():
        if _IMAGE_NAME.match(stale.name) and stale.name not in names:
            stale.unlink()

    size_text = " or ".join(f"{h}x{w}" for h, w in sizes)
    data = {
        "info": {"description": SYNTH_DESCRIPTION, "seed": int(seed)},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    ann_path = out / "annotations.json"
    atomic_write_text(ann_path, json.dumps(data, separators=(",", ":")), what="annotation file")
    (out / "README.txt").write_text(
        "Synthetic multi-person pose dataset written by fcpose.data.synthetic.generate_dataset.\n"
        f"seed={int(seed)}, images={int(num_images)}, people per image {min_people}-{max_people}, "
        f"image size (HxW) {size_text}, {len(annotations)} people.\n"
        "images/*.jpg + annotations.json (COCO person keypoints, COCO pixel-index convention).\n"
    )
    return ann_path


def synth_main(out: str, num: int, seed: int, min_people: int, max_people: int, height: int | None,
               width: int | None) -> int:
    """Entry point of ``fcpose synth --out DIR --num N --seed S``: writes the dataset and prints a
    one-line summary. A missing height or width keeps the default 3:4 aspect. Returns 0."""
    dh, dw = DEFAULT_IMAGE_SIZE
    if height is None and width is None:
        height, width = dh, dw
    elif height is None:
        height = max(MIN_SIDE, int(round(int(width) * dh / dw)))
    elif width is None:
        width = max(MIN_SIDE, int(round(int(height) * dw / dh)))
    path = generate_dataset(out, num, seed, min_people=min_people, max_people=max_people,
                            image_size=(int(height), int(width)), progress=True)
    with open(path) as f:
        data = json.load(f)
    print(f"wrote {len(data['images'])} images with {len(data['annotations'])} people to {path}")
    return 0

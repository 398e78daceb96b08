"""Drawing detected people (box, score, keypoints, skeleton) on an RGB image, and saving images.

Coordinates are continuous pixel coordinates of the image being drawn on: pixel ``i`` spans
``[i, i + 1)``, so the centre of the top-left pixel is ``(0.5, 0.5)``. Keypoints are drawn with
sub-pixel precision at ``(x - 0.5, y - 0.5)`` in OpenCV's pixel-centre frame."""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError, one_line

Color = tuple[int, int, int]

# One colour per person (RGB), cycled: well separated, saturated hues (Tableau 10 without grey).
PERSON_COLORS: list[Color] = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def _edge_color(index: int) -> Color:
    """Colour of skeleton edge ``index``: golden-ratio hue steps, so consecutive edges (COCO lists
    each left limb next to its right counterpart) get clearly different hues."""
    hue = (0.08 + index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


# Fractional bits for OpenCV's sub-pixel drawing (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 4
DEFAULT_KEYPOINT_THRESHOLD = {"softmax": 0.05, "logit": 0.0}  # by the model's keypoint score type


def keypoint_draw_threshold(cfg, threshold: float | None = None) -> float:
    """``threshold``, or the default above for ``cfg``'s keypoint score (a probability, or the official logit)."""
    return DEFAULT_KEYPOINT_THRESHOLD[cfg.model.keypoint.score] if threshold is None else threshold
_SCALE = 1 << _SHIFT
# Points farther than this from the origin are skipped (OpenCV's fixed-point maths overflows
# long before int32 limits once the coordinates are shifted).
_COORD_LIMIT = 1e6


def _to_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):  # a torch tensor; torch is not imported here
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
    return np.asarray(x)


def default_line_width(height: int, width: int) -> int:
    """``max(1, round(min(h, w) / 300))``: 1 px up to ~450 px, 3 px at 800 px, ..."""
    return max(1, round(min(height, width) / 300))


def _fixed(v: float) -> int:
    return int(round((v - 0.5) * _SCALE))


def _valid_point(x: float, y: float) -> bool:
    return math.isfinite(x) and math.isfinite(y) and abs(x) <= _COORD_LIMIT and abs(y) <= _COORD_LIMIT


def draw_poses(image_rgb: Any, boxes: Any, scores: Any, keypoints: Any, skeleton: Sequence[Sequence[int]], *,
               keypoint_threshold: float = 0.0, box_color: Color | None = None, line_width: int | None = None,
               show_scores: bool = True, colors: Sequence[Color] | None = None,
               labels: Sequence[str] | None = None) -> np.ndarray:
    """Draw people on a copy of an image -> a new ``uint8 [H, W, 3]`` RGB image.

    image_rgb: ``uint8`` ``[H, W, 3]`` RGB image (numpy array or torch tensor); not modified.
    boxes: ``[N, 4]`` boxes ``(x0, y0, x1, y1)`` in the image's pixels, or ``None``.
    scores: ``[N]`` person scores (drawn above the boxes), or ``None``.
    keypoints: ``[N, K, 3]`` ``(x, y, score)`` in continuous pixel coordinates of the image
        (``[N, K, 2]`` means every keypoint is visible), or ``None``.
    skeleton: 0-based ``[a, b]`` keypoint index pairs joined by a line.
    keypoint_threshold: a keypoint is drawn only if its score is ``> keypoint_threshold``;
        an edge only if both of its ends are drawn.
    box_color: RGB colour of every box; ``None`` uses each person's palette colour.
    line_width: pixels; ``None`` scales with the image (:func:`default_line_width`).
    show_scores: write each person's score above its box.
    colors: one RGB colour per person (e.g. by track id) instead of the cycled palette.
    labels: one text per person (e.g. ``"id 7"``) written instead of the score.

    Boxes and joints are coloured per person (:data:`PERSON_COLORS`, cycled), skeleton edges per
    edge index, so left and right limbs differ. People are drawn in increasing score order, so the
    most confident ends up on top. Non-finite or huge coordinates are skipped."""
    out = _image_copy(image_rgb)
    arrays = {"boxes": _to_numpy(boxes), "scores": _to_numpy(scores), "keypoints": _to_numpy(keypoints)}
    n = _count_people(arrays)
    if n == 0:
        return out
    boxes_np, scores_np, kpts_np = _people_arrays(n, **arrays)
    edges = _skeleton_edges(skeleton, kpts_np.shape[1]) if kpts_np is not None else []

    h, w = out.shape[:2]
    lw = int(line_width) if line_width is not None else default_line_width(h, w)
    lw = max(1, lw)
    radius = lw + 2

    order = range(n)
    if scores_np is not None:
        order = sorted(order, key=lambda i: (np.nan_to_num(scores_np[i], nan=-np.inf), -i))

    for i in order:
        color = tuple(colors[i]) if colors is not None else PERSON_COLORS[i % len(PERSON_COLORS)]
        if boxes_np is not None:
            score = None if scores_np is None or not show_scores else float(scores_np[i])
            label = labels[i] if labels is not None else None
            _draw_box(out, boxes_np[i], box_color or color, lw, score, label)
        if kpts_np is not None:
            _draw_skeleton(out, kpts_np[i], edges, color, lw, radius, keypoint_threshold)
    return out


def _image_copy(image_rgb: Any) -> np.ndarray:
    """A contiguous copy of a ``uint8`` ``[H, W, 3]`` image (anything else is a ``ValueError``)."""
    image = _to_numpy(image_rgb)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = "None" if image is None else f"{image.dtype} {image.shape}"
        raise ValueError(f"draw_poses expects a uint8 [H, W, 3] RGB image, got {got}")
    return np.ascontiguousarray(image).copy()


def _count_people(arrays: dict[str, np.ndarray | None]) -> int:
    """The number of people the given arrays agree on (0 when none is given)."""
    counts = {name: arr.shape[0] if arr.ndim else 0 for name, arr in arrays.items() if arr is not None}
    if len(set(counts.values())) > 1:
        raise ValueError(f"draw_poses: inconsistent numbers of people {counts}")
    return next(iter(counts.values()), 0)


def _people_arrays(n: int, boxes: np.ndarray | None, scores: np.ndarray | None, keypoints: np.ndarray | None
                   ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Boxes ``[n, 4]``, scores ``[n]`` and keypoints ``[n, K, 2 or 3]`` as float64 (``None`` stays ``None``)."""
    if boxes is not None:
        boxes = boxes.astype(np.float64, copy=False).reshape(n, -1)
        if boxes.shape[1] != 4:
            raise ValueError(f"draw_poses: boxes must be [N, 4], got {tuple(boxes.shape)}")
    if scores is not None:
        scores = scores.astype(np.float64, copy=False).reshape(n)
    if keypoints is not None:
        keypoints = keypoints.astype(np.float64, copy=False)
        if keypoints.ndim != 3 or keypoints.shape[2] not in (2, 3):
            raise ValueError(f"draw_poses: keypoints must be [N, K, 3], got {tuple(keypoints.shape)}")
    return boxes, scores, keypoints


def _skeleton_edges(skeleton: Sequence[Sequence[int]], num_k: int) -> list[tuple[int, int]]:
    """The skeleton's ``(a, b)`` pairs, each end checked against the ``num_k`` keypoints."""
    edges = [(int(a), int(b)) for a, b in skeleton]
    for a, b in edges:
        if not (0 <= a < num_k and 0 <= b < num_k):
            raise ValueError(f"draw_poses: skeleton edge {[a, b]} is out of range for {num_k} keypoints")
    return edges


def _draw_box(img: np.ndarray, box: np.ndarray, color: Color, lw: int, score: float | None,
              label: str | None = None) -> None:
    if not np.all(np.isfinite(box)):
        return
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    # Pixels the box covers: floor(x0) .. ceil(x1) - 1. Clipping an axis-aligned rectangle to a
    # margin around the image changes nothing visible.
    margin = 2 * lw + 2
    px0 = int(np.clip(math.floor(x0), -margin, w + margin))
    py0 = int(np.clip(math.floor(y0), -margin, h + margin))
    px1 = int(np.clip(math.ceil(x1) - 1, -margin, w + margin))
    py1 = int(np.clip(math.ceil(y1) - 1, -margin, h + margin))
    px1, py1 = max(px0, px1), max(py0, py1)
    cv2.rectangle(img, (px0, py0), (px1, py1), color, lw, cv2.LINE_AA)
    if label is None and (score is None or not math.isfinite(score)):
        return
    text = label if label is not None else f"{score:.2f}"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * lw
    thickness = max(1, lw // 2)
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = max(1, lw)
    label_h = th + baseline + 2 * pad
    # Above the box if there is room, else just inside its top edge; kept inside the image.
    ty0 = py0 - label_h if py0 - label_h >= 0 else max(py0, 0)
    ty0 = min(ty0, max(h - label_h, 0))
    tx0 = int(np.clip(px0, 0, max(w - tw - 2 * pad, 0)))
    cv2.rectangle(img, (tx0, ty0), (tx0 + tw + 2 * pad, ty0 + label_h), color, cv2.FILLED)
    text_color = (0, 0, 0) if sum(color) > 3 * 150 else (255, 255, 255)
    cv2.putText(img, text, (tx0 + pad, ty0 + pad + th), font, scale, text_color, thickness, cv2.LINE_AA)


def _draw_skeleton(img: np.ndarray, kpts: np.ndarray, edges: list[tuple[int, int]], color: Color, lw: int, radius: int,
                   threshold: float) -> None:
    k = kpts.shape[0]
    xs, ys = kpts[:, 0], kpts[:, 1]
    kscores = kpts[:, 2] if kpts.shape[1] > 2 else np.full(k, np.inf)
    visible = [bool(kscores[j] > threshold) and _valid_point(xs[j], ys[j]) for j in range(k)]
    pts = [(_fixed(xs[j]), _fixed(ys[j])) if visible[j] else None for j in range(k)]
    for e, (a, b) in enumerate(edges):
        pa, pb = pts[a], pts[b]
        if pa is not None and pb is not None:
            cv2.line(img, pa, pb, _edge_color(e), lw, cv2.LINE_AA, _SHIFT)
    for p in pts:
        if p is not None:
            cv2.circle(img, p, radius * _SCALE, color, cv2.FILLED, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, p, radius * _SCALE, (255, 255, 255), 1, cv2.LINE_AA, _SHIFT)


def save_image(path: str | Path, image_rgb: Any, quality: int = 95) -> Path:
    """Write a ``uint8`` ``[H, W, 3]`` RGB (or ``[H, W]`` gray) image with PIL; the format follows
    the suffix (``.png``, ``.jpg``, ...). Parent folders are created. Returns the path; :class:`InputError` for an
    unknown suffix, or a file or folder that cannot be written."""
    path = Path(path)
    image = _to_numpy(image_rgb)
    if image is None or image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        got = "None" if image is None else f"{image.dtype} {image.shape}"
        raise ValueError(f"save_image expects a uint8 [H, W, 3] RGB image, got {got}")
    tmp = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(np.ascontiguousarray(image))
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"unknown file extension: {path.suffix or '(none)'}")
        # a hidden temporary file renamed over the target: an interrupted run leaves no half-written image
        if fmt == "JPEG":
            pil.save(tmp, format=fmt, quality=quality)
        else:
            pil.save(tmp, format=fmt)
        os.replace(tmp, path)
    except ValueError as exc:  # PIL: unknown extension
        raise InputError(f"cannot save image {path}: {one_line(exc)}") from None
    except OSError as exc:
        raise InputError(f"cannot save image {path}: {exc.strerror or one_line(exc)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

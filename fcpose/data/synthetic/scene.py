"""Scenes: 0..N figures placed on a textured background (people lower in the image in front), with
optional distractors behind and in front of them, rendered with COCO annotations and per-person masks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ...errors import InputError
from .background import background, distractor
from .figure import NUM_KEYPOINTS, Figure, build_figure, face_labelled, palette, unit_extent
from .pose import sample_figure_pose
from .shapes import Shape, draw

MIN_FIGURE_PX = 60.0  # smallest figure height (px) when the image allows it
MAX_FIGURE_FRAC = 0.9  # largest figure height as a fraction of the image height
MIN_SIDE = 64  # smallest image height and width


class Rendered(NamedTuple):
    """A rendered scene.

    ``image``: (H, W, 3) uint8 RGB. ``annotations``: COCO person annotations without ``id`` and
    ``image_id`` (keypoints in COCO's pixel-index convention, see the package doc), in drawing
    order. ``full_masks`` / ``visible_masks``: per annotation (H, W) bool masks of the whole figure
    (including parts hidden by figures in front) and of its pixels that remain visible."""

    image: np.ndarray
    annotations: list[dict]
    full_masks: list[np.ndarray]
    visible_masks: list[np.ndarray]


@dataclass
class Scene:
    """A sampled scene; :meth:`render` rasterises it (deterministically)."""

    height: int
    width: int
    background: np.ndarray  # (H, W, 3) uint8 RGB, background distractors included
    figures: list[Figure]  # in drawing order: back to front
    occluders: list[list[tuple[Shape, tuple]]]  # distractor shapes drawn in front of all figures
    grain: float  # std of the final per-pixel noise (0: none)
    grain_seed: int
    blur: bool

    def render(self, skip: Iterable[int] = ()) -> Rendered:
        """Draw the scene; figures whose index (in :attr:`figures`) is in ``skip`` are left out
        (their annotations and masks too)."""
        skip = set(skip)
        h, w = self.height, self.width
        img = self.background.copy()
        owner = np.full((h, w), -1, np.int16)
        kept: list[tuple[int, Figure, np.ndarray]] = []
        for i, fig in enumerate(self.figures):
            if i in skip:
                continue
            lab = np.zeros((h, w), np.uint8)
            for part in fig.parts:
                for shape, colour, in_mask in part.shapes:
                    draw(img, shape, colour, cv2.LINE_AA)
                    if in_mask:
                        draw(lab, shape, part.label, cv2.LINE_8)
            owner[lab > 0] = i
            kept.append((i, fig, lab))
        if self.occluders:
            occ = np.zeros((h, w), np.uint8)
            for shapes in self.occluders:
                for shape, colour in shapes:
                    draw(img, shape, colour, cv2.LINE_AA)
                    draw(occ, shape, 1, cv2.LINE_8)
            owner[occ > 0] = -2
        if self.blur:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        if self.grain > 0:
            noise = np.random.default_rng(self.grain_seed).normal(0, self.grain, (h, w, 1)).astype(np.float32)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

        anns = [_annotation(fig, lab, owner, i) for i, fig, lab in kept]
        return Rendered(img, anns, [lab > 0 for _, _, lab in kept], [owner == i for i, _, _ in kept])


def _annotation(fig: Figure, lab: np.ndarray, owner: np.ndarray, i: int) -> dict:
    """The COCO annotation of figure ``i`` from its part-label map ``lab`` and the scene's ``owner`` map (per
    pixel the index of the figure on top, -1 background, -2 an occluder): a joint is visible (v = 2) when
    its figure is on top there and the part under it is one the joint lies on."""
    h, w = lab.shape
    x, y, bw, bh = cv2.boundingRect(lab)
    kps: list[float] = []
    for k in range(NUM_KEYPOINTS):
        u, v = float(fig.keypoints[k, 0]), float(fig.keypoints[k, 1])
        if not (fig.labelled[k] and 0.0 <= u < w and 0.0 <= v < h):
            kps += [0.0, 0.0, 0]
            continue
        px, py = int(u), int(v)
        seen = owner[py, px] == i and (fig.owners[k] >> int(lab[py, px])) & 1
        kps += [round(u - 0.5, 2), round(v - 0.5, 2), 2 if seen else 1]
    return {
        "category_id": 1,
        "keypoints": kps,
        "num_keypoints": int(sum(1 for s in kps[2::3] if s > 0)),
        "bbox": [int(x), int(y), int(bw), int(bh)],
        "area": int(cv2.countNonZero(lab)),
        "iscrowd": 0,
    }


def check_size(height: int, width: int) -> None:
    """One-line InputError for an image smaller than MIN_SIDE x MIN_SIDE."""
    if int(height) < MIN_SIDE or int(width) < MIN_SIDE:
        raise InputError(f"synthetic images need at least {MIN_SIDE}x{MIN_SIDE} pixels, got {height}x{width}")


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection over the smaller area of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1e-6)


def _place_figure(rng: np.random.Generator, h: int, w: int, num_people: int, boxes: list, bg_small: np.ndarray
                  ) -> Figure:
    """A random figure, sized and placed (the least overlap with ``boxes`` of 12 tries; its box is added
    to them), in colours that stand out from the background under it."""
    pose = sample_figure_pose(rng)
    if rng.random() < 0.04:
        roll = math.radians(rng.uniform(-90, 90))
    else:
        roll = math.radians(float(np.clip(rng.normal(0, 6), -20, 20)))
    # Extent of the projected figure at unit scale.
    unit_kps, (x0, y0, x1, y1) = unit_extent(pose, roll)
    labelled = face_labelled(pose)
    ext_h, ext_w = max(y1 - y0, 1e-3), max(x1 - x0, 1e-3)
    lo = min(MIN_FIGURE_PX, 0.5 * h)
    hi = MAX_FIGURE_FRAC * h
    if rng.random() > 0.25:
        hi = max(lo * 1.5, hi / (1.0 + 0.2 * (num_people - 1)))
    target = math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo + 1))))
    scale = target / max(ext_h, 0.6)
    bw, bh = ext_w * scale, ext_h * scale
    partial = rng.random() < 0.25

    def candidate() -> tuple[float, float]:
        if partial:
            return rng.uniform(-0.4 * bw, w - 0.6 * bw), rng.uniform(-0.4 * bh, h - 0.6 * bh)
        return rng.uniform(min(0.0, w - bw), max(0.0, w - bw)), rng.uniform(min(0.0, h - bh), max(0.0, h - bh))

    best, best_cost = None, math.inf
    for _ in range(12):
        bx, by = candidate()
        box = (bx, by, bx + bw, by + bh)
        offset = np.array([bx - x0 * scale, by - y0 * scale])
        kp = unit_kps * scale + offset
        inside = int(np.sum((kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h) & labelled))
        cost = max([_overlap(box, b) for b in boxes], default=0.0) + (10.0 if inside < 3 else 0.0)
        if cost < best_cost:
            best, best_cost = (box, offset), cost
        if cost < 0.45:
            break
    box, offset = best  # type: ignore[misc]
    boxes.append(box)
    # Mean background colour under the figure, to keep clothes distinguishable from it.
    sh, sw = bg_small.shape[:2]
    cx0, cy0 = int(np.clip(box[0] / w * sw, 0, sw - 1)), int(np.clip(box[1] / h * sh, 0, sh - 1))
    cx1, cy1 = int(np.clip(box[2] / w * sw, cx0 + 1, sw)), int(np.clip(box[3] / h * sh, cy0 + 1, sh))
    avoid = bg_small[cy0:cy1, cx0:cx1].reshape(-1, 3).mean(0)
    return build_figure(pose, roll, scale, offset, palette(rng, avoid))


def sample_scene(rng: np.random.Generator, height: int, width: int, num_people: int) -> Scene:
    """Sample a scene of ``num_people`` figures on an ``height`` x ``width`` textured background."""
    check_size(height, width)
    if num_people < 0:
        raise InputError(f"num_people must be >= 0, got {num_people}")
    h, w = int(height), int(width)
    bg = background(rng, h, w)
    base = min(h, w)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 5))):
            for shape, colour in distractor(rng, h, w, base * rng.uniform(0.1, 0.4)):
                draw(bg, shape, colour, cv2.LINE_AA)
    bg_small = cv2.resize(bg, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA).astype(np.float32)
    boxes: list = []
    figures = [_place_figure(rng, h, w, num_people, boxes, bg_small) for _ in range(num_people)]
    # People lower in the image are nearer the camera: draw them last.
    keys = [b[3] + rng.normal(0, 0.04 * h) for b in boxes]
    figures = [figures[i] for i in np.argsort(keys, kind="stable")]
    occluders = []
    if num_people and rng.random() < 0.15:
        occluders = [distractor(rng, h, w, base * rng.uniform(0.08, 0.2)) for _ in range(int(rng.integers(1, 3)))]
    grain = float(rng.uniform(1, 5)) if rng.random() < 0.5 else 0.0
    return Scene(h, w, bg, figures, occluders, grain, int(rng.integers(2**31)), bool(rng.random() < 0.2))


def render_scene(rng: np.random.Generator, height: int, width: int, num_people: int, *, return_masks: bool = False):
    """Sample and draw one scene.

    Returns ``(image, annotations)``: image (H, W, 3) uint8 RGB and the COCO annotations of its
    people (without ``id``/``image_id``); with ``return_masks=True`` the full :class:`Rendered`
    (which also holds per-person full and visible masks)."""
    out = sample_scene(rng, height, width, num_people).render()
    return out if return_masks else (out.image, out.annotations)

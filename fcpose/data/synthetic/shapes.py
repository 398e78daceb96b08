"""2-D shapes in continuous pixel coordinates, drawn with anti-aliased OpenCV primitives, and colours.

Shapes are tuples in continuous image coordinates (px; pixel ``i`` spans ``[i, i + 1)``):
``("circle", x, y, r)`` | ``("poly", pts (n, 2))`` (convex) | ``("fillpoly", pts (n, 2))`` |
``("ellipse", x, y, ax, ay, angle_deg, thickness_px)``. OpenCV draws in pixel-centre coordinates, so a
point goes to OpenCV as ``(x - 0.5, y - 0.5)``, in fixed point (1/16 px)."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

_SHIFT = 4  # OpenCV fixed-point bits (1/16 px precision)
_ONE = 1 << _SHIFT

Shape = tuple


def _fix(x: float) -> int:
    """Continuous coordinate -> OpenCV fixed-point pixel-centre coordinate."""
    return int(round((x - 0.5) * _ONE))


def _fixr(r: float) -> int:
    return max(1, int(round(r * _ONE)))


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> list[Shape]:
    """A tapered capsule: two discs joined by a quad (continuous px coordinates, radii in px)."""
    shapes: list[Shape] = [("circle", p0[0], p0[1], r0), ("circle", p1[0], p1[1], r1)]
    d = p1 - p0
    length = math.hypot(d[0], d[1])
    if length > 1e-3:
        n = np.array([-d[1], d[0]]) / length
        shapes.append(("poly", np.stack([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0])))
    return shapes


def draw(img: np.ndarray, shape: Shape, colour, line_type: int) -> None:
    """Draw ``shape`` filled (an ellipse: with its thickness) into ``img`` in place."""
    kind = shape[0]
    if kind == "circle":
        cv2.circle(img, (_fix(shape[1]), _fix(shape[2])), _fixr(shape[3]), colour, -1, line_type, _SHIFT)
    elif kind == "poly":
        pts = np.round((shape[1] - 0.5) * _ONE).astype(np.int32)
        cv2.fillConvexPoly(img, pts, colour, line_type, _SHIFT)
    elif kind == "fillpoly":
        pts = np.round((shape[1] - 0.5) * _ONE).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, line_type, _SHIFT)
    elif kind == "ellipse":
        _, x, y, ax, ay, angle, thickness = shape
        cv2.ellipse(img, (_fix(x), _fix(y)), (_fixr(ax), _fixr(ay)), float(angle), 0.0, 360.0, colour, int(thickness),
                    line_type, _SHIFT)
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown shape {kind!r}")


def shade(colour: Sequence[float], factor: float) -> tuple[int, int, int]:
    """``colour`` scaled by ``factor``, clipped to 0..255."""
    return tuple(int(min(255.0, max(0.0, c * factor))) for c in colour)  # type: ignore[return-value]


def hsv_colour(rng: np.random.Generator, sat=(0.25, 0.95), val=(0.2, 0.95)) -> tuple[int, int, int]:
    """A random RGB colour: any hue, saturation and value uniform in the given ranges."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)

"""Backgrounds and distractors: textured (never plain) images and random non-person shapes drawn behind
and in front of the people."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .shapes import Shape, capsule, hsv_colour


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured (never plain) RGB background, (H, W, 3) uint8: a two-colour gradient plus 1-3 of
    smooth noise, stripes, a checkerboard, blobs and grain."""
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    if np.abs(c1 - c0).max() < 40:
        c1 = (255.0 - c0).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    t = xs * math.cos(a) + ys * math.sin(a)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = c0 + (c1 - c0) * t[..., None]  # (H, W, 3) float32
    layers = rng.choice(["noise", "stripes", "checker", "blobs", "grain"], size=int(rng.integers(1, 4)), replace=False)
    for layer in layers:
        if layer == "noise":
            gh, gw = int(rng.integers(2, 12)), int(rng.integers(2, 12))
            small = rng.uniform(-1, 1, (gh, gw, 3)).astype(np.float32)
            img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(20, 70)
        elif layer in ("stripes", "checker"):
            period = rng.uniform(6, 60)
            if layer == "stripes":
                b = rng.uniform(0, math.pi)
                phase = (xs * w * math.cos(b) + ys * h * math.sin(b)) / period
                sine = np.sin(2 * math.pi * phase)
                m = (sine > 0) if rng.random() < 0.5 else 0.5 + 0.5 * sine
            else:
                ox, oy = rng.uniform(0, period, 2)
                m = ((np.floor((xs * w + ox) / period) + np.floor((ys * h + oy) / period)) % 2) > 0
            m = np.asarray(m, np.float32)[..., None] * rng.uniform(0.2, 0.6)
            img = img * (1 - m) + rng.uniform(0, 255, 3).astype(np.float32) * m
        elif layer == "blobs":
            for _ in range(int(rng.integers(3, 12))):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                ax, ay = rng.uniform(0.03, 0.25) * w, rng.uniform(0.03, 0.25) * h
                col = tuple(float(c) for c in rng.uniform(0, 255, 3))
                cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), rng.uniform(0, 180), 0, 360, col, -1,
                            cv2.LINE_AA)
            if rng.random() < 0.5:
                img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1, 4))
        else:  # grain
            img += rng.normal(0, rng.uniform(3, 10), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def distractor(rng: np.random.Generator, h: int, w: int, scale: float) -> list[tuple[Shape, tuple]]:
    """A random non-person shape (blob, polygon, ring, stick, or a few lines); ``scale`` is its typical size in px."""
    col = hsv_colour(rng, sat=(0.0, 1.0), val=(0.1, 1.0))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    kind = int(rng.integers(5))
    if kind == 0:
        ax, ay = scale * rng.uniform(0.2, 0.6), scale * rng.uniform(0.2, 0.6)
        return [(("ellipse", cx, cy, ax, ay, rng.uniform(0, 180), -1), col)]
    if kind == 1:
        k = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = scale * rng.uniform(0.2, 0.6, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        return [(("fillpoly", pts), col)]
    if kind == 2:
        r = scale * rng.uniform(0.2, 0.5)
        ry, angle = r * rng.uniform(0.5, 1.0), rng.uniform(0, 180)
        return [(("ellipse", cx, cy, r, ry, angle, max(2, int(r * rng.uniform(0.1, 0.3)))), col)]
    out = []
    for _ in range(1 if kind == 3 else int(rng.integers(2, 5))):
        a = rng.uniform(0, math.pi)
        half = scale * rng.uniform(0.3, 0.9)
        d = np.array([math.cos(a), math.sin(a)]) * half
        c = np.array([cx, cy]) + rng.normal(0, scale * 0.3, 2)
        r = max(1.0, scale * rng.uniform(0.015, 0.06))
        out += [(s, col) for s in capsule(c - d, c + d, r, r)]
    return out

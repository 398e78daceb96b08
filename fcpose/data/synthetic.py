"""Synthetic multi-person pose scenes written as COCO person-keypoint datasets.

Each person is an articulated figure on the COCO 17-keypoint skeleton: a small 3-D kinematic tree
(pelvis, torso, neck, head, upper/lower arms, thighs/shins, hands, feet) with randomised joint
angles (standing, walking, sitting, crouching, kneeling, arms up, hands on hips, random), body yaw
(facing the camera, sideways, away), proportions and limb widths, projected orthographically and
drawn with anti-aliased OpenCV primitives (tapered capsules, a torso quad, an ellipse head with
hair, eyes, nose and ears that follow the head's facing direction). Parts are painted back to
front by depth, each with an outline and depth shading. Scenes put 0..N such figures (drawn in
depth order, people lower in the image in front) on textured backgrounds with optional
distractor shapes behind and in front of the people.

Coordinate frames
-----------------
* Inside this module image points are *continuous* pixel coordinates ``(x, y)``, x right and
  y down, where pixel ``i`` spans ``[i, i + 1)`` (the fcpose convention). OpenCV draws in pixel
  centre coordinates, so a point is passed to OpenCV as ``(x - 0.5, y - 0.5)``.
* The annotation files use COCO's own convention (keypoints are pixel indices): a joint at
  continuous ``(u, v)`` is written as ``(u - 0.5, v - 0.5)``. Boxes are pixel-tight
  ``[x0, y0, w, h]`` with ``x0`` the first column of the figure and ``x0 + w`` one past the last
  (continuous pixel-edge coordinates, as detectron2 reads COCO boxes).
* The 3-D body model uses units of the standing height with x to the person's left, y up and z
  forward (out of the chest); the world frame has x right, y up, z towards the camera, and the
  body yaw ``0`` means facing the camera (the person's left side is then on the image right).

Keypoint flags follow COCO: ``v = 2`` labelled and visible, ``v = 1`` labelled but hidden (behind
another figure, a distractor in front, or the person's own body), ``v = 0`` not labelled (outside
the image, or a face point turned away from the camera — then x = y = 0).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..config import COCO_KEYPOINT_NAMES, COCO_SKELETON, SYNTH_DESCRIPTION
from ..errors import InputError
from ..fileio import atomic_write_text

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "SIZE_CHOICES",
    "Figure",
    "Rendered",
    "Scene",
    "coco_categories",
    "generate_dataset",
    "render_scene",
    "sample_figure_pose",
    "sample_scene",
    "synth_main",
]

DEFAULT_IMAGE_SIZE = (384, 512)  # (H, W)
# A small set of sizes to mix when ``generate_dataset(image_size=SIZE_CHOICES)``.
SIZE_CHOICES = ((384, 512), (512, 384), (384, 384), (320, 480), (448, 576))
JPEG_QUALITY = 92
MIN_FIGURE_PX = 60.0  # smallest figure height (px) when the image allows it
MAX_FIGURE_FRAC = 0.9  # largest figure height as a fraction of the image height
_MIN_SIDE = 64

(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI,
 L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK) = range(17)  # fmt: skip
NUM_KEYPOINTS = 17

# Part labels of one figure (its label map holds the topmost part per pixel, 0 = not the figure).
_TORSO, _HEAD, _NECK, _L_UARM, _R_UARM, _L_FARM, _R_FARM, _L_THIGH, _R_THIGH, _L_SHIN, _R_SHIN = range(1, 12)

# Parts on which a joint counts as visible ("self-occlusion": anything else on top hides it).
_JOINT_PARTS: list[tuple[int, ...]] = [
    (_HEAD,), (_HEAD,), (_HEAD,), (_HEAD,), (_HEAD,),
    (_L_UARM,), (_R_UARM,), (_L_UARM, _L_FARM), (_R_UARM, _R_FARM), (_L_FARM,), (_R_FARM,),
    (_L_THIGH,), (_R_THIGH,), (_L_THIGH, _L_SHIN), (_R_THIGH, _R_SHIN), (_L_SHIN,), (_R_SHIN,),
]  # fmt: skip

_SHIFT = 4  # OpenCV fixed-point bits (1/16 px precision)
_ONE = 1 << _SHIFT

_SKIN = [
    (255, 224, 196),
    (241, 194, 125),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (92, 56, 30),
    (255, 205, 170),
    (170, 120, 90),
]
_HAIR = [(20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 170, 100), (150, 150, 150), (120, 40, 20)]


# ----------------------------------------------------------------------------------------------
# Small geometry helpers
# ----------------------------------------------------------------------------------------------
def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotate_about(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of the 3-vector ``v`` about the unit ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * float(axis @ v) * (1.0 - c)


_DOWN = np.array([0.0, -1.0, 0.0])
_rad = math.radians


def _fix(x: float) -> int:
    """Continuous coordinate -> OpenCV fixed-point pixel-centre coordinate."""
    return int(round((x - 0.5) * _ONE))


def _fixr(r: float) -> int:
    return max(1, int(round(r * _ONE)))


# Shapes are tuples in continuous image coordinates (px):
#   ("circle", x, y, r) | ("poly", pts (n, 2)) | ("ellipse", x, y, ax, ay, angle_deg, thickness_px)
Shape = tuple


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> list[Shape]:
    """A tapered capsule: two discs joined by a quad (continuous px coordinates, radii in px)."""
    shapes: list[Shape] = [("circle", p0[0], p0[1], r0), ("circle", p1[0], p1[1], r1)]
    d = p1 - p0
    length = math.hypot(d[0], d[1])
    if length > 1e-3:
        n = np.array([-d[1], d[0]]) / length
        shapes.append(("poly", np.stack([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0])))
    return shapes


def _draw(img: np.ndarray, shape: Shape, colour, line_type: int) -> None:
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
        cv2.ellipse(
            img,
            (_fix(x), _fix(y)),
            (_fixr(ax), _fixr(ay)),
            float(angle),
            0.0,
            360.0,
            colour,
            int(thickness),
            line_type,
            _SHIFT,
        )
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown shape {kind!r}")


def _shade(colour: Sequence[float], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255.0, max(0.0, c * factor))) for c in colour)  # type: ignore[return-value]


def _hsv_colour(rng: np.random.Generator, sat=(0.25, 0.95), val=(0.2, 0.95)) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


# ----------------------------------------------------------------------------------------------
# Figure: 3-D pose sampling
# ----------------------------------------------------------------------------------------------
@dataclass
class _Pose:
    """A sampled 3-D pose in world axes (x right, y up, z to the camera), standing height = 1."""

    points: dict[str, np.ndarray]  # named 3-vectors: the 17 keypoint names + helper points
    head_up: np.ndarray  # unit 3-vectors of the head frame
    head_fwd: np.ndarray
    head_left: np.ndarray
    torso_left: np.ndarray
    torso_fwd: np.ndarray
    body_fwd: np.ndarray
    radii: dict[str, float]  # body units
    yaw: float
    mode: str


def _arm_angles(rng: np.random.Generator, mode: str) -> tuple[float, float, float, float]:
    """(flexion, abduction, elbow bend, twist) in degrees for one arm."""
    if mode == "rest":
        return (
            float(np.clip(rng.normal(5, 15), -30, 45)),
            rng.uniform(4, 25),
            rng.uniform(0, 45),
            rng.uniform(-20, 40),
        )
    if mode == "up":
        if rng.random() < 0.5:
            return rng.uniform(120, 180), rng.uniform(0, 40), rng.uniform(0, 90), rng.uniform(-30, 30)
        return rng.uniform(-10, 30), rng.uniform(80, 170), rng.uniform(0, 90), rng.uniform(-30, 60)
    if mode == "hips":
        return rng.uniform(-15, 15), rng.uniform(35, 60), rng.uniform(90, 130), rng.uniform(60, 100)
    return rng.uniform(-40, 130), rng.uniform(0, 100), rng.uniform(0, 145), rng.uniform(-40, 90)


def _leg_angles(rng: np.random.Generator, mode: str, first: bool, stride: float):
    """(hip flexion, abduction, knee bend) in degrees for one leg."""
    if mode == "walk":
        if first:
            return stride, rng.uniform(0, 8), rng.uniform(0, 30)
        return -0.7 * stride, rng.uniform(0, 8), rng.uniform(10, 60)
    if mode == "sit":
        return rng.uniform(70, 100), rng.uniform(0, 20), rng.uniform(70, 110)
    if mode == "crouch":
        return rng.uniform(80, 125), rng.uniform(5, 30), rng.uniform(110, 150)
    if mode == "kneel":
        if first:
            return rng.uniform(70, 95), rng.uniform(0, 15), rng.uniform(80, 100)
        return rng.uniform(-10, 10), rng.uniform(0, 15), rng.uniform(80, 110)
    if mode == "random":
        return rng.uniform(-30, 110), rng.uniform(0, 45), rng.uniform(0, 140)
    return float(np.clip(rng.normal(0, 6), -15, 15)), rng.uniform(0, 12), rng.uniform(0, 12)


_MODES = ("stand", "walk", "sit", "crouch", "kneel", "random")
_MODE_P = (0.4, 0.2, 0.12, 0.1, 0.06, 0.12)


def sample_figure_pose(rng: np.random.Generator, yaw: float | None = None) -> _Pose:
    """Sample a random 3-D figure: proportions, joint angles and body yaw (radians; 0 faces the
    camera, +pi/2 faces the image right). Returns world-axis points in standing-height units."""
    mode = str(rng.choice(_MODES, p=_MODE_P))
    if yaw is None:
        yaw = rng.uniform(-math.pi, math.pi) if rng.random() < 0.5 else float(rng.normal(0.0, _rad(35)))
    yaw = float((yaw + math.pi) % (2 * math.pi) - math.pi)

    width = rng.uniform(0.85, 1.2)  # lateral build
    limb = rng.uniform(0.8, 1.3)  # limb thickness
    length = lambda base: base * rng.uniform(0.93, 1.07)
    torso_len, upper_arm, forearm = length(0.33), length(0.17), length(0.15)
    thigh, shin = length(0.245), length(0.245)
    sw, hw = 0.105 * width, 0.075 * width

    # Torso orientation relative to the pelvis (body frame: x left, y up, z forward).
    if mode == "crouch":
        pitch = rng.uniform(15, 45)
    elif mode == "sit":
        pitch = rng.uniform(-10, 15)
    elif mode == "random":
        pitch = rng.uniform(-10, 40)
    elif mode == "kneel":
        pitch = rng.uniform(-5, 20)
    else:
        pitch = float(np.clip(rng.normal(3, 5), -10, 15))
    side = float(np.clip(rng.normal(0, 4), -15, 15))
    twist = float(np.clip(rng.normal(0, 8), -20, 20))
    torso = _ry(_rad(twist)) @ _rx(_rad(pitch)) @ _rz(_rad(side))
    world = _ry(yaw)

    pts: dict[str, np.ndarray] = {}
    hip_c = np.zeros(3)
    neck = torso @ np.array([0.0, torso_len, 0.0])
    pts["hip_c"], pts["neck"] = hip_c, neck

    # Arms: each side's own mode; "up" is often symmetric.
    arm_modes = [
        str(rng.choice(("rest", "active", "up", "hips"), p=(0.45, 0.3, 0.15, 0.1))) for _ in range(2)
    ]
    if "up" in arm_modes and rng.random() < 0.3:
        arm_modes = ["up", "up"]
    for k, (sgn, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        flex, abd, bend, tw = _arm_angles(rng, arm_modes[k])
        a_abd = _rz(sgn * _rad(abd))
        d_up = a_abd @ _rx(-_rad(flex)) @ _DOWN
        d_lo = a_abd @ _rx(-_rad(flex + bend)) @ _DOWN
        d_lo = _rotate_about(d_lo, d_up, sgn * _rad(tw))
        sho = np.array([sgn * sw, torso_len - 0.035, 0.0])
        pts[f"{name}_shoulder"] = torso @ sho
        pts[f"{name}_elbow"] = torso @ (sho + upper_arm * d_up)
        pts[f"{name}_wrist"] = torso @ (sho + upper_arm * d_up + forearm * d_lo)
        pts[f"{name}_hand"] = torso @ (sho + upper_arm * d_up + (forearm + 0.03) * d_lo)

    stride = rng.uniform(10, 35)
    first_left = rng.random() < 0.5  # which leg leads (walk/kneel): a mirror-symmetric choice
    for k, (sgn, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        flex, abd, bend = _leg_angles(rng, mode, (k == 0) == first_left, stride)
        l_abd = _rz(sgn * _rad(abd))
        d_up = l_abd @ _rx(-_rad(flex)) @ _DOWN
        d_lo = l_abd @ _rx(-_rad(flex) + _rad(bend)) @ _DOWN
        hip = np.array([sgn * hw, 0.0, 0.0])
        knee = hip + thigh * d_up
        ankle = knee + shin * d_lo
        pts[f"{name}_hip"], pts[f"{name}_knee"], pts[f"{name}_ankle"] = hip, knee, ankle
        pts[f"{name}_toe"] = ankle + np.array([0.0, -0.025, 0.075])

    # Head: own yaw/pitch/roll on top of the torso.
    h_yaw = float(np.clip(rng.normal(0, 25), -70, 70))
    head = torso @ _ry(_rad(h_yaw)) @ _rx(_rad(rng.normal(0, 10))) @ _rz(_rad(rng.normal(0, 8)))
    h_up, h_fwd, h_left = head[:, 1], head[:, 2], head[:, 0]
    centre = neck + head @ np.array([0.0, 0.075, 0.005])
    pts["head"] = centre
    pts["nose"] = centre + 0.048 * h_fwd - 0.012 * h_up
    pts["left_eye"] = centre + 0.04 * h_fwd + 0.022 * h_left + 0.01 * h_up
    pts["right_eye"] = centre + 0.04 * h_fwd - 0.022 * h_left + 0.01 * h_up
    pts["left_ear"] = centre + 0.05 * h_left - 0.004 * h_fwd
    pts["right_ear"] = centre - 0.05 * h_left - 0.004 * h_fwd

    radii = {
        "upper_arm": 0.034 * limb,
        "forearm": 0.027 * limb,
        "hand": 0.03 * limb,
        "thigh0": 0.058 * limb,
        "thigh1": 0.045 * limb,
        "shin": 0.036 * limb,
        "foot": 0.024 * limb,
        "neck": 0.03 * width,
        "head_w": 0.055 * rng.uniform(0.92, 1.1),
        "head_h": 0.07 * rng.uniform(0.95, 1.1),
        "torso_top": sw + 0.01,
        "torso_bot": hw + 0.03,
        "torso_depth": 0.075 * width,
    }
    out = {k: world @ v for k, v in pts.items()}
    return _Pose(
        out,
        world @ h_up,
        world @ h_fwd,
        world @ h_left,
        world @ torso[:, 0],
        world @ torso[:, 2],
        world[:, 2],
        radii,
        yaw,
        mode,
    )


# ----------------------------------------------------------------------------------------------
# Figure: placement in the image and drawing parts
# ----------------------------------------------------------------------------------------------
@dataclass
class _Part:
    z: float  # depth (world z, towards the camera) used to sort parts back to front
    label: int  # part label (see _TORSO ...)
    shapes: list[tuple[Shape, tuple[int, int, int], bool]]  # (shape, RGB colour, counts for the mask)


@dataclass
class Figure:
    """One placed person.

    ``keypoints``: (17, 2) float64 continuous image coordinates (pixel i spans [i, i+1)).
    ``depth``: (17,) world z (towards the camera) of the joints, standing-height units.
    ``labelled``: (17,) bool, False for face points turned away from the camera.
    ``yaw``: body yaw in radians (0: facing the camera; the person's left is then on the image
    right); ``roll``: in-plane rotation in radians; ``height_px``: standing height in pixels.
    """

    keypoints: np.ndarray
    depth: np.ndarray
    labelled: np.ndarray
    yaw: float
    roll: float
    height_px: float
    mode: str
    parts: list[_Part] = field(repr=False)
    owners: list[int] = field(repr=False)  # per joint: bit mask of part labels it is visible on


def _palette(rng: np.random.Generator, avoid: np.ndarray | None) -> dict[str, tuple[int, int, int]]:
    """Per-person colours; clothes are kept away from ``avoid`` (mean RGB of the background)."""

    def contrasted(**kw) -> tuple[int, int, int]:
        best, best_d = None, -1.0
        for _ in range(6):
            c = _hsv_colour(rng, **kw)
            d = 1e9 if avoid is None else float(np.linalg.norm(np.asarray(c, float) - avoid))
            if d > best_d:
                best, best_d = c, d
            if d > 90:
                break
        return best  # type: ignore[return-value]

    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    skin = _shade(skin, rng.uniform(0.9, 1.08))
    shirt = contrasted()
    pants = contrasted(val=(0.15, 0.8))
    return {
        "skin": skin,
        "shirt": shirt,
        "sleeve": shirt if rng.random() < 0.55 else skin,
        "pants": pants,
        "shin": pants if rng.random() < 0.75 else skin,
        "hair": _HAIR[int(rng.integers(len(_HAIR)))],
        "shoe": _shade(_hsv_colour(rng, sat=(0.0, 0.6), val=(0.05, 0.5)), 1.0),
        "eye": (25, 20, 20),
    }


def _face_labelled(pose: _Pose) -> np.ndarray:
    """(17,) bool: face points are labelled when their outward normal faces the camera enough
    (eyes need to face it, the nose may be slightly past profile, ears until well past it)."""
    normals = {
        "nose": (pose.head_fwd, -0.2),
        "left_eye": (0.8 * pose.head_fwd + 0.6 * pose.head_left, 0.05),
        "right_eye": (0.8 * pose.head_fwd - 0.6 * pose.head_left, 0.05),
        "left_ear": (pose.head_left, -0.3),
        "right_ear": (-pose.head_left, -0.3),
    }
    labelled = np.ones(NUM_KEYPOINTS, bool)
    for name, (normal, threshold) in normals.items():
        labelled[COCO_KEYPOINT_NAMES.index(name)] = float(normal[2]) > threshold
    return labelled


def _unit_extent(pose: _Pose, roll: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Keypoints (17, 2) and the approximate drawn extent (x0, y0, x1, y1) of ``pose`` projected
    at scale 1 (standing-height units, y down, rotated by ``roll``) without translation."""
    cr, sr = math.cos(roll), math.sin(roll)
    rot = np.array([[cr, -sr], [sr, cr]])
    pts = np.stack(list(pose.points.values()))
    xy = np.stack([pts[:, 0], -pts[:, 1]], 1) @ rot.T
    m = 0.075  # head / thigh widths beyond the points
    box = (
        float(xy[:, 0].min() - m),
        float(xy[:, 1].min() - m),
        float(xy[:, 0].max() + m),
        float(xy[:, 1].max() + m),
    )
    kps = np.stack([pose.points[n] for n in COCO_KEYPOINT_NAMES])
    kxy = np.stack([kps[:, 0], -kps[:, 1]], 1) @ rot.T
    return kxy, box


def _build_figure(pose: _Pose, roll: float, scale: float, offset: np.ndarray, colours: dict) -> Figure:
    """Project ``pose`` (orthographic, y flipped, rotated in-plane by ``roll``, scaled by ``scale``
    px per standing height, translated by ``offset`` px) and build its drawing parts."""
    cr, sr = math.cos(roll), math.sin(roll)
    rot = np.array([[cr, -sr], [sr, cr]]) * scale

    def p2(v: np.ndarray) -> np.ndarray:
        return rot @ np.array([v[0], -v[1]]) + offset

    def dir2(v: np.ndarray) -> np.ndarray:
        return rot @ np.array([v[0], -v[1]]) / scale

    P = {k: p2(v) for k, v in pose.points.items()}
    Z = {k: float(v[2]) for k, v in pose.points.items()}
    R = {k: v * scale for k, v in pose.radii.items()}
    ow = max(1.0, 0.009 * scale)  # outline width (px)

    def shade(colour, z: float) -> tuple[int, int, int]:
        return _shade(colour, float(np.clip(1.0 + 1.6 * z, 0.72, 1.22)))

    def dark(colour) -> tuple[int, int, int]:
        return _shade(colour, 0.5)

    def capsule_part(a: str, b: str, ra: float, rb: float, colour, label: int, bias: float = 0.0) -> _Part:
        z = 0.5 * (Z[a] + Z[b])
        col = shade(colour, z)
        shapes = [(s, dark(col), True) for s in _capsule(P[a], P[b], ra + ow, rb + ow)]
        shapes += [(s, col, False) for s in _capsule(P[a], P[b], ra, rb)]
        return _Part(z + bias, label, shapes)

    parts: list[_Part] = []
    for side, sgn in (("left", 1), ("right", -1)):
        ua, fa = (_L_UARM, _L_FARM) if sgn > 0 else (_R_UARM, _R_FARM)
        th, sh = (_L_THIGH, _L_SHIN) if sgn > 0 else (_R_THIGH, _R_SHIN)
        parts.append(
            capsule_part(
                f"{side}_shoulder",
                f"{side}_elbow",
                R["upper_arm"],
                R["upper_arm"] * 0.9,
                colours["shirt"],
                ua,
                0.004,
            )
        )
        farm = capsule_part(
            f"{side}_elbow",
            f"{side}_wrist",
            R["forearm"] * 1.05,
            R["forearm"] * 0.85,
            colours["sleeve"],
            fa,
            0.006,
        )
        hand_col = shade(colours["skin"], Z[f"{side}_hand"])
        hp = P[f"{side}_hand"]
        farm.shapes += [
            (("circle", hp[0], hp[1], R["hand"] + ow), dark(hand_col), True),
            (("circle", hp[0], hp[1], R["hand"]), hand_col, False),
        ]
        parts.append(farm)
        parts.append(
            capsule_part(
                f"{side}_hip", f"{side}_knee", R["thigh0"], R["thigh1"], colours["pants"], th, -0.012
            )
        )
        shin = capsule_part(
            f"{side}_knee", f"{side}_ankle", R["thigh1"] * 0.9, R["shin"], colours["shin"], sh, -0.006
        )
        shoe = shade(colours["shoe"], Z[f"{side}_toe"])
        shin.shapes += [
            (s, dark(shoe), True)
            for s in _capsule(P[f"{side}_ankle"], P[f"{side}_toe"], R["foot"] + ow, R["foot"] + ow)
        ]
        shin.shapes += [
            (s, shoe, False) for s in _capsule(P[f"{side}_ankle"], P[f"{side}_toe"], R["foot"], R["foot"])
        ]
        parts.append(shin)

    # Torso: a quad from the shoulder line to below the hips; its projected half-widths come from
    # an elliptic cross-section (lateral x depth) seen under the torso's yaw.
    lx, fx = abs(float(pose.torso_left[0])), abs(float(pose.torso_fwd[0]))
    top_c = 0.5 * (P["left_shoulder"] + P["right_shoulder"])
    bot_c = P["hip_c"]
    axis = top_c - bot_c
    alen = max(1e-3, math.hypot(axis[0], axis[1]))
    u = axis / alen
    n = np.array([-u[1], u[0]])
    w_top = math.hypot(R["torso_top"] * lx, R["torso_depth"] * fx)
    lxp, fxp = abs(math.cos(pose.yaw)), abs(math.sin(pose.yaw))
    w_bot = math.hypot(R["torso_bot"] * lxp, R["torso_depth"] * 1.1 * fxp)
    top = top_c + u * 0.02 * scale
    bot = bot_c - u * 0.03 * scale
    torso_col = shade(colours["shirt"], 0.0)

    def quad(grow: float) -> np.ndarray:
        t, b = top + u * grow, bot - u * grow
        return np.stack(
            [t + n * (w_top + grow), t - n * (w_top + grow), b - n * (w_bot + grow), b + n * (w_bot + grow)]
        )

    torso_shapes = [(("poly", quad(ow)), dark(torso_col), True), (("poly", quad(0.0)), torso_col, False)]
    belt = _shade(colours["pants"], 0.95)
    bq = quad(0.0)
    mid = 0.72  # lower part of the torso in trouser colour
    lower = np.stack([bq[3] + (bq[0] - bq[3]) * (1 - mid), bq[2] + (bq[1] - bq[2]) * (1 - mid), bq[2], bq[3]])
    torso_shapes.append((("poly", lower), belt, False))
    parts.append(_Part(0.0, _TORSO, torso_shapes))

    neck_col = shade(colours["skin"], 0.0)
    nk = _capsule(top_c, P["head"], R["neck"], R["neck"])
    parts.append(
        _Part(
            -0.001,
            _NECK,
            [(s, dark(neck_col), True) for s in _capsule(top_c, P["head"], R["neck"] + ow, R["neck"] + ow)]
            + [(s, neck_col, False) for s in nk],
        )
    )

    # Head with hair and face details consistent with the head's facing direction.
    up2 = dir2(pose.head_up)
    upn = math.hypot(up2[0], up2[1])
    angle = math.degrees(math.atan2(-up2[0], up2[1])) if upn > 1e-6 else 0.0
    hw_px, hh_px = R["head_w"], R["head_h"] * max(0.8, min(1.0, upn))
    hc = P["head"]
    skin = shade(colours["skin"], 0.05)
    fwd_z = float(pose.head_fwd[2])
    hair_c = p2(pose.points["head"] - 0.014 * pose.head_fwd + 0.012 * pose.head_up)
    hair = ("ellipse", hair_c[0], hair_c[1], hw_px * 1.02, hh_px * 0.93, angle, -1)
    head_shapes: list = []
    if fwd_z >= 0:  # face towards the camera: hair behind the face
        head_shapes.append(
            (
                ("ellipse", hair_c[0], hair_c[1], hw_px * 1.02 + ow, hh_px * 0.93 + ow, angle, -1),
                dark(colours["hair"]),
                True,
            )
        )
        head_shapes.append((hair, colours["hair"], True))
    head_shapes.append((("ellipse", hc[0], hc[1], hw_px + ow, hh_px + ow, angle, -1), dark(skin), True))
    head_shapes.append((("ellipse", hc[0], hc[1], hw_px, hh_px, angle, -1), skin, True))
    if fwd_z < 0:  # back of the head towards the camera: hair over it
        head_shapes.append((hair, colours["hair"], True))

    # Face details on the labelled (camera-facing) face points.
    labelled = _face_labelled(pose)
    r_feat = max(0.9, 0.011 * scale)
    for name in ("left_ear", "right_ear", "nose", "left_eye", "right_eye"):
        k = COCO_KEYPOINT_NAMES.index(name)
        if not labelled[k]:
            continue
        q = P[name]
        if name.endswith("ear"):
            ear = ("ellipse", q[0], q[1], r_feat * 0.9, r_feat * 1.6, angle, -1)
            head_shapes += [(ear, _shade(skin, 0.85), True)]
        elif name == "nose":
            head_shapes += [(("circle", q[0], q[1], r_feat * 0.9), _shade(skin, 0.78), True)]
        else:
            head_shapes += [(("circle", q[0], q[1], r_feat * 0.75), colours["eye"], True)]
    parts.append(_Part(float(pose.points["head"][2]) + 0.02, _HEAD, head_shapes))

    parts.sort(key=lambda p: p.z)

    names = COCO_KEYPOINT_NAMES
    kps = np.stack([P[n] for n in names])
    depth = np.array([Z[n] for n in names])
    owners = [sum(1 << lab for lab in labs) for labs in _JOINT_PARTS]
    # Shoulders/hips also count as visible on the torso and neck when on its near half.
    for k, extra in (
        (L_SHO, (_TORSO, _NECK)),
        (R_SHO, (_TORSO, _NECK)),
        (L_HIP, (_TORSO,)),
        (R_HIP, (_TORSO,)),
    ):
        if depth[k] > -0.04:
            owners[k] |= sum(1 << lab for lab in extra)
    return Figure(kps, depth, labelled, pose.yaw, roll, scale, pose.mode, parts, owners)


# ----------------------------------------------------------------------------------------------
# Backgrounds and distractors
# ----------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
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
    layers = rng.choice(
        ["noise", "stripes", "checker", "blobs", "grain"], size=int(rng.integers(1, 4)), replace=False
    )
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
                m = (
                    (np.sin(2 * math.pi * phase) > 0)
                    if rng.random() < 0.5
                    else 0.5 + 0.5 * np.sin(2 * math.pi * phase)
                )
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
                cv2.ellipse(
                    img,
                    (int(cx), int(cy)),
                    (int(ax), int(ay)),
                    rng.uniform(0, 180),
                    0,
                    360,
                    col,
                    -1,
                    cv2.LINE_AA,
                )
            if rng.random() < 0.5:
                img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1, 4))
        else:  # grain
            img += rng.normal(0, rng.uniform(3, 10), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _distractor(rng: np.random.Generator, h: int, w: int, scale: float) -> list[tuple[Shape, tuple]]:
    """A random non-person shape (blob, polygon, ring, stick, or a few lines); ``scale`` is its
    typical size in px."""
    col = _hsv_colour(rng, sat=(0.0, 1.0), val=(0.1, 1.0))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    kind = int(rng.integers(5))
    if kind == 0:
        return [
            (
                (
                    "ellipse",
                    cx,
                    cy,
                    scale * rng.uniform(0.2, 0.6),
                    scale * rng.uniform(0.2, 0.6),
                    rng.uniform(0, 180),
                    -1,
                ),
                col,
            )
        ]
    if kind == 1:
        k = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = scale * rng.uniform(0.2, 0.6, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        return [(("fillpoly", pts), col)]
    if kind == 2:
        r = scale * rng.uniform(0.2, 0.5)
        return [
            (
                (
                    "ellipse",
                    cx,
                    cy,
                    r,
                    r * rng.uniform(0.5, 1.0),
                    rng.uniform(0, 180),
                    max(2, int(r * rng.uniform(0.1, 0.3))),
                ),
                col,
            )
        ]
    out = []
    for _ in range(1 if kind == 3 else int(rng.integers(2, 5))):
        a = rng.uniform(0, math.pi)
        half = scale * rng.uniform(0.3, 0.9)
        d = np.array([math.cos(a), math.sin(a)]) * half
        c = np.array([cx, cy]) + rng.normal(0, scale * 0.3, 2)
        r = max(1.0, scale * rng.uniform(0.015, 0.06))
        out += [(s, col) for s in _capsule(c - d, c + d, r, r)]
    return out


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------
class Rendered(NamedTuple):
    """A rendered scene.

    ``image``: (H, W, 3) uint8 RGB. ``annotations``: COCO person annotations without ``id`` and
    ``image_id`` (keypoints in COCO's pixel-index convention, see the module doc), in drawing
    order. ``full_masks`` / ``visible_masks``: per annotation (H, W) bool masks of the whole figure
    (including parts hidden by figures in front) and of its pixels that remain visible.
    """

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
                    _draw(img, shape, colour, cv2.LINE_AA)
                    if in_mask:
                        _draw(lab, shape, part.label, cv2.LINE_8)
            owner[lab > 0] = i
            kept.append((i, fig, lab))
        if self.occluders:
            occ = np.zeros((h, w), np.uint8)
            for shapes in self.occluders:
                for shape, colour in shapes:
                    _draw(img, shape, colour, cv2.LINE_AA)
                    _draw(occ, shape, 1, cv2.LINE_8)
            owner[occ > 0] = -2
        if self.blur:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        if self.grain > 0:
            noise = np.random.default_rng(self.grain_seed).normal(0, self.grain, (h, w, 1)).astype(np.float32)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

        anns, full_masks, visible_masks = [], [], []
        for i, fig, lab in kept:
            full = lab > 0
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
            anns.append(
                {
                    "category_id": 1,
                    "keypoints": kps,
                    "num_keypoints": int(sum(1 for s in kps[2::3] if s > 0)),
                    "bbox": [int(x), int(y), int(bw), int(bh)],
                    "area": int(cv2.countNonZero(lab)),
                    "iscrowd": 0,
                }
            )
            full_masks.append(full)
            visible_masks.append(owner == i)
        return Rendered(img, anns, full_masks, visible_masks)


def _check_size(height: int, width: int) -> None:
    if int(height) < _MIN_SIDE or int(width) < _MIN_SIDE:
        raise InputError(
            f"synthetic images need at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {height}x{width}"
        )


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection over the smaller area of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1e-6)


def _place_figure(
    rng: np.random.Generator, h: int, w: int, num_people: int, boxes: list, bg_small: np.ndarray
) -> Figure:
    pose = sample_figure_pose(rng)
    roll = (
        _rad(rng.uniform(-90, 90)) if rng.random() < 0.04 else _rad(float(np.clip(rng.normal(0, 6), -20, 20)))
    )
    # Extent of the projected figure at unit scale.
    unit_kps, (x0, y0, x1, y1) = _unit_extent(pose, roll)
    labelled = _face_labelled(pose)
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
        return rng.uniform(min(0.0, w - bw), max(0.0, w - bw)), rng.uniform(
            min(0.0, h - bh), max(0.0, h - bh)
        )

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
    return _build_figure(pose, roll, scale, offset, _palette(rng, avoid))


def sample_scene(rng: np.random.Generator, height: int, width: int, num_people: int) -> Scene:
    """Sample a scene of ``num_people`` figures on an ``height`` x ``width`` textured background."""
    _check_size(height, width)
    if num_people < 0:
        raise InputError(f"num_people must be >= 0, got {num_people}")
    h, w = int(height), int(width)
    bg = _background(rng, h, w)
    base = min(h, w)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 5))):
            for shape, colour in _distractor(rng, h, w, base * rng.uniform(0.1, 0.4)):
                _draw(bg, shape, colour, cv2.LINE_AA)
    bg_small = cv2.resize(bg, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )
    boxes: list = []
    figures = [_place_figure(rng, h, w, num_people, boxes, bg_small) for _ in range(num_people)]
    # People lower in the image are nearer the camera: draw them last.
    keys = [b[3] + rng.normal(0, 0.04 * h) for b in boxes]
    figures = [figures[i] for i in np.argsort(keys, kind="stable")]
    occluders = []
    if num_people and rng.random() < 0.15:
        occluders = [
            _distractor(rng, h, w, base * rng.uniform(0.08, 0.2)) for _ in range(int(rng.integers(1, 3)))
        ]
    grain = float(rng.uniform(1, 5)) if rng.random() < 0.5 else 0.0
    return Scene(h, w, bg, figures, occluders, grain, int(rng.integers(2**31)), bool(rng.random() < 0.2))


def render_scene(
    rng: np.random.Generator, height: int, width: int, num_people: int, *, return_masks: bool = False
):
    """Sample and draw one scene.

    Returns ``(image, annotations)``: image (H, W, 3) uint8 RGB and the COCO annotations of its
    people (without ``id``/``image_id``); with ``return_masks=True`` the full :class:`Rendered`
    (which also holds per-person full and visible masks).
    """
    out = sample_scene(rng, height, width, num_people).render()
    return out if return_masks else (out.image, out.annotations)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------
def coco_categories() -> list[dict]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
        }
    ]


def _resolve_sizes(image_size) -> list[tuple[int, int]]:
    if image_size is None:
        return [DEFAULT_IMAGE_SIZE]
    sizes = (
        [image_size]
        if len(image_size) == 2 and all(isinstance(v, (int, np.integer)) for v in image_size)
        else list(image_size)
    )
    out = []
    for s in sizes:
        if len(s) != 2:
            raise InputError(f"image sizes are (height, width) pairs, got {s!r}")
        _check_size(int(s[0]), int(s[1]))
        out.append((int(s[0]), int(s[1])))
    if not out:
        raise InputError("image_size is empty")
    return out


_IMAGE_NAME = re.compile(r"^\d{6,}\.jpg$")


def generate_dataset(
    out_dir: str | Path,
    num_images: int,
    seed: int = 0,
    *,
    min_people: int = 1,
    max_people: int = 8,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] | None = DEFAULT_IMAGE_SIZE,
    progress: bool = True,
) -> Path:
    """Write ``num_images`` synthetic scenes as a COCO person-keypoint dataset.

    Layout: ``out_dir/images/000001.jpg ...`` (JPEG quality 92), ``out_dir/annotations.json`` and a
    3-line ``out_dir/README.txt``. ``image_size`` is one ``(H, W)`` or a sequence of them to sample
    from per image (e.g. :data:`SIZE_CHOICES`). The people count per image is uniform in
    ``[min_people, max_people]``. Image ``i`` (1-based id) is drawn from
    ``numpy.random.default_rng([seed, i])``, so a dataset is deterministic for a seed and its first
    images do not depend on ``num_images``. Stale ``NNNNNN.jpg`` images of a previous, larger run
    in ``out_dir/images`` are removed. Returns the path of ``annotations.json``.
    """
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
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        if not ok:  # pragma: no cover - OpenCV failure
            raise InputError(f"cannot encode {name}")
        tmp = img_dir / f".{name}.part"
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, img_dir / name)  # an interrupted run leaves whole images only
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


def synth_main(
    out: str, num: int, seed: int, min_people: int, max_people: int, height: int | None, width: int | None
) -> int:
    """Entry point of ``fcpose synth --out DIR --num N --seed S``: writes the dataset and prints a
    one-line summary. A missing height or width keeps the default 3:4 aspect. Returns 0."""
    dh, dw = DEFAULT_IMAGE_SIZE
    if height is None and width is None:
        height, width = dh, dw
    elif height is None:
        height = max(_MIN_SIDE, int(round(int(width) * dh / dw)))
    elif width is None:
        width = max(_MIN_SIDE, int(round(int(height) * dw / dh)))
    path = generate_dataset(
        out,
        num,
        seed,
        min_people=min_people,
        max_people=max_people,
        image_size=(int(height), int(width)),
        progress=True,
    )
    with open(path) as f:
        data = json.load(f)
    print(f"wrote {len(data['images'])} images with {len(data['annotations'])} people to {path}")
    return 0

"""Random 3-D poses of one figure: proportions, joint angles (by activity) and body yaw.

Body frame: x to the person's left, y up, z forward (out of the chest), in units of the standing
height; the returned points are in world axes (x right, y up, z towards the camera). Body yaw ``0``
faces the camera (the person's left side is then on the image right)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

_DOWN = np.array([0.0, -1.0, 0.0])
_rad = math.radians

_MODES = ("stand", "walk", "sit", "crouch", "kneel", "random")
_MODE_P = (0.4, 0.2, 0.12, 0.1, 0.06, 0.12)


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


@dataclass
class Pose:
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


class _Build(NamedTuple):
    """Proportions of one figure (body units): lateral build, limb thickness and segment lengths."""

    width: float
    limb: float
    torso_len: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float

    @property
    def shoulder_half(self) -> float:
        return 0.105 * self.width

    @property
    def hip_half(self) -> float:
        return 0.075 * self.width


def _sample_build(rng: np.random.Generator) -> _Build:
    width = rng.uniform(0.85, 1.2)  # lateral build
    limb = rng.uniform(0.8, 1.3)  # limb thickness
    length = lambda base: base * rng.uniform(0.93, 1.07)
    torso_len, upper_arm, forearm = length(0.33), length(0.17), length(0.15)
    thigh, shin = length(0.245), length(0.245)
    return _Build(width, limb, torso_len, upper_arm, forearm, thigh, shin)


def _torso_rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    """Torso orientation relative to the pelvis (body frame: x left, y up, z forward)."""
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
    return _ry(_rad(twist)) @ _rx(_rad(pitch)) @ _rz(_rad(side))


def _arm_angles(rng: np.random.Generator, mode: str) -> tuple[float, float, float, float]:
    """(flexion, abduction, elbow bend, twist) in degrees for one arm."""
    if mode == "rest":
        return float(np.clip(rng.normal(5, 15), -30, 45)), rng.uniform(4, 25), rng.uniform(0, 45), rng.uniform(-20, 40)
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


def _add_arms(rng: np.random.Generator, pts: dict, torso: np.ndarray, build: _Build) -> None:
    """Shoulders, elbows, wrists and hands; each arm has its own mode ("up" is often symmetric)."""
    arm_modes = [str(rng.choice(("rest", "active", "up", "hips"), p=(0.45, 0.3, 0.15, 0.1))) for _ in range(2)]
    if "up" in arm_modes and rng.random() < 0.3:
        arm_modes = ["up", "up"]
    upper_arm, forearm = build.upper_arm, build.forearm
    for k, (sgn, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        flex, abd, bend, tw = _arm_angles(rng, arm_modes[k])
        a_abd = _rz(sgn * _rad(abd))
        d_up = a_abd @ _rx(-_rad(flex)) @ _DOWN
        d_lo = a_abd @ _rx(-_rad(flex + bend)) @ _DOWN
        d_lo = _rotate_about(d_lo, d_up, sgn * _rad(tw))
        sho = np.array([sgn * build.shoulder_half, build.torso_len - 0.035, 0.0])
        pts[f"{name}_shoulder"] = torso @ sho
        pts[f"{name}_elbow"] = torso @ (sho + upper_arm * d_up)
        pts[f"{name}_wrist"] = torso @ (sho + upper_arm * d_up + forearm * d_lo)
        pts[f"{name}_hand"] = torso @ (sho + upper_arm * d_up + (forearm + 0.03) * d_lo)


def _add_legs(rng: np.random.Generator, pts: dict, mode: str, build: _Build) -> None:
    """Hips, knees, ankles and toes (the legs hang from the pelvis, not the torso)."""
    stride = rng.uniform(10, 35)
    first_left = rng.random() < 0.5  # which leg leads (walk/kneel): a mirror-symmetric choice
    for k, (sgn, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        flex, abd, bend = _leg_angles(rng, mode, (k == 0) == first_left, stride)
        l_abd = _rz(sgn * _rad(abd))
        d_up = l_abd @ _rx(-_rad(flex)) @ _DOWN
        d_lo = l_abd @ _rx(-_rad(flex) + _rad(bend)) @ _DOWN
        hip = np.array([sgn * build.hip_half, 0.0, 0.0])
        knee = hip + build.thigh * d_up
        ankle = knee + build.shin * d_lo
        pts[f"{name}_hip"], pts[f"{name}_knee"], pts[f"{name}_ankle"] = hip, knee, ankle
        pts[f"{name}_toe"] = ankle + np.array([0.0, -0.025, 0.075])


def _add_head(rng: np.random.Generator, pts: dict, torso: np.ndarray) -> np.ndarray:
    """The head centre and face points; the head has its own yaw/pitch/roll on top of the torso.
    Returns the head rotation (columns: left, up, forward)."""
    h_yaw = float(np.clip(rng.normal(0, 25), -70, 70))
    head = torso @ _ry(_rad(h_yaw)) @ _rx(_rad(rng.normal(0, 10))) @ _rz(_rad(rng.normal(0, 8)))
    h_up, h_fwd, h_left = head[:, 1], head[:, 2], head[:, 0]
    centre = pts["neck"] + head @ np.array([0.0, 0.075, 0.005])
    pts["head"] = centre
    pts["nose"] = centre + 0.048 * h_fwd - 0.012 * h_up
    pts["left_eye"] = centre + 0.04 * h_fwd + 0.022 * h_left + 0.01 * h_up
    pts["right_eye"] = centre + 0.04 * h_fwd - 0.022 * h_left + 0.01 * h_up
    pts["left_ear"] = centre + 0.05 * h_left - 0.004 * h_fwd
    pts["right_ear"] = centre - 0.05 * h_left - 0.004 * h_fwd
    return head


def _radii(rng: np.random.Generator, build: _Build) -> dict[str, float]:
    """Half-widths of the drawn parts (body units)."""
    limb, width = build.limb, build.width
    return {
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
        "torso_top": build.shoulder_half + 0.01,
        "torso_bot": build.hip_half + 0.03,
        "torso_depth": 0.075 * width,
    }


def sample_figure_pose(rng: np.random.Generator, yaw: float | None = None) -> Pose:
    """Sample a random 3-D figure: proportions, joint angles and body yaw (radians; 0 faces the
    camera, +pi/2 faces the image right). Returns world-axis points in standing-height units.
    (The draws keep one order, so a seed gives the same figure.)"""
    mode = str(rng.choice(_MODES, p=_MODE_P))
    if yaw is None:
        yaw = rng.uniform(-math.pi, math.pi) if rng.random() < 0.5 else float(rng.normal(0.0, _rad(35)))
    yaw = float((yaw + math.pi) % (2 * math.pi) - math.pi)
    build = _sample_build(rng)
    torso = _torso_rotation(rng, mode)
    world = _ry(yaw)

    pts: dict[str, np.ndarray] = {"hip_c": np.zeros(3), "neck": torso @ np.array([0.0, build.torso_len, 0.0])}
    _add_arms(rng, pts, torso, build)
    _add_legs(rng, pts, mode, build)
    head = _add_head(rng, pts, torso)
    radii = _radii(rng, build)
    out = {k: world @ v for k, v in pts.items()}
    return Pose(out, world @ head[:, 1], world @ head[:, 2], world @ head[:, 0], world @ torso[:, 0],
                world @ torso[:, 2], world[:, 2], radii, yaw, mode)

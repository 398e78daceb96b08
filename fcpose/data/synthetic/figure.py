"""One figure in the image: a sampled 3-D pose projected (orthographic, y flipped, rolled, scaled,
translated) and turned into drawing parts — tapered capsules for the limbs, a torso quad, a neck and an
ellipse head with hair, eyes, nose and ears that follow the head's facing direction — each with an
outline and depth shading, painted back to front by depth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...config import COCO_KEYPOINT_NAMES
from .pose import Pose
from .shapes import Shape, capsule, hsv_colour, shade

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

_SKIN = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 30),
         (255, 205, 170), (170, 120, 90)]
_HAIR = [(20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 170, 100), (150, 150, 150), (120, 40, 20)]


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
    right); ``roll``: in-plane rotation in radians; ``height_px``: standing height in pixels."""

    keypoints: np.ndarray
    depth: np.ndarray
    labelled: np.ndarray
    yaw: float
    roll: float
    height_px: float
    mode: str
    parts: list[_Part] = field(repr=False)
    owners: list[int] = field(repr=False)  # per joint: bit mask of part labels it is visible on


def palette(rng: np.random.Generator, avoid: np.ndarray | None) -> dict[str, tuple[int, int, int]]:
    """Per-person colours; clothes are kept away from ``avoid`` (mean RGB of the background)."""

    def contrasted(**kw) -> tuple[int, int, int]:
        best, best_d = None, -1.0
        for _ in range(6):
            c = hsv_colour(rng, **kw)
            d = 1e9 if avoid is None else float(np.linalg.norm(np.asarray(c, float) - avoid))
            if d > best_d:
                best, best_d = c, d
            if d > 90:
                break
        return best  # type: ignore[return-value]

    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    skin = shade(skin, rng.uniform(0.9, 1.08))
    shirt = contrasted()
    pants = contrasted(val=(0.15, 0.8))
    return {
        "skin": skin,
        "shirt": shirt,
        "sleeve": shirt if rng.random() < 0.55 else skin,
        "pants": pants,
        "shin": pants if rng.random() < 0.75 else skin,
        "hair": _HAIR[int(rng.integers(len(_HAIR)))],
        "shoe": shade(hsv_colour(rng, sat=(0.0, 0.6), val=(0.05, 0.5)), 1.0),
        "eye": (25, 20, 20),
    }


def face_labelled(pose: Pose) -> np.ndarray:
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


def unit_extent(pose: Pose, roll: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Keypoints (17, 2) and the approximate drawn extent (x0, y0, x1, y1) of ``pose`` projected
    at scale 1 (standing-height units, y down, rotated by ``roll``) without translation."""
    cr, sr = math.cos(roll), math.sin(roll)
    rot = np.array([[cr, -sr], [sr, cr]])
    pts = np.stack(list(pose.points.values()))
    xy = np.stack([pts[:, 0], -pts[:, 1]], 1) @ rot.T
    m = 0.075  # head / thigh widths beyond the points
    box = (float(xy[:, 0].min() - m), float(xy[:, 1].min() - m), float(xy[:, 0].max() + m), float(xy[:, 1].max() + m))
    kps = np.stack([pose.points[n] for n in COCO_KEYPOINT_NAMES])
    kxy = np.stack([kps[:, 0], -kps[:, 1]], 1) @ rot.T
    return kxy, box


class _Projected:
    """``pose`` in the image: named points (px), their depths (world z), radii (px) and the outline width (px), for a
    projection rotated in-plane by ``roll``, ``scale`` px per standing height, then translated by ``offset`` px."""

    def __init__(self, pose: Pose, roll: float, scale: float, offset: np.ndarray):
        cr, sr = math.cos(roll), math.sin(roll)
        self.rot = np.array([[cr, -sr], [sr, cr]]) * scale
        self.scale, self.offset = scale, offset
        self.p = {k: self.point(v) for k, v in pose.points.items()}
        self.z = {k: float(v[2]) for k, v in pose.points.items()}
        self.r = {k: v * scale for k, v in pose.radii.items()}
        self.ow = max(1.0, 0.009 * scale)

    def point(self, v: np.ndarray) -> np.ndarray:
        return self.rot @ np.array([v[0], -v[1]]) + self.offset

    def direction(self, v: np.ndarray) -> np.ndarray:
        return self.rot @ np.array([v[0], -v[1]]) / self.scale


def _depth_shade(colour, z: float) -> tuple[int, int, int]:
    """Nearer parts lighter, farther ones darker."""
    return shade(colour, float(np.clip(1.0 + 1.6 * z, 0.72, 1.22)))


def _dark(colour) -> tuple[int, int, int]:
    """The outline colour of a part of ``colour``."""
    return shade(colour, 0.5)


def _outlined_capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float, colour, ow: float) -> list:
    """A capsule (in the mask) in the dark of ``colour`` grown by ``ow``, with the capsule on top."""
    shapes = [(s, _dark(colour), True) for s in capsule(a, b, ra + ow, rb + ow)]
    return shapes + [(s, colour, False) for s in capsule(a, b, ra, rb)]


def _capsule_part(body: _Projected, a: str, b: str, ra: float, rb: float, colour, label: int,
                  bias: float = 0.0) -> _Part:
    """The limb from point ``a`` to ``b``, at their mean depth (+ ``bias``, to order touching parts)."""
    z = 0.5 * (body.z[a] + body.z[b])
    shapes = _outlined_capsule(body.p[a], body.p[b], ra, rb, _depth_shade(colour, z), body.ow)
    return _Part(z + bias, label, shapes)


def _limb_parts(body: _Projected, side: str, colours: dict) -> list[_Part]:
    """Upper arm, forearm with the hand, thigh, and shin with the foot of one ``side``."""
    ua, fa, th, sh = (_L_UARM, _L_FARM, _L_THIGH, _L_SHIN) if side == "left" else (_R_UARM, _R_FARM, _R_THIGH, _R_SHIN)
    p, r, ow = body.p, body.r, body.ow
    upper = _capsule_part(body, f"{side}_shoulder", f"{side}_elbow", r["upper_arm"], r["upper_arm"] * 0.9,
                          colours["shirt"], ua, 0.004)
    farm = _capsule_part(body, f"{side}_elbow", f"{side}_wrist", r["forearm"] * 1.05, r["forearm"] * 0.85,
                         colours["sleeve"], fa, 0.006)
    hand_col = _depth_shade(colours["skin"], body.z[f"{side}_hand"])
    hp = p[f"{side}_hand"]
    farm.shapes += [
        (("circle", hp[0], hp[1], r["hand"] + ow), _dark(hand_col), True),
        (("circle", hp[0], hp[1], r["hand"]), hand_col, False),
    ]
    thigh = _capsule_part(body, f"{side}_hip", f"{side}_knee", r["thigh0"], r["thigh1"], colours["pants"], th, -0.012)
    shin = _capsule_part(body, f"{side}_knee", f"{side}_ankle", r["thigh1"] * 0.9, r["shin"], colours["shin"], sh,
                         -0.006)
    shoe = _depth_shade(colours["shoe"], body.z[f"{side}_toe"])
    shin.shapes += _outlined_capsule(p[f"{side}_ankle"], p[f"{side}_toe"], r["foot"], r["foot"], shoe, ow)
    return [upper, farm, thigh, shin]


def _torso_part(body: _Projected, pose: Pose, colours: dict) -> _Part:
    """A quad from the shoulder line to below the hips, its lower part in trouser colour; its projected
    half-widths come from an elliptic cross-section (lateral x depth) seen under the torso's yaw."""
    p, r, ow, scale = body.p, body.r, body.ow, body.scale
    lx, fx = abs(float(pose.torso_left[0])), abs(float(pose.torso_fwd[0]))
    top_c = 0.5 * (p["left_shoulder"] + p["right_shoulder"])
    bot_c = p["hip_c"]
    axis = top_c - bot_c
    alen = max(1e-3, math.hypot(axis[0], axis[1]))
    u = axis / alen
    n = np.array([-u[1], u[0]])
    w_top = math.hypot(r["torso_top"] * lx, r["torso_depth"] * fx)
    lxp, fxp = abs(math.cos(pose.yaw)), abs(math.sin(pose.yaw))
    w_bot = math.hypot(r["torso_bot"] * lxp, r["torso_depth"] * 1.1 * fxp)
    top = top_c + u * 0.02 * scale
    bot = bot_c - u * 0.03 * scale
    torso_col = _depth_shade(colours["shirt"], 0.0)

    def quad(grow: float) -> np.ndarray:
        t, b = top + u * grow, bot - u * grow
        return np.stack(
            [t + n * (w_top + grow), t - n * (w_top + grow), b - n * (w_bot + grow), b + n * (w_bot + grow)]
        )

    shapes = [(("poly", quad(ow)), _dark(torso_col), True), (("poly", quad(0.0)), torso_col, False)]
    bq = quad(0.0)
    mid = 0.72  # lower part of the torso in trouser colour
    lower = np.stack([bq[3] + (bq[0] - bq[3]) * (1 - mid), bq[2] + (bq[1] - bq[2]) * (1 - mid), bq[2], bq[3]])
    shapes.append((("poly", lower), shade(colours["pants"], 0.95), False))
    return _Part(0.0, _TORSO, shapes)


def _neck_part(body: _Projected, colours: dict) -> _Part:
    """A capsule from the middle of the shoulder line to the head centre."""
    top_c = 0.5 * (body.p["left_shoulder"] + body.p["right_shoulder"])
    neck = body.r["neck"]
    return _Part(-0.001, _NECK, _outlined_capsule(top_c, body.p["head"], neck, neck,
                                                  _depth_shade(colours["skin"], 0.0), body.ow))


def _head_part(body: _Projected, pose: Pose, colours: dict, labelled: np.ndarray) -> _Part:
    """An outlined ellipse with hair behind the face (facing the camera) or over the back of the head,
    and the face details of the labelled (camera-facing) face points."""
    ow = body.ow
    up2 = body.direction(pose.head_up)
    upn = math.hypot(up2[0], up2[1])
    angle = math.degrees(math.atan2(-up2[0], up2[1])) if upn > 1e-6 else 0.0
    hw_px, hh_px = body.r["head_w"], body.r["head_h"] * max(0.8, min(1.0, upn))
    hc = body.p["head"]
    skin = _depth_shade(colours["skin"], 0.05)
    fwd_z = float(pose.head_fwd[2])
    hair_c = body.point(pose.points["head"] - 0.014 * pose.head_fwd + 0.012 * pose.head_up)
    hair = ("ellipse", hair_c[0], hair_c[1], hw_px * 1.02, hh_px * 0.93, angle, -1)
    shapes: list = []
    if fwd_z >= 0:  # face towards the camera: hair behind the face
        hair_outline = ("ellipse", hair_c[0], hair_c[1], hw_px * 1.02 + ow, hh_px * 0.93 + ow, angle, -1)
        shapes += [(hair_outline, _dark(colours["hair"]), True), (hair, colours["hair"], True)]
    shapes.append((("ellipse", hc[0], hc[1], hw_px + ow, hh_px + ow, angle, -1), _dark(skin), True))
    shapes.append((("ellipse", hc[0], hc[1], hw_px, hh_px, angle, -1), skin, True))
    if fwd_z < 0:  # back of the head towards the camera: hair over it
        shapes.append((hair, colours["hair"], True))
    shapes += _face_details(body, labelled, angle, skin, colours["eye"])
    return _Part(float(pose.points["head"][2]) + 0.02, _HEAD, shapes)


def _face_details(body: _Projected, labelled: np.ndarray, angle: float, skin, eye) -> list:
    """Ears (ellipses at the head's ``angle``), nose and eyes on the labelled face points."""
    r_feat = max(0.9, 0.011 * body.scale)
    shapes: list = []
    for name in ("left_ear", "right_ear", "nose", "left_eye", "right_eye"):
        if not labelled[COCO_KEYPOINT_NAMES.index(name)]:
            continue
        q = body.p[name]
        if name.endswith("ear"):
            shapes.append((("ellipse", q[0], q[1], r_feat * 0.9, r_feat * 1.6, angle, -1), shade(skin, 0.85), True))
        elif name == "nose":
            shapes.append((("circle", q[0], q[1], r_feat * 0.9), shade(skin, 0.78), True))
        else:
            shapes.append((("circle", q[0], q[1], r_feat * 0.75), eye, True))
    return shapes


def _joint_owners(depth: np.ndarray) -> list[int]:
    """Per joint, the bit mask of the part labels it is visible on (see ``_JOINT_PARTS``); shoulders and
    hips also count as visible on the torso (and shoulders on the neck) when on its near half."""
    owners = [sum(1 << lab for lab in labs) for labs in _JOINT_PARTS]
    for k, extra in ((L_SHO, (_TORSO, _NECK)), (R_SHO, (_TORSO, _NECK)), (L_HIP, (_TORSO,)), (R_HIP, (_TORSO,))):
        if depth[k] > -0.04:
            owners[k] |= sum(1 << lab for lab in extra)
    return owners


def build_figure(pose: Pose, roll: float, scale: float, offset: np.ndarray, colours: dict) -> Figure:
    """Project ``pose`` (orthographic, y flipped, rotated in-plane by ``roll``, scaled by ``scale``
    px per standing height, translated by ``offset`` px) and build its drawing parts, back to front."""
    body = _Projected(pose, roll, scale, offset)
    labelled = face_labelled(pose)
    parts = _limb_parts(body, "left", colours) + _limb_parts(body, "right", colours)
    parts += [_torso_part(body, pose, colours), _neck_part(body, colours), _head_part(body, pose, colours, labelled)]
    parts.sort(key=lambda part: part.z)
    kps = np.stack([body.p[n] for n in COCO_KEYPOINT_NAMES])
    depth = np.array([body.z[n] for n in COCO_KEYPOINT_NAMES])
    return Figure(kps, depth, labelled, pose.yaw, roll, scale, pose.mode, parts, _joint_owners(depth))

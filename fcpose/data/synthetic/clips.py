"""Synthetic tracking clips: the figures of :mod:`fcpose.data.synthetic` walking across the frame,
turning, crossing and occluding each other, with ground-truth ``track_id`` s.

Each person of a clip keeps its body (proportions, joint angles, colours; one seed for
:func:`~fcpose.data.synthetic.pose.sample_figure_pose`) and changes only its body yaw (turning) and its
position: walking left or right (half the people each way, so they cross), turning back smoothly
before the image borders (a sinusoidal path), with a small vertical drift. People lower in the frame are drawn in front,
so crossings occlude. :func:`write_clips` renders the clips to MP4 and writes their ground truth in the
PoseTrack-style format of :mod:`fcpose.tracking.posetrack`; :meth:`Clip.ground_truth` gives the same
poses as arrays without rendering (for tracker-only benchmarks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from .background import background
from .figure import build_figure, palette, unit_extent
from .pose import sample_figure_pose
from .scene import Scene, check_size


@dataclass
class ClipPerson:
    track_id: int
    pose_seed: int
    yaw0: float  # radians
    yaw_speed: float  # radians per frame
    roll: float
    height_px: float  # standing height in pixels
    x0: float  # box-centre x at frame 0
    foot0: float  # box bottom y at frame 0
    vx: float  # px per frame
    vy: float
    colours: dict


@dataclass
class ClipFrameTruth:
    track_ids: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, 17, 2] continuous pixel coordinates
    labelled: np.ndarray  # [N, 17] bool: a labelled keypoint inside the image
    boxes: np.ndarray  # [N, 4] xyxy (the figure's projected extent, clipped to the image)


@dataclass
class Clip:
    height: int
    width: int
    num_frames: int
    background: np.ndarray
    people: list[ClipPerson]
    grain: float

    def _state(self, person: ClipPerson, t: int) -> tuple[float, float]:
        """Box-centre x and box bottom y at frame t: walking at ``vx`` and turning back smoothly before
        the borders (a sinusoid through the start point with that speed there), drifting at ``vy``."""
        margin = 0.15 * person.height_px
        lo, hi = margin, self.width - margin
        centre, amp = 0.5 * (lo + hi), 0.5 * max(hi - lo, 1e-3)
        phase0 = math.asin(float(np.clip((person.x0 - centre) / amp, -1.0, 1.0)))
        omega = abs(person.vx) / max(amp * math.cos(phase0), 0.25 * amp)
        x = centre + amp * math.sin(phase0 + math.copysign(omega, person.vx) * t)
        y = float(np.clip(person.foot0 + person.vy * t, 0.55 * self.height, 1.02 * self.height))
        return x, y

    def _figure(self, person: ClipPerson, t: int):
        yaw = person.yaw0 + person.yaw_speed * t
        pose = sample_figure_pose(np.random.default_rng(person.pose_seed), yaw=yaw)
        _, (x0, y0, x1, y1) = unit_extent(pose, person.roll)
        scale = person.height_px / max(y1 - y0, 0.6)
        cx, foot = self._state(person, t)
        offset = np.array([cx - 0.5 * (x0 + x1) * scale, foot - y1 * scale])
        fig = build_figure(pose, person.roll, scale, offset, person.colours)
        box = np.array([x0 * scale + offset[0], y0 * scale + offset[1], x1 * scale + offset[0], y1 * scale + offset[1]])
        return fig, box

    def scene(self, t: int) -> tuple[Scene, list[int]]:
        """The scene of frame ``t`` and the track id of each of its figures (in drawing order)."""
        items = [(self._state(p, t)[1], p.track_id, self._figure(p, t)[0]) for p in self.people]
        items.sort(key=lambda it: it[0])  # lower in the image = nearer: drawn last
        scene = Scene(self.height, self.width, self.background, [it[2] for it in items], [], self.grain,
                      int(t) + 1, False)
        return scene, [it[1] for it in items]

    def ground_truth(self, t: int) -> ClipFrameTruth:
        """Poses of frame ``t`` without rendering; people entirely outside the image are left out."""
        ids, kps, lab, boxes = [], [], [], []
        for p in self.people:
            fig, box = self._figure(p, t)
            k = fig.keypoints
            inside = (k[:, 0] >= 0) & (k[:, 0] < self.width) & (k[:, 1] >= 0) & (k[:, 1] < self.height)
            valid = inside & fig.labelled
            if valid.sum() == 0:
                continue
            b = np.array([max(box[0], 0), max(box[1], 0), min(box[2], self.width), min(box[3], self.height)])
            ids.append(p.track_id)
            kps.append(k.copy())
            lab.append(valid)
            boxes.append(b)
        n = len(ids)
        return ClipFrameTruth(np.asarray(ids, np.int64), np.asarray(kps).reshape(n, 17, 2),
                              np.asarray(lab, bool).reshape(n, 17), np.asarray(boxes).reshape(n, 4))


def sample_clip(rng: np.random.Generator, height: int = 288, width: int = 384, num_frames: int = 60,
                num_people: int = 4) -> Clip:
    """A clip of ``num_people`` walkers on a textured background (see the module doc)."""
    check_size(height, width)
    if num_frames < 1 or num_people < 0:
        raise InputError(f"a clip needs >= 1 frame and >= 0 people, got {num_frames} and {num_people}")
    h, w = int(height), int(width)
    bg = background(rng, h, w)
    people = []
    for i in range(num_people):
        direction = 1.0 if i % 2 == 0 else -1.0
        height_px = h * rng.uniform(0.38, 0.62)
        turning = rng.random() < 0.5
        people.append(ClipPerson(
            track_id=i + 1,
            pose_seed=int(rng.integers(2**31)),
            yaw0=float(rng.uniform(-math.pi, math.pi)),
            yaw_speed=float(rng.uniform(-0.08, 0.08)) if turning else 0.0,
            roll=math.radians(float(np.clip(rng.normal(0, 4), -10, 10))),
            height_px=float(height_px),
            x0=float(rng.uniform(0.15, 0.85) * w),
            foot0=float(rng.uniform(0.62, 0.98) * h),
            vx=float(direction * rng.uniform(0.006, 0.02) * w),
            vy=float(rng.uniform(-0.002, 0.002) * h),
            colours=palette(rng, None),
        ))
    grain = float(rng.uniform(1, 4))
    return Clip(h, w, int(num_frames), bg, people, grain)


def clip_for(seed: int, index: int, *, height: int = 288, width: int = 384, num_frames: int = 60,
             min_people: int = 2, max_people: int = 5) -> Clip:
    """Clip ``index`` of the set for ``seed`` (deterministic, independent of how many are made)."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    n = int(rng.integers(int(min_people), int(max_people) + 1))
    return sample_clip(rng, height, width, num_frames, n)


def write_clips(out_dir: str | Path, num_clips: int, seed: int = 0, *, num_frames: int = 60, height: int = 288,
                width: int = 384, min_people: int = 2, max_people: int = 5, fps: float = 25.0,
                progress: bool = True) -> Path:
    """Render ``num_clips`` clips to ``out_dir/videos/clip_NNN.mp4`` and write their ground truth to
    ``out_dir/annotations.json`` (PoseTrack-style, ``vid_id`` = the clip's name, keypoint flags 0/1/2 as
    in the COCO synth data). Returns the JSON path."""
    from tqdm import tqdm

    from ...tracking.posetrack import PoseTrackWriter
    from ..video import VideoWriter

    if int(num_clips) < 1:
        raise InputError(f"--num must be >= 1 for --video, got {num_clips}")
    if not 0 <= int(min_people) <= int(max_people):
        raise InputError(f"need 0 <= min_people <= max_people, got {min_people}, {max_people}")
    out = Path(out_dir)
    vid_dir = out / "videos"
    vid_dir.mkdir(parents=True, exist_ok=True)
    writer = PoseTrackWriter(out / "annotations.json")
    for c in tqdm(range(int(num_clips)), desc="synth clips", unit="clip", disable=not progress):
        clip = clip_for(seed, c, height=height, width=width, num_frames=num_frames, min_people=min_people,
                        max_people=max_people)
        name = f"clip_{c:03d}"
        vnum = writer.add_video(name)
        path = vid_dir / f"{name}.mp4"
        tmp = vid_dir / f".{name}.tmp.mp4"
        with VideoWriter(tmp, fps, clip.width, clip.height) as video:
            for t in range(clip.num_frames):
                scene, ids = clip.scene(t)
                rendered = scene.render()
                video.write(rendered.image)
                people = []
                for tid, ann in zip(ids, rendered.annotations):
                    if ann["num_keypoints"] == 0 or ann["bbox"][2] <= 0:
                        continue
                    x, y, bw, bh = ann["bbox"]
                    people.append({"track_id": int(tid), "category_id": 1, "keypoints": ann["keypoints"],
                                   "scores": [1.0 if v > 0 else 0.0 for v in ann["keypoints"][2::3]],
                                   "bbox": [x, y, bw, bh], "score": 1.0, "num_keypoints": ann["num_keypoints"],
                                   "area": ann["area"], "iscrowd": 0})
                writer.add_frame(vnum, t, people, file_name=f"videos/{name}.mp4", width=clip.width, height=clip.height)
        tmp.replace(path)
    return writer.write()

"""PoseTrack18-style JSON (and MOT-challenge text) for tracked people: writing and reading back.

The layout is the PoseTrack 2018 annotation format, COCO-like:

* ``images``: one per frame, ``{"id", "file_name", "frame_id", "vid_id", "frame_index", "nframes",
  "is_labeled", "width", "height"}``. As in PoseTrack18, ``frame_id`` equals ``id``
  (``(video_number + 1) * 10000 + frame_index``), ``vid_id`` is the video's name, and ``frame_index``
  (0-based) is added for convenience.
* ``annotations``: one per person and frame, ``{"id", "image_id", "track_id", "category_id",
  "keypoints" (3K: x, y, v), "scores" (K keypoint scores), "bbox" (x, y, w, h), "score"}``. Keypoints are in
  COCO's pixel-index convention (continuous coordinates minus 0.5), as in every fcpose JSON. Predicted
  keypoints carry ``v = score`` like COCO results; ground truth carries 0/1/2 flags.
* ``categories``: the person category with the keypoint names and the 1-based skeleton.

MOT-challenge text is one line per person and frame: ``frame,id,x,y,w,h,score,-1,-1,-1`` (1-based frame)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import COCO_KEYPOINT_NAMES, COCO_SKELETON, KeypointSetConfig
from ..errors import InputError, one_line
from ..fileio import atomic_write_text

FRAMES_PER_VIDEO_ID = 10000


def image_id(video_number: int, frame_index: int) -> int:
    """PoseTrack-style image id ``(video_number + 1) * 10000 + frame_index``."""
    if frame_index >= FRAMES_PER_VIDEO_ID:
        # Long streams: keep ids unique by widening the frame field.
        return (video_number + 1) * FRAMES_PER_VIDEO_ID**2 + frame_index
    return (video_number + 1) * FRAMES_PER_VIDEO_ID + frame_index


def categories(names: Sequence[str] | None = None, skeleton: Sequence[Sequence[int]] | None = None) -> list[dict]:
    names = list(names) if names is not None else list(COCO_KEYPOINT_NAMES)
    skeleton = [list(pair) for pair in skeleton] if skeleton is not None else COCO_SKELETON
    return [KeypointSetConfig(names=names, skeleton=skeleton).coco_category()]


def person_entry(track_id: int, box_xyxy, score: float, keypoints: np.ndarray, *, continuous: bool = True) -> dict:
    """One annotation (without ``id``/``image_id``) from a box, score and ``[K, 3]`` keypoints.

    ``continuous``: the keypoints are fcpose continuous pixel coordinates (-0.5 is applied).

    Args:
        track_id: The person's track id.
        box_xyxy: The box, xyxy.
        score: The detection score.
        keypoints: ``[K, 3]`` (x, y, score).
        continuous: The keypoints are in continuous pixel coordinates (converted to pixel indices).

    Returns:
        ``track_id``, ``category_id``, ``keypoints`` (3K), ``scores`` (K), ``bbox`` (xywh) and ``score``.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3).copy()
    if continuous:
        kp[:, :2] -= 0.5
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return {
        "track_id": int(track_id),
        "category_id": 1,
        "keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
        "scores": [round(float(v), 4) for v in kp[:, 2]],
        "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
        "score": round(float(score), 5),
    }


class PoseTrackWriter:
    """Collects frames of one or more videos and writes the JSON (and optional MOT text) atomically.

    :meth:`write` can be called any number of times (e.g. every few seconds of a live stream and once
    more after Ctrl-C): each call replaces the files with a complete, valid version of everything so far.

    Args:
        json_path: The PoseTrack-style JSON file to write.
        mot_dir: A folder for one MOT text file per video, or ``None`` for none.
        keypoint_names: The keypoint names of the category; default COCO's.
        skeleton: The skeleton's 0-based keypoint pairs; default COCO's.
    """

    def __init__(self, json_path: str | Path, mot_dir: str | Path | None = None,
                 keypoint_names: Sequence[str] | None = None, skeleton: Sequence[Sequence[int]] | None = None):
        self.json_path = Path(json_path)
        self.mot_dir = Path(mot_dir) if mot_dir is not None else None
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.categories = categories(keypoint_names, skeleton)
        self._videos: list[str] = []
        self._mot: dict[str, list[str]] = {}
        self._frames: dict[str, list[dict]] = {}

    def add_video(self, name: str) -> int:
        """Register a video (its ``vid_id``); returns its number.

        Args:
            name: The video's name (its ``vid_id`` and MOT file name).

        Returns:
            Its number, for ``add_frame``.
        """
        self._videos.append(name)
        self._mot[name] = []
        self._frames[name] = []
        return len(self._videos) - 1

    def add_frame(self, video_number: int, frame_index: int, people: Iterable[dict], *, file_name: str = "",
                  width: int = 0, height: int = 0) -> int:
        """Add one frame with its people (:func:`person_entry` dicts); returns the image id.

        Args:
            video_number: The number ``add_video`` returned.
            frame_index: The frame's 0-based index in the video.
            people: The frame's ``person_entry`` dicts.
            file_name: The frame's file name; default ``NAME/FRAME.jpg``.
            width: The frame's width.
            height: The frame's height.

        Returns:
            The frame's image id.
        """
        name = self._videos[video_number]
        iid = image_id(video_number, frame_index)
        image = {"id": iid, "file_name": file_name or f"{name}/{frame_index:06d}.jpg", "frame_id": iid,
                 "vid_id": name, "frame_index": int(frame_index), "nframes": 0, "is_labeled": True,
                 "width": int(width), "height": int(height)}
        self.images.append(image)
        self._frames[name].append(image)
        for person in people:
            ann = {"id": len(self.annotations) + 1, "image_id": iid, **person}
            self.annotations.append(ann)
            x, y, w, h = ann["bbox"]
            self._mot[name].append(f"{frame_index + 1},{ann['track_id']},{x:.2f},{y:.2f},{w:.2f},{h:.2f},"
                                   f"{ann['score']:.4f},-1,-1,-1")
        return iid

    def write(self) -> Path:
        """Write (replace) the JSON file and the MOT files with everything added so far.

        Returns:
            The JSON file's path.
        """
        for frames in self._frames.values():
            for image in frames:
                image["nframes"] = len(frames)
        data = {"images": self.images, "annotations": self.annotations, "categories": self.categories}
        atomic_write_text(self.json_path, json.dumps(data, separators=(",", ":")))
        if self.mot_dir is not None:
            for name, lines in self._mot.items():
                atomic_write_text(self.mot_dir / f"{name}.txt", "".join(line + "\n" for line in lines))
        return self.json_path


# ---- Reading -------------------------------------------------------------------------------
@dataclass
class TrackFrame:
    """People of one frame as read back: arrays in COCO pixel-index convention."""

    image_id: int
    frame_index: int
    file_name: str
    track_ids: np.ndarray  # [N]
    boxes: np.ndarray  # [N, 4] xywh
    scores: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, K, 3]


def load_posetrack(path_or_data, num_keypoints: int | None = None) -> dict[str, list[TrackFrame]]:
    """Read a PoseTrack-style JSON (a path or the parsed dict) -> ``{vid_id: [TrackFrame, ...]}`` in
    frame order. Frames without people are kept (empty arrays). :class:`InputError` if the file is missing
    or not JSON, or an entry lacks a required field.

    Args:
        path_or_data: A PoseTrack-style JSON file, or its parsed dict.
        num_keypoints: K; default: from the file's category, else COCO's 17.

    Returns:
        The frames of each video, by ``vid_id``.

    Raises:
        InputError: The file is missing or not JSON, or an entry lacks a required field.
    """
    if isinstance(path_or_data, dict):
        data, label = path_or_data, "PoseTrack data"
    else:
        label = str(path_or_data)
        try:
            data = json.loads(Path(path_or_data).read_text())
        except FileNotFoundError:
            raise InputError(f"PoseTrack file not found: {label}") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read PoseTrack file {label}: {one_line(exc)}") from None
    try:
        images = data["images"]
        anns = data["annotations"]
        if num_keypoints is None:
            cats = data.get("categories") or [{}]
            num_keypoints = len(cats[0].get("keypoints") or COCO_KEYPOINT_NAMES)
        by_image: dict[int, list[dict]] = {}
        for ann in anns:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        videos: dict[str, list[TrackFrame]] = {}
        for im in images:
            iid = int(im["id"])
            people = by_image.get(iid, [])
            k = int(num_keypoints)
            kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(len(people), k, 3)
            frame = TrackFrame(
                image_id=iid,
                frame_index=int(im.get("frame_index", iid % FRAMES_PER_VIDEO_ID)),
                file_name=str(im.get("file_name", "")),
                track_ids=np.array([int(a["track_id"]) for a in people], dtype=np.int64),
                boxes=np.array([a["bbox"] for a in people], dtype=np.float64).reshape(len(people), 4),
                scores=np.array([float(a.get("score", 1.0)) for a in people], dtype=np.float64),
                keypoints=kps,
            )
            videos.setdefault(str(im["vid_id"]), []).append(frame)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{label} is not a PoseTrack-style file ({type(exc).__name__}: {exc})") from None
    for frames in videos.values():
        frames.sort(key=lambda f: f.frame_index)
    return videos

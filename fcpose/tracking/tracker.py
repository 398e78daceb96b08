"""Online multi-person tracking with the pose: ByteTrack-style association, a box Kalman filter, and a
cost that mixes box IoU with OKS between each track's predicted pose and the detections.

Per frame (:meth:`PoseTracker.update`):

1. every track predicts its box with its constant-velocity Kalman filter (:mod:`.kalman`); its pose is
   the last matched pose moved and scaled with the box;
2. detections scoring ``>= high_threshold`` are matched to all live tracks (tracked and lost) by the
   Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on
   ``similarity = (1 - pose_weight) * IoU + pose_weight * OKS``, pairs below ``match_threshold`` refused;
3. detections in ``[low_threshold, high_threshold)`` are matched the same way to the *tracked* tracks
   left over (``low_match_threshold``) — ByteTrack's second round, which keeps people through partial
   occlusion when their score dips;
4. unmatched detections scoring ``>= new_track_threshold`` start tracks; a track is reported once it has
   ``min_hits`` matches (at once on the first frame); a track unmatched for more than ``max_missed``
   frames ends, and whoever comes back later gets a new id.

Keypoints of reported people are optionally smoothed by a One-Euro filter per track (:mod:`.one_euro`),
reset whenever the track is lost."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..config import COCO_SIGMAS, TrackerConfig
from ..ops.boxes import box_iou
from ..ops.oks import oks_matrix
from .kalman import BoxKalman
from .one_euro import OneEuroFilter


@dataclass
class TrackedPeople:
    """The people of one frame with their track ids (numpy arrays, original-image pixels). ``keypoints`` are the
    smoothed ones when smoothing is on (``raw_keypoints`` are the detector's).

    Args:
        frame_index: The frame's 0-based index in its sequence.
        track_ids: ``[N]`` track ids, >= 1.
        boxes: ``[N, 4]`` xyxy, the detections' boxes.
        scores: ``[N]`` detection scores.
        keypoints: ``[N, K, 3]`` keypoints, smoothed when smoothing is on.
        raw_keypoints: ``[N, K, 3]`` the detector's keypoints.
        detection_index: ``[N]`` each person's index among the frame's detections.
        image_size: (height, width) of the frame.
    """

    frame_index: int
    track_ids: np.ndarray  # [N] int64, >= 1
    boxes: np.ndarray  # [N, 4] xyxy (the detection's box)
    scores: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, K, 3]
    raw_keypoints: np.ndarray  # [N, K, 3]
    detection_index: np.ndarray  # [N] index of each person among the frame's detections
    image_size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        """The number of people, N.

        Returns:
            N.
        """
        return int(self.track_ids.shape[0])


@dataclass
class _Track:
    track_id: int
    kalman: BoxKalman
    keypoints: np.ndarray  # [K, 3] last matched (raw) pose
    box: np.ndarray  # [4] last matched box
    score: float
    hits: int = 1
    missed: int = 0
    reported: bool = False
    smoother: OneEuroFilter | None = None
    pred_box: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def predicted_pose(self) -> np.ndarray:
        """The last matched pose carried along with the box: shifted by the centre's motion, scaled with its size."""
        b0, b1 = self.box, self.pred_box
        c0 = np.array([(b0[0] + b0[2]) / 2, (b0[1] + b0[3]) / 2])
        c1 = np.array([(b1[0] + b1[2]) / 2, (b1[1] + b1[3]) / 2])
        s = np.array([(b1[2] - b1[0]) / max(b0[2] - b0[0], 1e-3), (b1[3] - b1[1]) / max(b0[3] - b0[1], 1e-3)])
        out = self.keypoints.copy()
        out[:, :2] = (out[:, :2] - c0) * s + c1
        return out


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


class PoseTracker:
    """Assign persistent ``track_id`` s to per-frame pose detections (see the module doc).

    ``sigmas``: the keypoint set's OKS sigmas (default COCO's 17). ``fps`` sets the One-Euro time base.

    Args:
        cfg: The tracker settings; default ``TrackerConfig()``.
        sigmas: The keypoint set's OKS sigmas; default COCO's.
        fps: The frame rate, the One-Euro time base.
    """

    def __init__(self, cfg: TrackerConfig | None = None, sigmas: Sequence[float] | None = None, fps: float = 25.0):
        self.cfg = copy.deepcopy(cfg) if cfg is not None else TrackerConfig()
        self.sigmas = np.asarray(list(sigmas) if sigmas is not None else COCO_SIGMAS, dtype=np.float64)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.tracks: list[_Track] = []
        self.frame_index = -1
        self._next_id = 1

    def reset(self) -> None:
        """End every track and start over: frame indices and track ids restart."""
        self.tracks = []
        self.frame_index = -1
        self._next_id = 1

    def similarity(self, tracks: list[_Track], boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """``[T, D]`` similarity of tracks (predicted box and pose) and detections.

        Args:
            tracks: The tracks, with their predicted boxes.
            boxes: ``[D, 4]`` detection boxes, xyxy.
            keypoints: ``[D, K, 3]`` detection keypoints.

        Returns:
            ``(1 - pose_weight) * IoU + pose_weight * OKS``.
        """
        if not tracks or boxes.shape[0] == 0:
            return np.zeros((len(tracks), boxes.shape[0]))
        pred = np.stack([t.pred_box for t in tracks])
        iou = box_iou(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(boxes, dtype=torch.float64))
        iou = iou.numpy()
        w = float(self.cfg.pose_weight)
        if w <= 0:
            return iou
        poses = np.stack([t.predicted_pose() for t in tracks])
        areas = np.clip(pred[:, 2] - pred[:, 0], 1e-3, None) * np.clip(pred[:, 3] - pred[:, 1], 1e-3, None)
        oks = oks_matrix(poses, keypoints, areas, self.sigmas, threshold=self.cfg.keypoint_threshold)
        return (1.0 - w) * iou + w * oks

    @staticmethod
    def _assign(sim: np.ndarray, threshold: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        if sim.size == 0:
            return [], list(range(sim.shape[0])), list(range(sim.shape[1]))
        rows, cols = linear_sum_assignment(-sim)
        matches = [(int(r), int(c)) for r, c in zip(rows, cols) if sim[r, c] >= threshold]
        mr = {r for r, _ in matches}
        mc = {c for _, c in matches}
        return matches, [r for r in range(sim.shape[0]) if r not in mr], [c for c in range(sim.shape[1]) if c not in mc]

    def _new_smoother(self) -> OneEuroFilter | None:
        if not self.cfg.smooth:
            return None
        return OneEuroFilter(self.cfg.min_cutoff, self.cfg.beta, self.cfg.d_cutoff, speed_axes=(-1,))

    def update(self, boxes, scores, keypoints, image_size: tuple[int, int] = (0, 0)) -> TrackedPeople:
        """One frame of detections (``[N, 4]`` xyxy, ``[N]``, ``[N, K, 3]``; tensors or arrays) ->
        the people reported in this frame with their track ids, in detection order.

        Args:
            boxes: ``[N, 4]`` xyxy.
            scores: ``[N]`` detection scores.
            keypoints: ``[N, K, 3]`` (x, y, score).
            image_size: (height, width) of the frame.

        Returns:
            The people reported in this frame.
        """
        self.frame_index += 1
        boxes = _as_numpy(boxes).reshape(-1, 4).astype(np.float64)
        scores = _as_numpy(scores).reshape(-1).astype(np.float64)
        keypoints = _as_numpy(keypoints).reshape(-1, self.sigmas.shape[0], 3).astype(np.float64)
        for t in self.tracks:
            t.pred_box = t.kalman.predict()
        det_track, unmatched_high = self._associate(boxes, scores, keypoints)
        self._update_matched(det_track, boxes, scores, keypoints)
        self._drop_unmatched({track.track_id for track in det_track.values()})
        self._start_tracks(unmatched_high, det_track, boxes, scores, keypoints)
        return self._report(det_track, boxes, scores, keypoints, image_size)

    def _associate(self, boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray
                   ) -> tuple[dict[int, _Track], list[int]]:
        """ByteTrack's two rounds: ``{detection index: its track}`` and the high-score detections left unmatched."""
        cfg, n = self.cfg, boxes.shape[0]
        det_track: dict[int, _Track] = {}
        high = [i for i in range(n) if scores[i] >= cfg.high_threshold]
        low = [i for i in range(n) if cfg.low_threshold <= scores[i] < cfg.high_threshold]

        # Round 1: high-score detections against every live track.
        pool = list(self.tracks)
        sim = self.similarity(pool, boxes[high], keypoints[high])
        matches, left_t, left_d = self._assign(sim, cfg.match_threshold)
        for ti, di in matches:
            det_track[high[di]] = pool[ti]
        # Round 2: low-score detections against the tracks that were tracked last frame and are left.
        pool2 = [pool[i] for i in left_t if pool[i].missed == 0]
        sim2 = self.similarity(pool2, boxes[low], keypoints[low])
        matches2, _, _ = self._assign(sim2, cfg.low_match_threshold)
        for ti, di in matches2:
            det_track[low[di]] = pool2[ti]
        return det_track, [high[j] for j in left_d]

    @staticmethod
    def _update_matched(det_track: dict[int, _Track], boxes: np.ndarray, scores: np.ndarray,
                        keypoints: np.ndarray) -> None:
        """Each matched track takes its detection's box (Kalman update), pose and score."""
        for di, track in det_track.items():
            track.kalman.update(boxes[di])
            if track.missed > 0 and track.smoother is not None:
                track.smoother.reset()  # the track was lost: start smoothing afresh
            track.box, track.keypoints, track.score = boxes[di].copy(), keypoints[di].copy(), float(scores[di])
            track.hits += 1
            track.missed = 0

    def _drop_unmatched(self, matched_ids: set[int]) -> None:
        """Unmatched tracks: lost for one more frame; tentative ones (never reported) end at once, lost ones after
        ``max_missed`` frames."""
        survivors = []
        for t in self.tracks:
            if t.track_id not in matched_ids:
                t.missed += 1
                if not t.reported or t.missed > self.cfg.max_missed:
                    continue
            survivors.append(t)
        self.tracks = survivors

    def _start_tracks(self, candidates: list[int], det_track: dict[int, _Track], boxes: np.ndarray,
                      scores: np.ndarray, keypoints: np.ndarray) -> None:
        """New tracks from the confident (``>= new_track_threshold``) unmatched high-score detections."""
        cfg = self.cfg
        for di in candidates:
            if scores[di] < cfg.new_track_threshold:
                continue
            track = _Track(self._next_id, BoxKalman(boxes[di], cfg.kalman_std_position, cfg.kalman_std_velocity,
                                           cfg.kalman_std_process),
                           keypoints[di].copy(), boxes[di].copy(), float(scores[di]), smoother=self._new_smoother())
            track.pred_box = boxes[di].copy()
            self._next_id += 1
            self.tracks.append(track)
            det_track[di] = track

    def _report(self, det_track: dict[int, _Track], boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                image_size: tuple[int, int]) -> TrackedPeople:
        """The people of confirmed tracks (``min_hits`` matches, or the first frame), keypoints smoothed."""
        cfg, n, k = self.cfg, boxes.shape[0], self.sigmas.shape[0]
        t_now = self.frame_index / self.fps
        out_idx, out_ids, out_kpts = [], [], []
        for di in sorted(det_track):
            track = det_track[di]
            if not track.reported and (track.hits >= cfg.min_hits or self.frame_index == 0):
                track.reported = True
            if not track.reported:
                continue
            kp = keypoints[di].copy()
            if track.smoother is not None:
                # Smoothed relative to the Kalman-filtered box centre: the motion model carries the person's
                # translation without lag, the One-Euro filter removes the jitter of the articulation.
                centre = track.kalman.x[:2].copy()
                conf = kp[:, 2:3] > cfg.keypoint_threshold
                kp[:, :2] = track.smoother(kp[:, :2] - centre, t_now, mask=conf) + centre
            out_idx.append(di)
            out_ids.append(track.track_id)
            out_kpts.append(kp)
        idx = np.asarray(out_idx, dtype=np.int64)
        return TrackedPeople(frame_index=self.frame_index, track_ids=np.asarray(out_ids, dtype=np.int64),
                             boxes=boxes[idx] if n else np.zeros((0, 4)), scores=scores[idx] if n else np.zeros(0),
                             keypoints=np.stack(out_kpts) if out_kpts else np.zeros((0, k, 3)),
                             raw_keypoints=keypoints[idx] if n else np.zeros((0, k, 3)), detection_index=idx,
                             image_size=tuple(image_size))

    def update_detections(self, dets) -> TrackedPeople:
        """:class:`~fcpose.structures.PoseDetections` of one frame -> :class:`TrackedPeople`.

        Args:
            dets: The frame's detections.

        Returns:
            The people reported in this frame.
        """
        return self.update(dets.boxes, dets.scores, dets.keypoints, image_size=dets.image_size)

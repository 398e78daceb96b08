"""Tracker, One-Euro filter and PoseTrack-style output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fcpose.config import COCO_SIGMAS, FCPoseConfig, TrackerConfig, from_dict, to_dict
from fcpose.data.synthetic import clip_for, sample_figure_pose, unit_extent
from fcpose.errors import InputError
from fcpose.ops.oks import oks_matrix
from fcpose.tracking import OneEuroFilter, PoseTracker, PoseTrackWriter, load_posetrack, person_entry


def person(seed: int, cx: float, foot: float, height: float = 160.0):
    """Box (xyxy) and [17, 3] keypoints of the synthetic figure ``seed`` standing at (cx, foot)."""
    pose = sample_figure_pose(np.random.default_rng(seed), yaw=0.0)
    kxy, (x0, y0, x1, y1) = unit_extent(pose, 0.0)
    s = height / (y1 - y0)
    off = np.array([cx - 0.5 * (x0 + x1) * s, foot - y1 * s])
    box = np.array([x0 * s, y0 * s, x1 * s, y1 * s]) + np.r_[off, off]
    return box, np.concatenate([kxy * s + off, np.ones((17, 1))], 1)


def consistent(pairs) -> int:
    """Number of frames where a ground-truth id got another track id than at its first frame, or a
    track id was used by two ground-truth ids."""
    first, owner, bad = {}, {}, 0
    for gt, tid in pairs:
        if first.setdefault(gt, tid) != tid or owner.setdefault(tid, gt) != gt:
            bad += 1
    return bad


# ----------------------------------------------------------------------------------------------
def test_oks_matrix_matches_the_coco_formula():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (2, 17, 2)), np.ones((2, 17, 1))], -1)
    b = a[::-1].copy()
    b[..., :2] += rng.normal(0, 3, b[..., :2].shape)
    areas = np.array([900.0, 2500.0])
    got = oks_matrix(a, b, areas, COCO_SIGMAS)
    var = (2 * np.asarray(COCO_SIGMAS)) ** 2
    for i in range(2):
        for j in range(2):
            d2 = ((a[i, :, :2] - b[j, :, :2]) ** 2).sum(-1)
            assert got[i, j] == pytest.approx(np.mean(np.exp(-d2 / var / areas[i] / 2)))
    b[1, :5, 2] = 0.0  # keypoints under the threshold do not count
    d2 = ((a[0, 5:, :2] - b[1, 5:, :2]) ** 2).sum(-1)
    assert oks_matrix(a, b, areas, COCO_SIGMAS, threshold=0.5)[0, 1] == pytest.approx(
        np.mean(np.exp(-d2 / var[5:] / areas[0] / 2)))


def test_ids_stable_when_people_only_translate():
    clip = clip_for(3, 0, num_frames=60, min_people=4, max_people=4)
    for p in clip.people:
        p.yaw_speed = 0.0
    tracker = PoseTracker()
    pairs = []
    for t in range(clip.num_frames):
        gt = clip.ground_truth(t)
        kp = np.concatenate([gt.keypoints, gt.labelled[..., None].astype(float)], -1)
        out = tracker.update(gt.boxes, np.full(len(gt.track_ids), 0.9), kp)
        assert len(out) == len(gt.track_ids)
        pairs += list(zip(gt.track_ids.tolist(), out.track_ids.tolist()))
    assert consistent(pairs) == 0
    assert len({tid for _, tid in pairs}) == 4


@pytest.mark.parametrize("gap,same", [(5, True), (6, False)])
def test_a_person_back_after_the_allowed_gap_gets_a_new_id(gap, same):
    tracker = PoseTracker(TrackerConfig(max_missed=5))
    ids = []
    for f in range(10 + gap + 5):
        box, kp = person(0, 100 + 2 * f, 300)
        other_box, other_kp = person(4, 400, 300)  # someone else, always there
        if 10 <= f < 10 + gap:
            out = tracker.update(other_box[None], [0.9], other_kp[None])
        else:
            out = tracker.update(np.stack([box, other_box]), [0.9, 0.9], np.stack([kp, other_kp]))
            ids += [int(i) for i, d in zip(out.track_ids, out.detection_index) if d == 0]
        assert int(out.track_ids[-1]) == 2  # the other person keeps id 2 throughout
    assert set(ids[:10]) == {1}
    # Back within the gap: the old id at once. After it: a new track, reported from its second frame.
    assert ids[10:] == ([1] * 5 if same else [3] * 4)


def test_people_who_swap_places_keep_their_ids_when_their_poses_differ():
    """Two people walk through each other (their boxes overlap completely at the crossing) with
    detector jitter on boxes and keypoints. Pose-aware association keeps both ids on every seed; the
    same scenes with IoU-only association swap them on some (so the scenario is a real test)."""
    def run(pose_weight: float, seed: int, n: int = 40, speed: float = 3.0) -> int:
        rng = np.random.default_rng(seed)
        tracker = PoseTracker(TrackerConfig(pose_weight=pose_weight))
        pairs = []
        for f in range(n):
            (ba, ka), (bb, kb) = person(0, 155 + speed * f, 300), person(18, 275 - speed * f, 300)
            boxes = np.stack([ba, bb]) + rng.normal(0, 4.0, (2, 4))
            kps = np.stack([ka, kb])
            kps[:, :, :2] += rng.normal(0, 2.0, (2, 17, 2))
            out = tracker.update(boxes, [0.9, 0.9], kps)
            pairs += list(zip((0, 1), out.track_ids.tolist()))
        return consistent(pairs)

    assert oks_matrix(person(0, 0, 0)[1][None], person(18, 0, 0)[1][None], [12000.0], COCO_SIGMAS)[0, 0] < 0.35
    assert [run(0.5, s) for s in range(6)] == [0] * 6
    assert sum(run(0.0, s) for s in range(6)) > 0


def test_new_tracks_need_the_minimum_score_and_min_hits():
    tracker = PoseTracker(TrackerConfig(new_track_threshold=0.6, min_hits=2))
    box, kp = person(0, 100, 300)
    box2, kp2 = person(4, 400, 300)
    assert len(tracker.update(box[None], [0.55], kp[None])) == 0  # too weak to start a track
    out = tracker.update(box[None], [0.7], kp[None])
    assert len(out) == 0  # tentative: reported from its second hit (only frame 0 reports at once)
    out = tracker.update(box[None], [0.7], kp[None])
    assert out.track_ids.tolist() == [1]
    # A low-score detection continues an existing track (ByteTrack's second round) ...
    out = tracker.update(np.stack([box, box2]), [0.3, 0.3], np.stack([kp, kp2]))
    assert out.track_ids.tolist() == [1]  # ... but starts none


# ----------------------------------------------------------------------------------------------
def one_euro_reference(xs, ts, min_cutoff, beta, d_cutoff):
    """The One-Euro filter for a scalar signal, written as in Casiez et al. 2012 (Fig. / Alg. 1)."""
    def alpha(cutoff, te):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    out = [xs[0]]
    x_prev, dx_prev, t_prev = xs[0], 0.0, ts[0]
    for x, t in zip(xs[1:], ts[1:]):
        te = t - t_prev
        dx = (x - x_prev) / te
        a_d = alpha(d_cutoff, te)
        edx = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * abs(edx)
        a = alpha(cutoff, te)
        x_hat = a * x + (1 - a) * x_prev
        out.append(x_hat)
        x_prev, dx_prev, t_prev = x_hat, edx, t
    return np.array(out)


def test_one_euro_matches_the_published_formula():
    rng = np.random.default_rng(1)
    ts = np.cumsum(rng.uniform(0.02, 0.06, 100))
    xs = np.sin(ts * 3) * 50 + rng.normal(0, 2, 100)
    f = OneEuroFilter(min_cutoff=1.2, beta=0.03, d_cutoff=1.0)
    got = np.array([float(f(np.array([x]), t)[0]) for x, t in zip(xs, ts)])
    np.testing.assert_allclose(got, one_euro_reference(xs, ts, 1.2, 0.03, 1.0), rtol=1e-12, atol=1e-9)
    # One step by hand: beta = 0 is an exponential smoother with alpha = 1 / (1 + 1 / (2 pi fc Te)).
    g = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert g(np.array([0.0]), 0.0)[0] == 0.0
    alpha = 1.0 / (1.0 + 1.0 / (2 * math.pi * 1.0 * 0.04))
    assert g(np.array([10.0]), 0.04)[0] == pytest.approx(10.0 * alpha)


def test_one_euro_skipped_elements_do_not_drag_the_filter():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    f(np.array([0.0, 0.0]), 0.0)
    out = f(np.array([1000.0, 5.0]), 0.04, mask=np.array([False, True]))
    assert out[0] == 1000.0  # passed through unfiltered ...
    assert f.x_hat[0] == 0.0  # ... and the state did not move
    out = f(np.array([1.0, 5.0]), 0.08)  # resumed with the real elapsed time (0.08 s) for element 0
    alpha = 1.0 / (1.0 + 1.0 / (2 * math.pi * 0.08))
    assert out[0] == pytest.approx(alpha * 1.0)


def test_smoothing_resets_when_a_track_is_lost():
    cfg = TrackerConfig(smooth=True, min_cutoff=0.5, beta=0.0)
    tracker = PoseTracker(cfg)
    rng = np.random.default_rng(0)
    box, kp = person(0, 200, 300)
    for _ in range(5):
        noisy = kp.copy()
        noisy[:, :2] += rng.normal(0, 3, (17, 2))
        out = tracker.update(box[None], [0.9], noisy[None])
    assert not np.allclose(out.keypoints, out.raw_keypoints)  # smoothed while tracked
    tracker.update(np.zeros((0, 4)), [], np.zeros((0, 17, 3)))  # lost for a frame
    moved = kp.copy()
    moved[:, :2] += 6.0
    out = tracker.update((box + 6.0)[None], [0.9], moved[None])
    assert out.track_ids.tolist() == [1]
    np.testing.assert_allclose(out.keypoints, out.raw_keypoints)  # restarted: the first sample passes


# ----------------------------------------------------------------------------------------------
def test_posetrack_json_read_back(tmp_path):
    writer = PoseTrackWriter(tmp_path / "tracks.json", mot_dir=tmp_path / "mot")
    v = writer.add_video("walk")
    box, kp = person(0, 100, 300)
    kp[:, 2] = np.linspace(0.1, 0.9, 17)
    writer.add_frame(v, 0, [person_entry(7, box, 0.8, kp)], width=640, height=480)
    writer.add_frame(v, 1, [], width=640, height=480)
    path = writer.write()
    data = json.loads(path.read_text())
    assert {"images", "annotations", "categories"} <= set(data)
    im = data["images"][0]
    assert im["frame_id"] == im["id"] and im["vid_id"] == "walk" and im["nframes"] == 2
    ann = data["annotations"][0]
    assert ann["track_id"] == 7 and len(ann["keypoints"]) == 51 and len(ann["scores"]) == 17
    videos = load_posetrack(path)
    frames = videos["walk"]
    assert [f.frame_index for f in frames] == [0, 1] and len(frames[1].track_ids) == 0
    np.testing.assert_allclose(frames[0].keypoints[0, :, :2], kp[:, :2] - 0.5, atol=1e-3)
    np.testing.assert_allclose(frames[0].boxes[0], [box[0], box[1], box[2] - box[0], box[3] - box[1]], atol=0.01)
    line = (tmp_path / "mot" / "walk.txt").read_text().splitlines()
    assert len(line) == 1 and line[0].startswith("1,7,") and line[0].endswith(",-1,-1,-1")


def test_load_posetrack_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_posetrack(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(InputError, match="not a PoseTrack-style file"):
        load_posetrack(bad)


def test_checkpoint_config_without_tracker_section_loads():
    data = to_dict(FCPoseConfig())
    del data["tracker"]
    assert from_dict(data).tracker == TrackerConfig()
    data["tracker"] = {"pose_weight": 0.25}
    assert from_dict(data).tracker.pose_weight == 0.25

"""Synthetic scene generator: COCO validity, geometry/visibility consistency, determinism, speed."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcpose.config import COCO_KEYPOINT_NAMES, COCO_SKELETON
from fcpose.data.synthetic import generate_dataset, render_scene, sample_figure_pose, sample_scene, synth_main
from fcpose.data.synthetic.figure import L_EYE, L_HIP, L_SHO, R_EYE, R_HIP, R_SHO
from fcpose.errors import InputError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = generate_dataset(out, 6, seed=11, min_people=2, max_people=5, progress=False)
    return out, path


def _coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_dataset_is_valid_coco(dataset):
    out, path = dataset
    assert path == out / "annotations.json"
    coco = _coco(path)
    data = json.loads(path.read_text())
    assert len(data["images"]) == 6
    (cat,) = data["categories"]
    assert cat["id"] == 1 and cat["name"] == "person" and cat["supercategory"] == "person"
    assert cat["keypoints"] == COCO_KEYPOINT_NAMES
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO_SKELETON]
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    readme = (out / "README.txt").read_text().splitlines()
    assert len(readme) == 3 and "seed=11" in readme[1]

    import cv2

    for img in data["images"]:
        pixels = cv2.imread(str(out / "images" / img["file_name"]))
        assert pixels is not None and pixels.shape == (img["height"], img["width"], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert 2 <= len(anns) <= 5
        w, h = img["width"], img["height"]
        for ann in anns:
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            assert kps.shape == (17, 3)
            assert set(np.unique(kps[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum()) > 0
            assert np.all(kps[kps[:, 2] == 0, :2] == 0)
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
            assert 0 < ann["area"] <= bw * bh
            labelled = kps[kps[:, 2] > 0]
            # Keypoints are COCO pixel indices: inside the image and inside the pixel-tight box.
            assert np.all((labelled[:, 0] >= -0.5) & (labelled[:, 0] < w - 0.5))
            assert np.all((labelled[:, 1] >= -0.5) & (labelled[:, 1] < h - 0.5))
            vis = kps[kps[:, 2] == 2]
            assert np.all((vis[:, 0] >= x - 1) & (vis[:, 0] <= x + bw + 1))
            assert np.all((vis[:, 1] >= y - 1) & (vis[:, 1] <= y + bh + 1))


def test_visible_joints_lie_on_the_figure():
    for seed in range(4):
        rng = np.random.default_rng([3, seed])
        scene = sample_scene(rng, 256, 320, 4)
        full = scene.render()
        diffs = []
        for i, (ann, fig, visible) in enumerate(zip(full.annotations, scene.figures, full.visible_masks)):
            without = scene.render(skip=[i]).image
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            # Annotations are the figure's continuous joint positions minus 0.5 (COCO convention).
            lab = kps[:, 2] > 0
            np.testing.assert_allclose(kps[lab, :2], np.round(fig.keypoints[lab] - 0.5, 2), atol=1e-9)
            for flag, (cu, cv) in zip(kps[:, 2], fig.keypoints):
                inside = 0 <= cu < scene.width and 0 <= cv < scene.height
                if not inside:
                    assert flag == 0
                if flag != 2:
                    continue
                px, py = int(cu), int(cv)
                assert visible[py, px] and full.full_masks[i][py, px]
                diffs.append(np.abs(full.image[py, px].astype(int) - without[py, px].astype(int)).max())
        diffs = np.asarray(diffs)
        assert len(diffs) > 10
        # Drawing the person changes the pixel under every visible joint, nearly always clearly.
        assert np.all(diffs > 0)
        assert np.mean(diffs > 20) > 0.9


def test_occluded_joints_are_covered():
    """v=1 joints inside the image are covered by a later figure, an occluder or the person's own
    body; covering by someone else hides the pixel from the person's visible mask."""
    seen_other, seen_self = 0, 0
    for seed in range(6):
        rng = np.random.default_rng([4, seed])
        scene = sample_scene(rng, 256, 320, 6)
        out = scene.render()
        for ann, visible, full in zip(out.annotations, out.visible_masks, out.full_masks):
            # Bbox and area describe the whole figure, including hidden parts.
            ys, xs = np.nonzero(full)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == int(full.sum()) >= int(visible.sum())
            for u, v, flag in np.asarray(ann["keypoints"]).reshape(-1, 3):
                if flag == 1:
                    px, py = int(u + 0.5), int(v + 0.5)
                    assert full[py, px]
                    if visible[py, px]:
                        seen_self += 1
                    else:
                        seen_other += 1
    assert seen_other > 0 and seen_self > 0


def test_people_count_and_determinism(tmp_path):
    a = generate_dataset(tmp_path / "a", 3, seed=5, min_people=3, max_people=4, progress=False)
    b = generate_dataset(tmp_path / "b", 3, seed=5, min_people=3, max_people=4, progress=False)
    c = generate_dataset(tmp_path / "c", 3, seed=6, min_people=3, max_people=4, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert names == ["000001.jpg", "000002.jpg", "000003.jpg"]
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (
            tmp_path / "b" / "images" / name
        ).read_bytes()
        assert (tmp_path / "a" / "images" / name).read_bytes() != (
            tmp_path / "c" / "images" / name
        ).read_bytes()
    data = json.loads(a.read_text())
    for img in data["images"]:
        n = sum(ann["image_id"] == img["id"] for ann in data["annotations"])
        assert 3 <= n <= 4
    # Regenerating fewer images into the same folder removes the stale ones.
    generate_dataset(tmp_path / "a", 1, seed=5, progress=False)
    assert [p.name for p in (tmp_path / "a" / "images").iterdir()] == ["000001.jpg"]


def test_render_scene_counts_and_masks():
    for n in (0, 1, 8):
        image, anns = render_scene(np.random.default_rng(n), 200, 240, n)
        assert image.shape == (200, 240, 3) and image.dtype == np.uint8
        assert len(anns) == n
    out = render_scene(np.random.default_rng(1), 200, 240, 3, return_masks=True)
    assert len(out.full_masks) == len(out.visible_masks) == 3
    assert all(m.shape == (200, 240) and m.dtype == bool for m in out.full_masks)
    # The background is textured, never a plain colour.
    for seed in range(10):
        image, _ = render_scene(np.random.default_rng([9, seed]), 128, 128, 0)
        assert image.reshape(-1, 3).std(0).max() > 4


def test_left_joints_on_image_right_when_facing_camera():
    """With x to the person's left, facing the camera (|yaw| < 45 deg) puts the left shoulder, hip
    and eye on the image right; facing away (|yaw| > 135 deg) on the image left."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        yaw = rng.uniform(-math.pi, math.pi)
        pose = sample_figure_pose(rng, yaw=yaw)
        x = {k: pose.points[COCO_KEYPOINT_NAMES[k]][0] for k in (L_SHO, R_SHO, L_HIP, R_HIP)}
        if abs(yaw) < math.radians(45):
            assert x[L_SHO] > x[R_SHO] and x[L_HIP] > x[R_HIP]
        elif abs(yaw) > math.radians(135):
            assert x[L_SHO] < x[R_SHO] and x[L_HIP] < x[R_HIP]
    # The same holds for placed figures (small in-plane roll) in rendered scenes; when both eyes
    # are labelled the face is towards the camera and the left eye is on the image right.
    checked = 0
    for seed in range(20):
        scene = sample_scene(np.random.default_rng([2, seed]), 256, 256, 4)
        for fig in scene.figures:
            if abs(fig.roll) > math.radians(25):
                continue
            k = fig.keypoints
            if abs(fig.yaw) < math.radians(45):
                assert k[L_SHO, 0] > k[R_SHO, 0] and k[L_HIP, 0] > k[R_HIP, 0]
                checked += 1
            if fig.labelled[L_EYE] and fig.labelled[R_EYE]:
                assert k[L_EYE, 0] > k[R_EYE, 0]
    assert checked > 10


def test_synth_main_and_bad_arguments(tmp_path, capsys):
    assert synth_main(str(tmp_path / "d"), 2, 1, 1, 2, 96, None) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("wrote 2 images with ") and str(tmp_path / "d" / "annotations.json") in line
    data = json.loads((tmp_path / "d" / "annotations.json").read_text())
    assert {(i["height"], i["width"]) for i in data["images"]} == {(96, 128)}
    with pytest.raises(InputError):
        generate_dataset(tmp_path / "e", 1, min_people=3, max_people=2, progress=False)
    with pytest.raises(InputError):
        generate_dataset(tmp_path / "e", 1, image_size=(32, 32), progress=False)


def test_training_and_predict_tell_synthetic_data_without_the_generator(dataset):
    """The trainer's and predict's check for an ``fcpose synth`` dataset (its description) imports neither the
    generator package nor, for the trainer, OpenCV (run in a fresh interpreter)."""
    out, path = dataset
    code = f"""
import sys
from pathlib import Path
from fcpose.engine.trainer import trained_on_label
assert trained_on_label({str(path)!r}) == "synthetic"
assert "cv2" not in sys.modules, "the trainer imported OpenCV"
from fcpose.inference.predict_command import is_synthetic_input
assert is_synthetic_input(Path({str(out / "images" / "000001.jpg")!r}))
assert not [m for m in sys.modules if m.startswith("fcpose.data.synthetic")], "the generator was imported"
"""
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

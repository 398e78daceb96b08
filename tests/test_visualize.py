"""Tests for fcpose.inference.visualize: draw_poses and save_image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import COCO_TINY  # FCPOSE_SHARED or ../shared
from PIL import Image

from fcpose.config import COCO_SKELETON
from fcpose.errors import InputError
from fcpose.inference.visualize import (
    PERSON_COLORS,
    _edge_color,
    default_line_width,
    draw_poses,
    save_image,
)

GRAY = 90


def _canvas(h: int = 200, w: int = 300) -> np.ndarray:
    return np.full((h, w, 3), GRAY, np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """[H, W] bool mask of pixels that differ."""
    return np.any(before != after, axis=2)


def _one_person(scores=(0.9, 0.9, 0.9)) -> np.ndarray:
    # Keypoints at the centres of pixels (50, 50), (150, 50) and (100, 150).
    return np.array([[[50.5, 50.5, scores[0]], [150.5, 50.5, scores[1]], [100.5, 150.5, scores[2]]]])


def test_draws_keypoints_and_edges_only_there():
    img = _canvas()
    original = img.copy()
    out = draw_poses(img, None, None, _one_person(), [[0, 1], [1, 2]])
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(img, original)  # input untouched
    changed = _changed(img, out)
    assert changed[50, 50] and changed[50, 150] and changed[150, 100]  # joints (row, col)
    assert changed[50, 100]  # middle of edge 0-1
    assert changed[100, 125]  # middle of edge 1-2
    # Nothing far from the drawing: the edge 0-2 is not in the skeleton, corners are empty.
    assert not changed[100, 75]
    assert not changed[:20].any() and not changed[180:].any() and not changed[:, 250:].any()


def test_keypoint_is_centred_on_its_pixel():
    img = _canvas(60, 60)
    out = draw_poses(img, None, None, np.array([[[20.5, 30.5, 1.0]]]), [], line_width=2)
    ys, xs = np.nonzero(_changed(img, out))
    assert xs.mean() == pytest.approx(20.0, abs=0.3)  # pixel 20 spans [20, 21)
    assert ys.mean() == pytest.approx(30.0, abs=0.3)


def test_keypoints_under_threshold_are_not_drawn():
    img = _canvas()
    # Keypoint 2 scores exactly the threshold (not drawn: strictly greater is required).
    out = draw_poses(img, None, None, _one_person((0.9, 0.9, 0.3)), [[0, 1], [1, 2]], keypoint_threshold=0.3)
    changed = _changed(img, out)
    assert changed[50, 50] and changed[50, 150] and changed[50, 100]
    assert not changed[140:160, 90:110].any()  # keypoint 2 and the end of edge 1-2
    assert not changed[100, 125]  # edge 1-2 needs both ends


def test_box_and_score_drawn():
    img = _canvas()
    boxes = np.array([[40.0, 60.0, 200.0, 180.0]])
    out = draw_poses(img, boxes, np.array([0.87]), None, [])
    changed = _changed(img, out)
    assert changed[120, 40] and changed[120, 199] and changed[60, 120] and changed[179, 120]
    assert not changed[120, 120]  # inside the box
    assert changed[45:60, 40:80].any()  # score label above the top-left corner
    assert not changed[:40].any() and not changed[:, 210:].any()
    # Without scores there is no label.
    plain = _changed(img, draw_poses(img, boxes, np.array([0.87]), None, [], show_scores=False))
    assert not plain[45:58].any()


def test_box_color_override_and_person_colors():
    img = _canvas()
    boxes = np.array([[10.0, 10.0, 100.0, 100.0], [150.0, 10.0, 250.0, 100.0]])
    out = draw_poses(img, boxes, None, None, [], line_width=3)
    assert tuple(out[50, 11]) == PERSON_COLORS[0]
    assert tuple(out[50, 151]) == PERSON_COLORS[1]
    out = draw_poses(img, boxes, None, None, [], line_width=3, box_color=(255, 0, 255))
    assert tuple(out[50, 11]) == tuple(out[50, 151]) == (255, 0, 255)


def test_edge_colors_distinguish_left_and_right():
    colors = [np.array(_edge_color(i), float) for i in range(len(COCO_SKELETON))]
    # COCO lists each left limb next to (or two after) its right counterpart.
    for i in range(len(colors) - 2):
        assert np.abs(colors[i] - colors[i + 1]).max() > 60
        assert np.abs(colors[i] - colors[i + 2]).max() > 60
    assert len(set(PERSON_COLORS)) == len(PERSON_COLORS)


def test_non_finite_and_huge_coordinates_do_not_crash():
    img = _canvas()
    kpts = np.array(
        [
            [
                [50.5, 50.5, 1.0],
                [np.nan, 20.0, 1.0],
                [np.inf, 20.0, 1.0],
                [20.0, -np.inf, 1.0],
                [1e30, 1e30, 1.0],
                [-1e12, 40.0, 1.0],
                [120.5, 50.5, np.nan],
                [5e5, 50.5, 1.0],  # far outside but finite and sane: edge to it is drawn
            ]
        ]
    )
    skeleton = [[0, i] for i in range(1, 8)]
    boxes = np.array([[np.nan, 0.0, 10.0, 10.0]])
    out = draw_poses(img, boxes, np.array([np.inf]), kpts, skeleton)
    changed = _changed(img, out)
    assert changed[50, 50]
    assert changed[50, 250]  # on the line towards x = 5e5
    assert not changed[150:].any()
    # Huge but finite boxes are clipped and still drawn; infinite ones are skipped.
    boxes = np.array([[-1e15, 100.0, 1e15, 1e15], [0.0, -np.inf, 10.0, 10.0]])
    out = draw_poses(img, boxes, np.array([0.5, 0.5]), None, [])
    assert _changed(img, out)[100, 150]


def test_zero_people_returns_identical_copy():
    img = _canvas()
    out = draw_poses(img, np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 3)), COCO_SKELETON)
    assert out is not img
    np.testing.assert_array_equal(out, img)
    out[0, 0] = 0
    assert img[0, 0, 0] == GRAY


def test_bad_arguments_raise():
    img = _canvas()
    with pytest.raises(ValueError):
        draw_poses(img.astype(np.float32), None, None, _one_person(), [])
    with pytest.raises(ValueError):
        draw_poses(img, np.zeros((2, 4)), None, _one_person(), [])  # 2 boxes, 1 person
    with pytest.raises(ValueError):
        draw_poses(img, None, None, _one_person(), [[0, 3]])  # only 3 keypoints


def test_default_line_width_scales():
    assert default_line_width(200, 300) == 1
    assert default_line_width(800, 1333) == 3
    assert default_line_width(2160, 3840) == 7


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    img = _canvas()
    boxes = np.array([[40.0, 60.0, 200.0, 180.0]])
    scores = np.array([0.75])
    kpts = _one_person()
    expected = draw_poses(img, boxes, scores, kpts, [[0, 1], [1, 2]])
    got = draw_poses(
        torch.from_numpy(img),
        torch.tensor(boxes, dtype=torch.float32, requires_grad=True),
        torch.tensor(scores, dtype=torch.float16),
        torch.tensor(kpts, dtype=torch.float32),
        [[0, 1], [1, 2]],
    )
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected)


def test_real_coco_annotations_draw(tmp_path):
    ann_file = COCO_TINY / "person_keypoints.json"
    if not ann_file.is_file():
        pytest.skip(f"real test data not available ({ann_file} absent)")
    data = json.loads(ann_file.read_text())
    image_info = data["images"][0]
    anns = [a for a in data["annotations"] if a["image_id"] == image_info["id"] and a["num_keypoints"] > 0]
    img = np.asarray(Image.open(COCO_TINY / image_info["file_name"]).convert("RGB"))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    # COCO keypoints are integer pixel indices; +0.5 puts them at pixel centres; v=0 is unlabelled.
    kpts = np.array([a["keypoints"] for a in anns], float).reshape(len(anns), -1, 3)
    kpts[:, :, :2] += 0.5
    out = draw_poses(img, boxes, np.ones(len(anns)), kpts, COCO_SKELETON)
    changed = _changed(img, out)
    assert changed.any() and changed.mean() < 0.2
    labelled = kpts[kpts[:, :, 2] > 0]
    for x, y, _ in labelled:
        assert changed[int(y), int(x)]
    path = save_image(tmp_path / "vis" / "coco.jpg", out)
    assert path.is_file() and Image.open(path).size == (img.shape[1], img.shape[0])


def test_save_image_png_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = save_image(tmp_path / "a" / "b" / "img.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    jpg = save_image(tmp_path / "img.jpeg", img)
    assert Image.open(jpg).format == "JPEG"


def test_save_image_errors(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="img.xyz"):
        save_image(tmp_path / "img.xyz", img)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        save_image(tmp_path / "file" / "img.png", img)  # parent is a file
    with pytest.raises(ValueError):
        save_image(tmp_path / "img.png", img.astype(np.float32))

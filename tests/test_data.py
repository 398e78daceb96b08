"""Tests for fcpose.data: COCO-keypoints loading, joint augmentation, collate and the model input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import empty_target

from fcpose.config import COCO_FLIP_PAIRS, COCO_SIGMAS, KeypointSetConfig, load_config
from fcpose.data import (
    CocoKeypointDataset,
    TestTransform,
    TrainTransform,
    collate,
    keypoint_set_from_category,
    keypoint_set_from_coco,
    to_model_input,
)
from fcpose.data.augment import crop_targets, hflip_targets, resize_targets
from fcpose.data.transforms import resize_shape
from fcpose.errors import ConfigError, InputError

FLIP = KeypointSetConfig().flip_index()
LEFT_WRIST, RIGHT_WRIST = 9, 10


def _load(coco_tiny: Path) -> dict:
    return json.loads((coco_tiny / "person_keypoints.json").read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
def test_coco_tiny_items_shift_and_no_keypoint_people(coco_tiny):
    raw = _load(coco_tiny)
    ds = CocoKeypointDataset(coco_tiny / "person_keypoints.json", coco_tiny)
    assert len(ds) == len(raw["images"]) == 4
    assert ds.keypoints.num_keypoints == 17
    total = 0
    for i in range(len(ds)):
        item = ds[i]
        img = next(im for im in raw["images"] if im["id"] == item["image_id"])
        anns = [a for a in raw["annotations"] if a["image_id"] == item["image_id"]]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, img["height"], img["width"])
        assert item["orig_size"] == item["image_size"] == (img["height"], img["width"])
        assert item["file_name"] == img["file_name"]
        assert item["boxes"].shape == (len(anns), 4) and item["keypoints"].shape == (len(anns), 17, 3)
        assert item["ignore_boxes"].shape == (0, 4)
        for g, ann in enumerate(anns):  # same order as the file
            x, y, w, h = ann["bbox"]
            torch.testing.assert_close(item["boxes"][g], torch.tensor([x, y, x + w, y + h]))
            kp = torch.tensor(ann["keypoints"], dtype=torch.float32).reshape(17, 3)
            lab = kp[:, 2] > 0
            torch.testing.assert_close(item["keypoints"][g][lab, :2], kp[lab, :2] + 0.5)  # +0.5 at load
            assert torch.all(item["keypoints"][g][~lab] == 0)
            if ann["num_keypoints"] == 0:  # kept for the detector, no labelled keypoint
                assert not lab.any()
        total += len(anns)
    assert total == len(raw["annotations"]) == 14
    # Some people have no keypoint at all.
    assert sum(a["num_keypoints"] == 0 for a in raw["annotations"]) == 2


def test_crowd_becomes_ignore_and_degenerate_boxes_dropped(coco_tiny, tmp_path):
    data = _load(coco_tiny)
    img_id = 40083
    anns = [a for a in data["annotations"] if a["image_id"] == img_id]
    anns[0]["iscrowd"] = 1
    anns[1]["bbox"] = [10.0, 10.0, 0.5, 40.0]  # narrower than a pixel
    anns[2]["keypoints"][0:3] = [600, 50, 2]  # outside the 500 x 333 image
    anns[2]["keypoints"][3:6] = [499, 332, 1]  # last pixel: inside
    ds = CocoKeypointDataset(_write(tmp_path, data), coco_tiny)
    index = [r["image_id"] for r in ds.records].index(img_id)
    target = ds.annotations(index)["target"]
    x, y, w, h = anns[0]["bbox"]
    np.testing.assert_allclose(target["ignore_boxes"], [[x, y, x + w, y + h]], rtol=1e-6)
    assert target["boxes"].shape == (len(anns) - 2, 4)
    np.testing.assert_allclose(target["keypoints"][0, :2], [[0, 0, 0], [499.5, 332.5, 1]])


def test_empty_images_kept_or_filtered(coco_tiny, tmp_path):
    data = _load(coco_tiny)
    extra = dict(data["images"][0], id=999)
    data["images"].append(extra)
    data["annotations"].append({"id": 1, "image_id": 999, "category_id": 1, "iscrowd": 1,
                                "bbox": [0, 0, 50, 50], "num_keypoints": 0, "keypoints": [0] * 51})
    path = _write(tmp_path, data)
    ds = CocoKeypointDataset(path, coco_tiny)
    assert len(ds) == 5
    item = ds[4]
    assert item["boxes"].shape == (0, 4) and item["keypoints"].shape == (0, 17, 3)
    assert item["ignore_boxes"].shape == (1, 4)
    assert len(CocoKeypointDataset(path, coco_tiny, filter_empty=True)) == 4


def test_bad_image_and_bad_files_raise_input_error(coco_tiny, tmp_path):
    data = _load(coco_tiny)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    data["images"][0]["file_name"] = "broken.jpg"
    ds = CocoKeypointDataset(_write(tmp_path, data), tmp_path)
    with pytest.raises(InputError, match="broken.jpg"):
        ds[0]
    with pytest.raises(InputError, match="not found"):
        CocoKeypointDataset(tmp_path / "missing.json", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json"):
        CocoKeypointDataset(tmp_path / "bad.json", tmp_path)


def test_keypoint_set_from_coco_and_custom_categories(coco_tiny, tmp_path):
    kset = keypoint_set_from_coco(coco_tiny / "person_keypoints.json")
    assert kset.flip_pairs == COCO_FLIP_PAIRS and kset.sigmas == COCO_SIGMAS
    assert kset.skeleton[0] == [15, 13]  # 1-based [16, 14] in the file

    cat = {"id": 3, "name": "hand", "keypoints": ["wrist", "left_tip", "right_tip", "mid"],
           "skeleton": [[1, 2], [1, 3], [1, 4]], "sigmas": [0.1, 0.2, 0.2, 0.3]}
    kset = keypoint_set_from_category(cat)
    assert kset.skeleton == [[0, 1], [0, 2], [0, 3]]
    assert kset.flip_pairs == [[1, 2]]  # inferred from left/right names
    assert kset.flip_index() == [0, 2, 1, 3]
    named = dict(cat, flip_pairs=[["left_tip", "right_tip"]])
    assert keypoint_set_from_category(named).flip_pairs == [[1, 2]]
    assert keypoint_set_from_category(dict(cat, flip_pairs=[[1, 2]])).flip_pairs == [[1, 2]]
    assert keypoint_set_from_category(dict(cat, flip_pairs=[])).flip_pairs == []
    with pytest.raises(ConfigError, match="sigmas"):
        keypoint_set_from_category({k: v for k, v in cat.items() if k != "sigmas"})
    with pytest.raises(ConfigError, match="sigmas"):
        keypoint_set_from_category(dict(cat, sigmas=[0.1]))
    with pytest.raises(ConfigError, match="unknown keypoint"):
        keypoint_set_from_category(dict(cat, flip_pairs=[["left_tip", "nope"]]))

    # A custom dataset: K and names from its category; a COCO config does not fit it.
    data = _load(coco_tiny)
    data["categories"] = [cat]
    data["annotations"] = [{"id": 1, "image_id": data["images"][0]["id"], "category_id": 3, "iscrowd": 0,
                            "bbox": [10, 10, 100, 100], "num_keypoints": 1, "keypoints": [20, 30, 2] + [0] * 9}]
    path = _write(tmp_path, data)
    ds = CocoKeypointDataset(path, coco_tiny)
    assert ds.keypoints.num_keypoints == 4
    assert ds.annotations(0)["target"]["keypoints"].shape == (1, 4, 3)
    with pytest.raises(ConfigError, match="differ"):
        CocoKeypointDataset(path, coco_tiny, KeypointSetConfig())


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------
def _scene(rng: np.random.Generator, height: int = 120, width: int = 160, people: int = 3):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    boxes, kpts = [], []
    for _ in range(people):
        x0, y0 = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
        x1, y1 = x0 + rng.uniform(10, width * 0.4), y0 + rng.uniform(10, height * 0.4)
        boxes.append([x0, y0, x1, y1])
        kp = np.zeros((17, 3), np.float32)
        kp[:, 0] = rng.uniform(x0, x1, 17)
        kp[:, 1] = rng.uniform(y0, y1, 17)
        kp[:, 2] = rng.integers(0, 3, 17)
        kp[kp[:, 2] == 0] = 0
        kpts.append(kp)
    target = {"boxes": np.array(boxes, np.float32), "keypoints": np.stack(kpts).astype(np.float32),
              "ignore_boxes": np.array([[5, 5, 30, 20]], np.float32)}
    return image, target


def _assert_target_equal(a: dict, b: dict):
    for key in ("boxes", "keypoints", "ignore_boxes"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-4)


def test_flip_twice_is_identity_and_mirrors_continuous_x():
    image, target = _scene(np.random.default_rng(0))
    width = image.shape[1]
    once = hflip_targets(target, width, FLIP)
    _assert_target_equal(hflip_targets(once, width, FLIP), target)
    np.testing.assert_array_equal(image[:, ::-1][:, ::-1], image)
    # Box [x1, x2] -> [W - x2, W - x1]; a box touching the left border touches the right border.
    np.testing.assert_allclose(once["boxes"][:, [0, 2]], width - target["boxes"][:, [2, 0]], atol=1e-4)
    edge = hflip_targets({"boxes": np.array([[0, 0, 10, 10]], np.float32), "keypoints": np.zeros((1, 17, 3)),
                          "ignore_boxes": np.zeros((0, 4))}, 100, FLIP)
    np.testing.assert_allclose(edge["boxes"], [[90, 0, 100, 10]])


def test_flip_swaps_left_and_right():
    width = 200
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, LEFT_WRIST] = [30.5, 50.5, 2]  # left of the centre
    kp[0, RIGHT_WRIST] = [150.5, 60.5, 1]
    kp[0, 0] = [100.0, 10.0, 2]  # nose: no partner
    target = {"boxes": np.array([[20, 5, 160, 100]], np.float32), "keypoints": kp,
              "ignore_boxes": np.zeros((0, 4), np.float32)}
    out = hflip_targets(target, width, FLIP)["keypoints"][0]
    np.testing.assert_allclose(out[RIGHT_WRIST], [width - 30.5, 50.5, 2])  # the left wrist, mirrored
    np.testing.assert_allclose(out[LEFT_WRIST], [width - 150.5, 60.5, 1])
    np.testing.assert_allclose(out[0], [100.0, 10.0, 2])
    assert np.all(out[1:9] == 0)  # unlabelled stay (0, 0, 0)

    # Through the pipeline: a forced flip (no crop, no size change) mirrors the image too.
    image = np.zeros((100, width, 3), np.uint8)
    image[:, :10] = 255
    tf = TrainTransform((100, 100), 1000, FLIP, crop_range=None, flip_prob=1.0)
    img2, t2 = tf(image, target, np.random.default_rng(0))
    assert img2.shape == image.shape and img2[:, -10:].min() == 255 and img2[:, :-10].max() == 0
    np.testing.assert_allclose(t2["keypoints"][0, RIGHT_WRIST], [width - 30.5, 50.5, 2])


def test_resize_scales_coordinates_exactly():
    image, target = _scene(np.random.default_rng(1), 120, 160)
    out = resize_targets(target, 2.5, 0.5)
    np.testing.assert_allclose(out["boxes"], target["boxes"] * [2.5, 0.5, 2.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["keypoints"][..., :2], target["keypoints"][..., :2] * [2.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out["keypoints"][..., 2], target["keypoints"][..., 2])
    tt = TestTransform(240, 1000)
    img2, t2 = tt(image, target)
    assert img2.shape[:2] == resize_shape(120, 160, 240, 1000) == (240, 320)
    np.testing.assert_allclose(t2["boxes"], target["boxes"] * 2, rtol=1e-6)
    tt2 = TestTransform(512, 400)  # long side limited
    img3, _ = tt2(image)
    assert img3.shape[:2] == resize_shape(120, 160, 512, 400) == (300, 400)
    # Training resize: the short side is an integer in the range.
    tf = TrainTransform((50, 70), 1000, FLIP, crop_range=None, flip_prob=0.0)
    shorts = set()
    for seed in range(30):
        img4, t4 = tf(image, target, np.random.default_rng(seed))
        h, w = img4.shape[:2]
        shorts.add(h)
        sx, sy = w / 160, h / 120
        np.testing.assert_allclose(t4["boxes"], target["boxes"] * [sx, sy, sx, sy], rtol=1e-5)
    assert shorts <= set(range(50, 71)) and len(shorts) > 5


def test_crop_targets_clips_drops_and_unlabels():
    kp = np.zeros((3, 17, 3), np.float32)
    kp[0, 0] = [50, 50, 2]  # inside the window
    kp[0, 1] = [150, 50, 2]  # outside
    kp[1, 0] = [95, 20, 1]
    target = {"boxes": np.array([[40, 40, 120, 80],  # partly inside: clipped
                                 [90, 10, 200, 30],  # 10 of 110 px wide inside -> < 10 %: ignore region
                                 [300, 300, 320, 320]], np.float32),  # outside: gone
              "keypoints": kp, "ignore_boxes": np.array([[0, 0, 10, 10], [500, 500, 600, 600]], np.float32)}
    out, keep = crop_targets(target, 0, 0, 100, 100)
    assert keep.tolist() == [True, False, False]
    np.testing.assert_allclose(out["boxes"], [[40, 40, 100, 80]])
    np.testing.assert_allclose(out["keypoints"][0, 0], [50, 50, 2])
    np.testing.assert_allclose(out["keypoints"][0, 1], [0, 0, 0])
    np.testing.assert_allclose(out["ignore_boxes"], [[0, 0, 10, 10], [90, 10, 100, 30]])
    # A shifted window shifts everything.
    out, keep = crop_targets(target, 30, 20, 100, 100, min_visible=0.0)
    assert keep.tolist() == [True, True, False]
    np.testing.assert_allclose(out["boxes"][0], [10, 20, 90, 60])
    np.testing.assert_allclose(out["keypoints"][1, 0], [65, 0, 1])


def test_random_crop_keeps_a_person_and_unlabels_outside_keypoints():
    tf = TrainTransform((100, 100), 10000, FLIP, crop_range=(0.3, 0.5), flip_prob=0.5)
    cropped = 0
    for seed in range(40):
        image, target = _scene(np.random.default_rng(seed), 200, 300, people=2)
        img, out = tf(image, target, np.random.default_rng(seed))
        h, w = img.shape[:2]
        assert len(out["boxes"]) >= 1
        assert out["keypoints"].shape == (len(out["boxes"]), 17, 3)
        b = out["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
        lab = out["keypoints"][..., 2] > 0
        xy = out["keypoints"][..., :2][lab]
        assert (xy >= -1e-3).all() and (xy[:, 0] <= w + 1e-3).all() and (xy[:, 1] <= h + 1e-3).all()
        assert (out["keypoints"][~lab] == 0).all()
        cropped += int(lab.sum() < (target["keypoints"][..., 2] > 0).sum())
    assert cropped > 10  # the crops do cut keypoints away
    # No people: any crop.
    image = np.zeros((200, 300, 3), np.uint8)
    img, out = tf(image, empty_target(17), np.random.default_rng(0))
    assert out["boxes"].shape == (0, 4) and min(img.shape[:2]) == 100


def test_augmentation_is_deterministic_given_a_seed():
    cfg = load_config("fcpose_r18_tiny")
    tf = TrainTransform.from_config(cfg)
    image, target = _scene(np.random.default_rng(3), 240, 320)
    a = tf(image, copy.deepcopy(target), np.random.default_rng(7))
    b = tf(image, copy.deepcopy(target), np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    _assert_target_equal(a[1], b[1])
    outs = {tf(image, target, np.random.default_rng(s))[0].shape for s in range(8)}
    assert len(outs) > 1
    # The real-time preset samples the short side in [128, 736] (from its config, nothing special-cased).
    rt = TrainTransform.from_config(load_config("fcpose_dla34_rt"))
    assert rt.min_size == (128, 736) and rt.crop_range == (0.4, 1.0)


def test_dataset_transform_seeded_per_item_and_epoch(coco_tiny):
    cfg = load_config("fcpose_r18_tiny", ["input.min_size_train=[64, 96]", "input.max_size_train=160"])
    ds = CocoKeypointDataset(coco_tiny / "person_keypoints.json", coco_tiny, cfg.keypoints,
                             TrainTransform.from_config(cfg), seed=5)
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["keypoints"], b["keypoints"])
    assert 64 <= min(a["image_size"]) <= 96 and a["orig_size"] == (429, 640)
    shapes = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        shapes.add(tuple(ds[2]["image"].shape))
    assert len(shapes) > 1


# ----------------------------------------------------------------------------------------------
# Collate and model input
# ----------------------------------------------------------------------------------------------
class _Normalizer:
    size_divisibility = 32
    device = torch.device("cpu")

    def normalize(self, x):
        return (x - 100.0) / 50.0


def test_collate_and_model_input_pad_after_normalisation():
    items = [{"image": torch.full((3, 40, 50), 200, dtype=torch.uint8), "boxes": torch.zeros(0, 4), "image_id": 1},
             {"image": torch.full((3, 70, 30), 0, dtype=torch.uint8), "boxes": torch.ones(1, 4), "image_id": 2}]
    batch = collate(items)
    assert [im.shape for im in batch["images"]] == [(3, 40, 50), (3, 70, 30)]
    assert [t["image_id"] for t in batch["targets"]] == [1, 2] and "image" not in batch["targets"][0]
    x, sizes = to_model_input(_Normalizer(), batch["images"], "cpu")
    assert x.shape == (2, 3, 96, 64) and sizes == [(40, 50), (70, 30)]
    assert torch.all(x[0, :, :40, :50] == 2.0) and torch.all(x[1, :, :70, :30] == -2.0)
    assert torch.all(x[0, :, 40:] == 0) and torch.all(x[0, :, :, 50:] == 0) and torch.all(x[1, :, :, 30:] == 0)


def test_decode_image_from_memory_checks_format_and_pixels_before_decoding(tmp_path):
    """decode_image is read_image on bytes (same array, EXIF orientation applied); the format and the pixel
    count are checked on the header, so a huge image is refused without decoding it."""
    import io

    from PIL import Image

    from fcpose.data.images import ImageFormatError, ImageTooLargeError, decode_image, read_image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG", exif=exif)
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    decoded = decode_image(buf.getvalue(), formats={"PNG"})
    assert decoded.shape == (40, 30, 3) and np.array_equal(decoded, read_image(tmp_path / "a.png"))
    with pytest.raises(ImageFormatError, match="PNG images are not accepted"):
        decode_image(buf.getvalue(), formats={"JPEG", "WEBP"})
    with pytest.raises(ImageTooLargeError, match="40x30 = 1,200 pixels"):
        decode_image(buf.getvalue(), max_pixels=1000)
    big = io.BytesIO()
    Image.new("1", (7_000, 7_000)).save(big, "PNG")  # 49 M pixels in a few kB
    with pytest.raises(ImageTooLargeError):
        decode_image(big.getvalue(), max_pixels=40_000_000)
    for data in (b"", b"not an image", buf.getvalue()[:60]):
        with pytest.raises(InputError):
            decode_image(data)

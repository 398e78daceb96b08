"""benchmarks/keypoint_error_analysis.py: matching, gross-error taxonomy and the what-if APs."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fcpose.config import COCO_FLIP_PAIRS, COCO_KEYPOINT_NAMES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "keypoint_error_analysis.py"


@pytest.fixture(scope="module")
def analysis():
    spec = importlib.util.spec_from_file_location("keypoint_error_analysis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _person(x0: float, y0: float, ann_id: int) -> dict:
    rng = np.random.default_rng(ann_id)
    xy = np.stack([x0 + rng.uniform(0, 80, 17), y0 + rng.uniform(0, 160, 17)], 1)
    xy[9], xy[10] = [x0 + 5, y0 + 80], [x0 + 75, y0 + 80]  # wrists far apart
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 80 * 160 * 0.5,
            "bbox": [x0, y0, 80, 160], "num_keypoints": 17, "keypoints": kps.reshape(-1).round(2).tolist()}


def _dataset() -> dict:
    cat = {"id": 1, "name": "person", "keypoints": COCO_KEYPOINT_NAMES, "skeleton": []}
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 300}], "categories": [cat],
            "annotations": [_person(20, 40, 1), _person(200, 60, 2)]}


def test_perfect_results_and_a_left_right_swap(analysis):
    gt = _dataset()
    results = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9 - 0.1 * i,
                "keypoints": list(a["keypoints"])} for i, a in enumerate(gt["annotations"])]
    perfect = analysis.analyse(results, gt, COCO_FLIP_PAIRS)
    assert perfect["keypoint_AP"]["actual"] == pytest.approx(1.0)
    assert perfect["gross_errors"] == 0 and perfect["matched_keypoints"] == 34
    assert perfect["keypoint_AP"]["oracle_keypoints"] == pytest.approx(1.0)

    swapped = copy.deepcopy(results)
    k = np.asarray(swapped[0]["keypoints"]).reshape(17, 3)
    k[[9, 10]] = k[[10, 9]]  # the first person's wrists exchanged (70 px apart)
    k[0, :2] += 30  # and the nose far off, but not onto anybody's nose
    swapped[0]["keypoints"] = k.reshape(-1).tolist()
    report = analysis.analyse(swapped, gt, COCO_FLIP_PAIRS)
    assert report["gross_errors"] == 3 and report["gross_left_right_swaps"] == 2
    assert report["gross_other_person"] == 0
    ap = report["keypoint_AP"]
    assert ap["actual"] < ap["unswap_pairs"] < 1.0  # the nose is still wrong after un-swapping
    assert ap["fix_gross"] == pytest.approx(1.0) and ap["oracle_keypoints"] == pytest.approx(1.0)
    assert ap["fix_fine"] == pytest.approx(ap["actual"])  # nothing within 8 px was wrong
    assert ap["oracle_keypoints_noise_1px"] > ap["oracle_keypoints_noise_3px"]


def test_unmatched_detections_are_left_alone(analysis):
    gt = _dataset()
    stray = {"image_id": 1, "category_id": 1, "bbox": [330, 200, 40, 60], "score": 0.95,
             "keypoints": [350.0, 230.0, 1.0] * 17}
    assert analysis.match_detections([stray], {1: gt["annotations"]}) == [None]
    out = analysis.replaced([stray], [None], lambda p, t: t[:, :2])
    assert out[0]["keypoints"] == stray["keypoints"]


def test_snap_to_cell_is_a_perfect_heatmap_without_offsets(analysis):
    gt = _dataset()
    results = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9 - 0.1 * i,
                "keypoints": list(a["keypoints"])} for i, a in enumerate(gt["annotations"])]
    # Input = image x 2: a stride-8 cell spans 4 image pixels, the snapped keypoints are at most 2 * sqrt(2) px
    # off, and these 80 x 160 px people keep all their AP; with 8- and 16-px cells (input = image, image / 2)
    # they lose more and more.
    ap = {s: analysis.analyse(results, gt, COCO_FLIP_PAIRS, input_scale={1: (s, s)})["keypoint_AP"]
          for s in (2.0, 1.0, 0.5)}
    assert ap[2.0]["actual"] == pytest.approx(1.0) and ap[2.0]["snap_to_cell"] == pytest.approx(1.0)
    assert ap[0.5]["snap_to_cell"] < ap[1.0]["snap_to_cell"] < 0.9
    assert "snap_to_cell" not in analysis.analyse(results, gt, COCO_FLIP_PAIRS)["keypoint_AP"]
    # COCO point (5, 13) is (5.5, 13.5) in the model's coordinates, input (11, 27) at scale 2: cell (1, 3) with
    # centre (12, 28) -> image (6, 14) -> COCO (5.5, 13.5).
    xy = analysis.snap_to_cell(np.array([[5.0, 13.0]]), np.array([2.0, 2.0]), 8)
    assert xy.tolist() == [[5.5, 13.5]]


def test_offsets_at_truth_measures_the_refinement(analysis, tmp_path):
    from types import SimpleNamespace

    import torch
    from PIL import Image

    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(tmp_path / "a.png")
    kps = np.zeros((17, 3))
    kps[0] = [19.5, 9.5, 2]  # model coordinates (20, 10): cell (2, 1) of stride 8, centre (20, 12), 2 px off
    kps[1] = [3.5, 40.5, 0]  # not labelled: not counted
    cat = {"id": 1, "name": "person", "keypoints": COCO_KEYPOINT_NAMES, "skeleton": []}
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 64}], "categories": [cat],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 40, 60],
                           "area": 2400, "num_keypoints": 1, "keypoints": kps.reshape(-1).tolist()}]}
    predictor = SimpleNamespace(prepare=lambda image: (torch.zeros(3, 64, 80), (64, 80)))

    class Model:  # what offsets_at_truth reads of a model: strides, padding, offset unit, the offset maps
        strides, size_divisibility = [8, 16, 32], 32

        def __init__(self, unit, maps):
            self.offset_unit, self.maps = unit, maps

        def __call__(self, x):
            assert tuple(x.shape) == (1, 3, 64, 96)  # padded to a multiple of 32
            return SimpleNamespace(kpt_offsets=self.maps)

    for unit, dy, refined in (("pixel", -2.0, 0.0), ("stride", -0.25, 0.0), ("pixel", 1.0, 3.0)):
        offsets = torch.zeros(1, 34, 8, 12)
        offsets[:, 1::2] = dy
        report = analysis.offsets_at_truth(Model(unit, offsets), predictor, gt, str(tmp_path))
        assert report["keypoints"] == 1
        assert report["error_px_cell_centre"]["median"] == pytest.approx(2.0)
        assert report["error_px_cell_centre_plus_offset"]["median"] == pytest.approx(refined)

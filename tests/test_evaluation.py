"""COCO keypoint evaluation: exact agreement with pycocotools, edge cases, custom keypoint sets."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import COCO_TINY as _COCO_TINY_DIR  # FCPOSE_SHARED or ../shared
from helpers import gt_to_results

from fcpose.engine.evaluation import BBOX_METRICS, KEYPOINT_METRICS, evaluate_keypoints
from fcpose.errors import FCPoseError

COCO_TINY = _COCO_TINY_DIR / "person_keypoints.json"


@pytest.fixture(scope="module")
def coco_tiny() -> Path:
    if not COCO_TINY.is_file():
        pytest.skip(f"real COCO sample not available: {COCO_TINY} is absent")
    return COCO_TINY


def _perturb(results: list[dict], seed: int = 0, sigma: float = 4.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(results)
    for r in out:
        kps = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, :2] += rng.normal(0.0, sigma, (len(kps), 2))
        r["keypoints"] = kps.reshape(-1).tolist()
        r["score"] = float(rng.uniform(0.1, 1.0))
        r["bbox"] = (np.asarray(r["bbox"]) + rng.normal(0.0, sigma, 4)).tolist()
    # A few false positives: shifted copies with low scores.
    for r in copy.deepcopy(out[:3]):
        kps = np.asarray(r["keypoints"]).reshape(-1, 3)
        kps[:, :2] += 60.0
        r["keypoints"], r["score"] = kps.reshape(-1).tolist(), 0.05
        r["bbox"][0] += 60.0
        out.append(r)
    return out


def _pycocotools_stats(gt_path: Path, results: list[dict], iou_type: str, sigmas=None) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _as_array(metrics: dict, names) -> np.ndarray:
    return np.array([-1.0 if math.isnan(metrics[n]) else metrics[n] for n in names])


def test_ground_truth_as_results_is_perfect(coco_tiny):
    results = gt_to_results(coco_tiny)
    data = json.loads(coco_tiny.read_text())
    expected = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert len(results) == len(expected)
    assert all(r["score"] == 1.0 and len(r["keypoints"]) == 51 for r in results)
    out = evaluate_keypoints(coco_tiny, results)
    assert set(out["keypoints"]) == set(KEYPOINT_METRICS)
    assert all(v == 1.0 for v in out["keypoints"].values()), out["keypoints"]
    # coco_tiny has two persons without keypoints (not in the default results): boxes are perfect
    # on the other images, and with min_keypoints=0 everywhere.
    without_empty = sorted(
        {a["image_id"] for a in data["annotations"]}
        - {a["image_id"] for a in data["annotations"] if a["num_keypoints"] == 0}
    )
    box = evaluate_keypoints(coco_tiny, results, iou_types=("bbox",), image_ids=without_empty)["bbox"]
    assert box["AP"] == 1.0 and box["AR100"] == 1.0
    box = evaluate_keypoints(coco_tiny, gt_to_results(coco_tiny, min_keypoints=0), iou_types=["bbox"])["bbox"]
    assert set(box) == set(BBOX_METRICS)
    assert box["AP"] == box["APs"] == box["APm"] == box["APl"] == 1.0


def test_matches_pycocotools_exactly(coco_tiny):
    results = _perturb(gt_to_results(coco_tiny), seed=1)
    ours = evaluate_keypoints(str(coco_tiny), results)
    ref_kp = _pycocotools_stats(coco_tiny, results, "keypoints")
    ref_box = _pycocotools_stats(
        coco_tiny, [{k: v for k, v in r.items() if k != "keypoints"} for r in results], "bbox"
    )
    np.testing.assert_allclose(_as_array(ours["keypoints"], KEYPOINT_METRICS), ref_kp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_as_array(ours["bbox"], BBOX_METRICS), ref_box, rtol=0, atol=1e-12)
    assert 0.0 < ours["keypoints"]["AP"] < 1.0
    # Inputs are not mutated (pycocotools adds ids/areas to the dicts it loads).
    assert all(set(r) == {"image_id", "category_id", "keypoints", "score", "bbox"} for r in results)


def test_results_from_file_and_without_boxes(coco_tiny, tmp_path, caplog):
    results = _perturb(gt_to_results(coco_tiny), seed=2)
    for r in results:
        del r["bbox"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with caplog.at_level("WARNING"):
        out = evaluate_keypoints(coco_tiny, path)
    assert "bbox" not in out and "bbox evaluation skipped" in caplog.text
    ref = _pycocotools_stats(coco_tiny, results, "keypoints")
    np.testing.assert_allclose(_as_array(out["keypoints"], KEYPOINT_METRICS), ref, rtol=0, atol=1e-12)


def test_empty_results_give_zeros(coco_tiny):
    out = evaluate_keypoints(coco_tiny, [])
    assert set(out) == {"keypoints", "bbox"}
    # coco_tiny has ground truth in every area range, so every metric is defined and 0.
    assert all(v == 0.0 for v in out["keypoints"].values())
    assert all(v == 0.0 for v in out["bbox"].values())


def test_quiet_unless_verbose(coco_tiny, capsys):
    results = gt_to_results(coco_tiny)
    evaluate_keypoints(coco_tiny, results)
    assert capsys.readouterr().out == ""
    evaluate_keypoints(coco_tiny, results, iou_types="keypoints", verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_bad_inputs(coco_tiny):
    results = gt_to_results(coco_tiny)
    with pytest.raises(FCPoseError, match="not in the ground truth"):
        evaluate_keypoints(coco_tiny, results + [dict(results[0], image_id=123456789)])
    with pytest.raises(FCPoseError, match="51"):
        evaluate_keypoints(coco_tiny, [dict(results[0], keypoints=[0.0] * 15)])
    with pytest.raises(FCPoseError, match="sigmas"):
        evaluate_keypoints(coco_tiny, results, sigmas=[0.05] * 5)
    with pytest.raises(FCPoseError, match="iou_types"):
        evaluate_keypoints(coco_tiny, results, iou_types=("segm",))
    with pytest.raises(FCPoseError, match="not found"):
        evaluate_keypoints(coco_tiny.parent / "missing.json", results)
    with pytest.raises(FCPoseError, match="image_ids"):
        evaluate_keypoints(coco_tiny, results, image_ids=[987654321])


def _five_keypoint_dataset(with_sigmas: bool) -> dict:
    rng = np.random.default_rng(5)
    images, anns = [], []
    for image_id in (1, 2, 3):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 320, "height": 240})
        for _ in range(2 + image_id % 2):
            x0, y0 = rng.uniform(0, 200), rng.uniform(0, 120)
            w, h = rng.uniform(40, 110), rng.uniform(40, 110)
            xs, ys = x0 + rng.uniform(0, w, 5), y0 + rng.uniform(0, h, 5)
            vis = rng.choice([1, 2], 5)
            kps = np.stack([np.round(xs), np.round(ys), vis], 1).reshape(-1).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": kps,
                    "num_keypoints": 5,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                }
            )
    cat = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": ["a", "b", "c", "d", "e"],
        "skeleton": [[1, 2], [2, 3], [3, 4], [4, 5]],
    }
    if with_sigmas:
        cat["sigmas"] = [0.05, 0.06, 0.07, 0.08, 0.09]
    return {"images": images, "annotations": anns, "categories": [cat]}


def test_custom_keypoint_set(tmp_path):
    path = tmp_path / "k5.json"
    path.write_text(json.dumps(_five_keypoint_dataset(with_sigmas=False)))
    sigmas = [0.05, 0.06, 0.07, 0.08, 0.09]
    results = gt_to_results(path)
    assert all(len(r["keypoints"]) == 15 for r in results)
    out = evaluate_keypoints(path, results, sigmas=sigmas, iou_types=("keypoints",))
    assert out["keypoints"]["AP"] == 1.0 and out["keypoints"]["AR"] == 1.0

    perturbed = _perturb(results, seed=3, sigma=3.0)
    out = evaluate_keypoints(path, perturbed, sigmas=sigmas)
    assert 0.0 < out["keypoints"]["AP"] < 1.0
    ref = _pycocotools_stats(path, perturbed, "keypoints", sigmas=sigmas)
    np.testing.assert_allclose(_as_array(out["keypoints"], KEYPOINT_METRICS), ref, rtol=0, atol=1e-12)

    # Sigmas are required for K != 17, and must have K values.
    with pytest.raises(FCPoseError, match="sigmas are required"):
        evaluate_keypoints(path, results)
    with pytest.raises(FCPoseError, match="3 OKS sigmas for 5 keypoints"):
        evaluate_keypoints(path, results, sigmas=[0.05, 0.06, 0.07])
    with pytest.raises(FCPoseError, match="17 OKS sigmas for 5"):
        evaluate_keypoints(path, results, sigmas=[0.05] * 17)


def test_custom_keypoint_set_sigmas_from_category(tmp_path):
    data = _five_keypoint_dataset(with_sigmas=True)
    results = gt_to_results(data)
    assert evaluate_keypoints(data, results)["keypoints"]["AP"] == 1.0
    perturbed = _perturb(results, seed=4, sigma=3.0)
    from_category = evaluate_keypoints(data, perturbed)["keypoints"]
    explicit = evaluate_keypoints(data, perturbed, sigmas=data["categories"][0]["sigmas"])["keypoints"]
    np.testing.assert_array_equal(
        _as_array(from_category, KEYPOINT_METRICS), _as_array(explicit, KEYPOINT_METRICS)
    )
    assert from_category["AP"] < 1.0 and math.isnan(from_category["APl"])  # no large persons: undefined
    # Larger sigmas are more tolerant.
    loose = evaluate_keypoints(data, perturbed, sigmas=[0.5] * 5)["keypoints"]
    assert loose["AP"] >= from_category["AP"]

"""CrowdPose (keypoint set, preset, protocol through xtcocotools), OCHuman-style files, and AP by crowdedness."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import gt_to_results

from fcpose.cli import main
from fcpose.config import (
    COCO_KEYPOINT_NAMES,
    CROWDPOSE_KEYPOINT_NAMES,
    CROWDPOSE_SIGMAS,
    builtin_keypoint_set,
    load_config,
)
from fcpose.data.coco import keypoint_set_from_category
from fcpose.engine.crowding import crowd_index, evaluate_split, image_values, partition
from fcpose.engine.evaluation import CROWDPOSE_METRICS, evaluate_keypoints, load_gt

# CrowdPose's own files carry COCO's 17-keypoint skeleton (1-based), which does not fit their 14 keypoints.
COCO_SKELETON_1 = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9]]


def _xtcocotools():
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except (ImportError, ValueError) as exc:  # ValueError: a wheel built against another numpy
        pytest.skip(f"xtcocotools is not importable ({exc}): pip install 'fcpose[crowdpose]' (see the Makefile)")
    return COCO, COCOeval


def _person(rng, k: int, width: float, height: float, near=None) -> tuple[list[float], list[float]]:
    """A box and K keypoints inside it (some unlabelled, some occluded); ``near``: a box to overlap."""
    if near is None:
        x, y = rng.uniform(0, width - 220), rng.uniform(0, height - 240)
    else:
        x, y = near[0] + rng.uniform(-30, 30), near[1] + rng.uniform(-30, 30)
    w, h = rng.uniform(60, 200), rng.uniform(100, 220)
    kps: list[float] = []
    for _ in range(k):
        v = int(rng.choice([0, 1, 2], p=[0.15, 0.25, 0.6]))
        kps += [float(x + rng.uniform(0, w)), float(y + rng.uniform(0, h)), v] if v else [0.0, 0.0, 0]
    return [float(x), float(y), float(w), float(h)], kps


def _dataset(seed: int, names: list[str], *, images: int = 18, crowd_index_field: bool = False) -> dict:
    """A small keypoint dataset whose images have 1-6 people, more of them overlapping in later images."""
    rng = np.random.default_rng(seed)
    out = {"images": [], "annotations": [],
           "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": names,
                           "skeleton": COCO_SKELETON_1}]}
    for i in range(1, images + 1):
        out["images"].append({"id": i, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480})
        boxes = []
        for _ in range(1 + (i * 5) // images):
            box, kps = _person(rng, len(names), 640, 480, boxes[-1] if boxes and rng.uniform() < 0.7 else None)
            boxes.append(box)
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": i, "category_id": 1,
                                       "bbox": box, "iscrowd": 0, "keypoints": kps,
                                       "num_keypoints": sum(v == 2 for v in kps[2::3])})
    if crowd_index_field:  # as CrowdPose's files: the index per image, spread over easy / medium / hard
        for img, value in zip(out["images"], np.linspace(0.0, 1.0, images)):
            img["crowdIndex"] = round(float(value), 2)
    return out


def _results(gt: dict, seed: int) -> list[dict]:
    """Ground truth as results, moved by a few pixels, with random scores and a few false positives."""
    rng = np.random.default_rng(seed)
    out = gt_to_results(gt)
    for r in out:
        kps = np.asarray(r["keypoints"]).reshape(-1, 3)
        kps[:, :2] += rng.normal(0, 5, (len(kps), 2))
        r["keypoints"], r["score"] = kps.reshape(-1).tolist(), float(rng.uniform(0.2, 1.0))
    for r in [dict(r) for r in out[::4]]:
        r["keypoints"] = (np.asarray(r["keypoints"]) + np.tile([40.0, 25.0, 0.0], len(r["keypoints"]) // 3)).tolist()
        out.append({**r, "score": 0.1})
    return out


def _write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# ---- the keypoint set and the preset ---------------------------------------------------------------------------
def test_crowdpose_keypoint_set_is_built_in_and_read_from_crowdpose_files(capsys):
    kset = builtin_keypoint_set("crowdpose")
    kset.validate()
    assert kset.names[:12] == COCO_KEYPOINT_NAMES[5:] and kset.names[12:] == ["head", "neck"]
    # the CrowdPose evaluation tool's sigmas: COCO's for the 12 shared joints, 0.079 for head and neck
    assert kset.sigmas == pytest.approx(np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79,
                                                  .79]) / 10)
    assert kset.flip_index() == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13]
    # a CrowdPose category (no sigmas, COCO's 17-keypoint skeleton) gives exactly the built-in set, with a note
    category = {"id": 1, "name": "person", "keypoints": CROWDPOSE_KEYPOINT_NAMES, "skeleton": COCO_SKELETON_1}
    assert keypoint_set_from_category(category) == kset
    assert "the built-in skeleton" in capsys.readouterr().err
    assert load_config("fcpose_r50_crowdpose").keypoints == kset


def test_crowdpose_preset_trains_and_its_model_evaluates_with_the_protocol(coco_tiny, tmp_path):
    """The preset (made small by overrides) trains a few steps on a CrowdPose-style dataset, and `fcpose eval`
    scores the model with the CrowdPose protocol (AP easy / medium / hard in the metrics file)."""
    _xtcocotools()
    from fcpose.weights.checkpoint import read_checkpoint

    src = json.loads((coco_tiny / "person_keypoints.json").read_text())
    for ann in src["annotations"]:  # COCO -> CrowdPose's 14: the 12 body joints, the nose as head, the neck
        kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        neck = (kp[5] + kp[6]) / 2 if kp[5, 2] > 0 and kp[6, 2] > 0 else np.zeros(3)
        neck[2] = min(kp[5, 2], kp[6, 2]) if neck[2] else 0
        ann["keypoints"] = np.concatenate([kp[5:], kp[:1], neck[None]]).reshape(-1).tolist()
        ann["num_keypoints"] = int(sum(v > 0 for v in ann["keypoints"][2::3]))
    src["categories"] = [{"id": 1, "name": "person", "keypoints": CROWDPOSE_KEYPOINT_NAMES,
                          "skeleton": COCO_SKELETON_1}]
    for img, value in crowd_index(src).items():
        next(i for i in src["images"] if i["id"] == img)["crowdIndex"] = round(value, 2)
    ann_file = _write(tmp_path, "crowdpose_tiny.json", src)
    small = ["model.backbone.name=resnet18", "model.backbone.norm=GN", "model.backbone.freeze_at=0",
             "model.fpn.channels=64", "model.fcos.num_convs=1", "model.keypoint.branch_channels=32",
             "model.keypoint.branch_num_convs=1", "input.min_size_train=[160, 160]", "input.max_size_train=256",
             "input.min_size_test=160", "input.max_size_test=256", "solver.max_iter=2", "solver.ims_per_batch=2",
             "solver.warmup_iters=1", "solver.checkpoint_period=0", "solver.num_workers=0"]
    out = tmp_path / "run"
    args = ["train", "--config", "fcpose_r50_crowdpose", "--data", str(ann_file), "--images", str(coco_tiny),
            "--output", str(out), "--no-progress", "--eval-data", str(ann_file)]
    for item in small:
        args += ["--set", item]
    assert main(args) == 0
    assert read_checkpoint(out / "model_final.pt")["config"]["keypoints"]["sigmas"] == CROWDPOSE_SIGMAS
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])  # train --eval-data: the same protocol
    assert [k for k in logged if k.startswith("keypoints/")] == [f"keypoints/{m}" for m in CROWDPOSE_METRICS]
    metrics_file = tmp_path / "m.json"
    assert main(["eval", "--weights", str(out / "model_final.pt"), "--data", str(ann_file), "--images",
                 str(coco_tiny), "--score-threshold", "0.01", "--no-progress", "--json", str(metrics_file)]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["protocol"] == "crowdpose" and list(metrics["keypoints"]) == list(CROWDPOSE_METRICS)


# ---- the CrowdPose protocol ------------------------------------------------------------------------------------
def test_crowdpose_protocol_equals_xtcocotools_on_the_same_files(tmp_path, capsys):
    COCO, COCOeval = _xtcocotools()
    gt = _dataset(1, CROWDPOSE_KEYPOINT_NAMES, crowd_index_field=True)
    gt_file, res_file = _write(tmp_path, "gt.json", gt), _write(tmp_path, "res.json", _results(gt, 2))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        ev = COCOeval(coco, coco.loadRes(str(res_file)), "keypoints_crowd", np.array(CROWDPOSE_SIGMAS), use_area=False)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    direct = dict(zip(CROWDPOSE_METRICS, ev.stats))
    assert all(direct[name] > 0 for name in ("AP", "APeasy", "APmedium", "APhard"))  # every part has people
    ours = evaluate_keypoints(gt_file, res_file, protocol="auto")["keypoints"]  # detected from the file
    assert ours == pytest.approx(direct, abs=0, rel=0)
    metrics_file = tmp_path / "m.json"
    assert main(["eval", "--data", str(gt_file), "--predictions", str(res_file), "--json", str(metrics_file)]) == 0
    printed = capsys.readouterr().out
    assert "protocol: crowdpose" in printed and f"APhard {direct['APhard']:.3f}" in printed
    saved = json.loads(metrics_file.read_text())
    assert saved["protocol"] == "crowdpose" and saved["keypoints"] == pytest.approx(direct, abs=0, rel=0)


def test_protocol_choice_and_its_errors(tmp_path, capsys, monkeypatch):
    coco_gt = _dataset(3, COCO_KEYPOINT_NAMES, images=4)
    no_index = _dataset(3, CROWDPOSE_KEYPOINT_NAMES, images=4)
    coco_file, no_index_file = _write(tmp_path, "coco.json", coco_gt), _write(tmp_path, "noindex.json", no_index)
    res_coco = _write(tmp_path, "r1.json", _results(coco_gt, 0))
    res_cp = _write(tmp_path, "r2.json", _results(no_index, 0))
    # auto: COCO's protocol for anything but CrowdPose's files (names and a crowdIndex on every image)
    assert list(evaluate_keypoints(coco_file, res_coco, protocol="auto")["keypoints"])[3] == "APm"
    assert list(evaluate_keypoints(no_index_file, res_cp, protocol="auto")["keypoints"])[3] == "APm"
    assert main(["eval", "--data", str(no_index_file), "--predictions", str(res_cp), "--protocol", "crowdpose"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a 'crowdIndex' on every image" in err[0]
    # without xtcocotools: one line that says how to install it
    for module in ("xtcocotools", "xtcocotools.coco", "xtcocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, module, None)
    crowd_file = _write(tmp_path, "cp.json", _dataset(3, CROWDPOSE_KEYPOINT_NAMES, images=4, crowd_index_field=True))
    assert main(["eval", "--data", str(crowd_file), "--predictions", str(res_cp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcpose eval: error: the CrowdPose protocol needs xtcocotools")
    assert "--no-binary xtcocotools --no-build-isolation" in err[0]
    assert main(["eval", "--data", str(crowd_file), "--predictions", str(res_cp), "--protocol", "coco"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", "fcpose_r18_tiny", "--data", str(crowd_file), "--images", str(tmp_path),
                 "--output", str(tmp_path / "run"), "--eval-data", str(crowd_file)]) == 2  # before the first step
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the CrowdPose protocol needs xtcocotools" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()
    # the PyPI wheel under numpy 2 fails with a ValueError on import: one line that says to rebuild it
    for module in ("xtcocotools", "xtcocotools.coco", "xtcocotools.cocoeval"):
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [_BrokenWheel(), *sys.meta_path])
    capsys.readouterr()
    assert main(["eval", "--data", str(crowd_file), "--predictions", str(res_cp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xtcocotools does not import (numpy.dtype size changed" in err[0]
    assert "--force-reinstall --no-deps" in err[0]


class _BrokenWheel(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """xtcocotools as its numpy-1.x wheel imports under numpy 2."""

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name.split(".")[0] == "xtcocotools" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C header, "
                         "got 88 from PyObject")


# ---- OCHuman ---------------------------------------------------------------------------------------------------
def _ochuman_style(tmp_path: Path) -> tuple[Path, dict]:
    """A file shaped like OCHuman's COCO-format val/test files: COCO's 17 keypoints, people with polygon masks and
    no 'area', one without a mask, an ignored crowd region, and images without people."""
    gt = _dataset(5, COCO_KEYPOINT_NAMES, images=6)
    gt["categories"][0]["skeleton"] = [[16, 14], [14, 12], [17, 15]]
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w / 2, y + h]]  # a triangle: area w * h / 2
        ann.pop("iscrowd")
        ann.pop("num_keypoints")
    gt["annotations"][0].pop("segmentation")
    gt["annotations"].append({"id": 999, "image_id": 2, "category_id": 1, "bbox": [500, 300, 100, 100], "iscrowd": 1,
                              "segmentation": [[500, 300, 600, 300, 600, 400, 500, 400]], "num_keypoints": 0,
                              "keypoints": [0] * 51})
    gt["images"] += [{"id": 100 + i, "file_name": f"empty{i}.jpg", "width": 640, "height": 480} for i in range(2)]
    return _write(tmp_path, "ochuman_coco_format_val_range_0.00_1.00.json", gt), gt


def test_ochuman_style_files_evaluate(tmp_path):
    gt_file, gt = _ochuman_style(tmp_path)
    coco = load_gt(gt_file)
    anns = coco.dataset["annotations"]
    first_box = gt["annotations"][0]["bbox"]
    assert anns[0]["area"] == pytest.approx(0.53 * first_box[2] * first_box[3])  # no mask: CrowdPose's box rule
    x, y, w, h = gt["annotations"][1]["bbox"]
    assert anns[1]["area"] == pytest.approx(w * h / 2, rel=0.05)  # the mask's area (rasterised)
    assert all(a["iscrowd"] == 0 and a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3])
               for a in anns if a["id"] != 999)
    perfect = gt_to_results(coco.dataset)
    assert evaluate_keypoints(gt_file, perfect)["keypoints"]["AP"] == pytest.approx(1.0)
    # a detection inside the ignored region costs nothing; one on an image without people is a false positive
    ignored = {**perfect[0], "image_id": 2, "score": 0.5, "bbox": [510, 310, 80, 80],
               "keypoints": np.tile([550.0, 350.0, 1.0], 17).tolist()}
    assert evaluate_keypoints(gt_file, perfect + [ignored])["keypoints"]["AP"] == pytest.approx(1.0)
    stray = {**perfect[0], "image_id": 100, "score": 2.0}
    assert evaluate_keypoints(gt_file, perfect + [stray])["keypoints"]["AP"] < 1.0
    # test files of the same shape evaluate alike, through the command
    test_file = _write(tmp_path, "ochuman_coco_format_test_range_0.00_1.00.json", gt)
    res = _write(tmp_path, "r.json", perfect)
    assert main(["eval", "--data", str(test_file), "--predictions", str(res), "--split-by", "people"]) == 0


# ---- AP by crowdedness -----------------------------------------------------------------------------------------
def test_crowd_index_follows_crowdposes_definition():
    """Two people: A (4 labelled keypoints) has 2 of B's inside its box, B (4) has 1 of A's: (2/4 + 1/4) / 2."""
    def kps(points):
        return [v for x, y in points for v in (x, y, 2)]

    dataset = {"images": [{"id": 1}, {"id": 2}], "annotations": [
        {"image_id": 1, "bbox": [0, 0, 100, 100], "keypoints": kps([(10, 10), (20, 20), (30, 30), (90, 90)])},
        {"image_id": 1, "bbox": [80, 80, 100, 100], "keypoints": kps([(95, 95), (100, 100), (150, 150), (170, 170)])},
        {"image_id": 1, "bbox": [0, 0, 200, 200], "iscrowd": 1, "keypoints": []},  # a crowd region: no part in it
        {"image_id": 2, "bbox": [0, 0, 50, 50], "keypoints": kps([(10, 10)])},
    ]}
    assert crowd_index(dataset) == {1: pytest.approx((2 / 4 + 1 / 4) / 2), 2: 0.0}


@pytest.mark.parametrize("by, from_file", [("crowd-index", False), ("crowd-index", True), ("people", False)])
def test_split_parts_are_subsets_evaluated_alone_and_add_up(by, from_file, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _dataset(7, COCO_KEYPOINT_NAMES, crowd_index_field=from_file)
    results = _results(gt, 8)
    gt_file = _write(tmp_path, "gt.json", gt)
    split = evaluate_split(gt_file, results, by)
    values, source = image_values(load_gt(gt_file).dataset, by)
    assert ("file" in source) == from_file
    parts = partition(values, by)
    ids = [i for _, part in parts for i in part]
    assert sorted(ids) == sorted(img["id"] for img in gt["images"])  # a partition: every image once
    assert sum(p["images"] for p in split["parts"]) == len(gt["images"])
    assert sum(p["people"] for p in split["parts"]) == sum(any(a["keypoints"][2::3]) for a in gt["annotations"])
    assert sum(p["images"] > 0 for p in split["parts"]) >= 2
    for (label, part_ids), part in zip(parts, split["parts"]):
        assert part["part"] == label and part["images"] == len(part_ids)
        if not part_ids:
            assert math.isnan(part["AP"])
            continue
        # the same part as its own dataset, scored by pycocotools directly
        sub = {**gt, "images": [i for i in gt["images"] if i["id"] in part_ids],
               "annotations": [dict(a, area=0.53 * a["bbox"][2] * a["bbox"][3])  # the area evaluation fills in
                               for a in gt["annotations"] if a["image_id"] in part_ids]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = json.loads(json.dumps(sub))
            coco.createIndex()
            dets = [r for r in json.loads(json.dumps(results)) if r["image_id"] in part_ids]
            ev = COCOeval(coco, coco.loadRes(dets), "keypoints")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert part["AP"] == pytest.approx(ev.stats[0], abs=1e-12) and part["AR"] == pytest.approx(ev.stats[5])


def test_split_with_one_part_equals_the_whole(tmp_path):
    gt = _dataset(9, COCO_KEYPOINT_NAMES, images=6)  # image i has 1 + 5i // 6 people: 4, 5, 6 on images 4-6
    gt["images"] = [i for i in gt["images"] if i["id"] >= 4]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] >= 4 and a["num_keypoints"] > 0]
    results = _results(gt, 10)
    split = evaluate_split(gt, results, "people")
    whole = evaluate_keypoints(gt, results, iou_types=("keypoints",))["keypoints"]
    [part] = [p for p in split["parts"] if p["images"]]
    assert part["part"] == "4-7 people" and {k: part[k] for k in ("AP", "AP50", "AP75", "AR")} == \
        {k: whole[k] for k in ("AP", "AP50", "AP75", "AR")}


def test_crowd_index_split_under_the_crowdpose_protocol_matches_its_easy_medium_hard(tmp_path):
    _xtcocotools()
    gt = _dataset(11, CROWDPOSE_KEYPOINT_NAMES, crowd_index_field=True)
    gt_file = _write(tmp_path, "gt.json", gt)
    results = _results(gt, 12)
    whole = evaluate_keypoints(gt_file, results, protocol="crowdpose")["keypoints"]
    split = evaluate_split(gt_file, results, "crowd-index", protocol="crowdpose")
    # xtcocotools rounds its easy / medium / hard to 4 decimals
    assert [round(p["AP"], 4) for p in split["parts"]] == [whole["APeasy"], whole["APmedium"], whole["APhard"]]

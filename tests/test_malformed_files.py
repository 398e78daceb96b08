"""Annotation, results and config files that parse but have the wrong shape: one FCPoseError line each,
never another exception (property-based with hypothesis: random mutations of valid files)."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fcpose.cli import main
from fcpose.config import COCO_KEYPOINT_NAMES
from fcpose.errors import FCPoseError


def _valid_coco() -> dict:
    kps = []
    for j in range(17):
        kps += [20 + j, 30 + 2 * j, 2]
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 120, "height": 100},
                   {"id": 2, "file_name": "b.jpg", "width": 120, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "keypoints": kps, "num_keypoints": 17,
             "bbox": [15, 25, 30, 40], "area": 1200.0, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "keypoints": [0] * 51, "num_keypoints": 0,
             "bbox": [50, 20, 30, 60], "area": 1800.0, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
                        "skeleton": [[16, 14], [14, 12]]}],
    }


def _valid_results() -> list:
    from helpers import gt_to_results

    return gt_to_results(_valid_coco())


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=4))
_json = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=4), c,
                                                                                          max_size=3)), max_leaves=5)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:3]):
            yield from _paths(value, prefix + (i,))


@st.composite
def _mutated(draw, base):
    """``base`` with 1-3 random edits: a value anywhere replaced by random JSON, or a key deleted."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            doc = draw(_json)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_json)
    return doc


_SETTINGS = settings(max_examples=60, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _only_fcpose_errors(load, doc, path: Path, dump=json.dumps):
    path.write_text(dump(doc))
    try:
        load(path)
    except FCPoseError as exc:
        assert "\n" not in str(exc) and str(exc)


def _loaders():
    from fcpose.data.coco import CocoKeypointDataset, keypoint_set_from_coco
    from fcpose.engine.evaluate import dataset_images
    from fcpose.engine.evaluation import evaluate_keypoints, load_gt
    from fcpose.inference.predict_command import _load_ids

    def train_dataset(p):
        ds = CocoKeypointDataset(p, p.parent)
        for i in range(len(ds)):
            ds.annotations(i)

    def eval_images(p):
        for name in ("a.jpg", "b.jpg"):  # the valid file's images (their content is not read here)
            (p.parent / name).touch()
        return dataset_images(p, p.parent)

    return {
        "eval ground truth": lambda p: evaluate_keypoints(p, _valid_results()),
        "load_gt": load_gt,
        "train dataset": train_dataset,
        "keypoint set": keypoint_set_from_coco,
        "eval images": eval_images,
        "predict --annotations": _load_ids,
    }


@pytest.mark.parametrize("name", list(_loaders()))
def test_annotation_loaders_raise_only_fcpose_errors(name, tmp_path):
    load = _loaders()[name]
    load(_write(tmp_path / "valid.json", _valid_coco()))  # the unmutated file is fine

    @_SETTINGS
    @given(doc=_mutated(_valid_coco()))
    def check(doc):
        _only_fcpose_errors(load, doc, tmp_path / "ann.json")

    check()


def test_results_loader_raises_only_fcpose_errors(tmp_path):
    from fcpose.engine.evaluation import evaluate_keypoints

    gt = _write(tmp_path / "gt.json", _valid_coco())
    assert evaluate_keypoints(gt, _valid_results())["keypoints"]["AP"] == pytest.approx(1.0)

    @_SETTINGS
    @given(doc=_mutated(_valid_results()))
    def check(doc):
        _only_fcpose_errors(lambda p: evaluate_keypoints(gt, p), doc, tmp_path / "results.json")

    check()


def test_config_loader_raises_only_fcpose_errors(tmp_path):
    from fcpose.config import load_config

    base = {"name": "mine", "model": {"backbone": {"name": "resnet18"}, "fpn": {"channels": 64}},
            "solver": {"base_lr": 0.01, "steps": [10, 20], "max_iter": 30}, "test": {"score_threshold": 0.05}}
    load_config(_write(tmp_path / "valid.yaml", base, yaml.safe_dump))

    @_SETTINGS
    @given(doc=_mutated(base))
    @example(doc={"\n": None})  # a key with a line break was once echoed into a two-line message
    def check(doc):
        _only_fcpose_errors(load_config, doc, tmp_path / "c.yaml", yaml.safe_dump)

    check()


def _write(path: Path, doc, dump=json.dumps) -> Path:
    path.write_text(dump(doc))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: [d], "the top level is a JSON list, not an object"),
    (lambda d: {**d, "images": []}, "its 'images' list is empty"),
    (lambda d: {k: v for k, v in d.items() if k != "categories"}, "no 'categories' list"),
    (lambda d: {**d, "images": [{"id": "1", "file_name": "a.jpg"}]}, r"images\[0\] has no integer 'id'"),
    (lambda d: {**d, "annotations": [dict(d["annotations"][0], keypoints=[1, 2, 3])]},
     "has 3 keypoint values, expected 51"),
    (lambda d: {**d, "annotations": [dict(d["annotations"][0], image_id=99)]},
     "refers to image 99, which is not in 'images'"),
    (lambda d: {**d, "annotations": [dict(d["annotations"][0], area=-1)]}, r"has an invalid 'area' \(-1\)"),
])
def test_eval_ground_truth_messages(edit, message, tmp_path, capsys):
    import re

    gt = _write(tmp_path / "gt.json", edit(_valid_coco()))
    res = _write(tmp_path / "r.json", _valid_results())
    assert main(["eval", "--data", str(gt), "--predictions", str(res)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcpose eval: error: {gt} is not a valid COCO annotation file: ")
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize("edit, message", [
    (lambda r: {"results": r}, "results must be a list"),
    (lambda r: [dict(r[0], score="high")], "result 0 has score 'high', not a finite number"),
    (lambda r: [dict(r[0], keypoints=[1, 2, None])], "result 0: 'keypoints' must be a list of finite numbers"),
    (lambda r: [dict(r[0], image_id=[1])], r"result 0 has image_id \[1\], not an integer"),
    (lambda r: [dict(r[0], bbox=[1, 2])], r"result 0 has a bbox of 2 values, expected \[x, y, w, h\]"),
])
def test_eval_results_messages(edit, message, tmp_path, capsys):
    import re

    gt = _write(tmp_path / "gt.json", _valid_coco())
    res = _write(tmp_path / "r.json", edit(_valid_results()))
    assert main(["eval", "--data", str(gt), "--predictions", str(res)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_train_and_predict_reject_malformed_annotations(tmp_path, capsys, tiny_checkpoint):
    bad = _write(tmp_path / "ann.json", {**_valid_coco(), "images": "a.jpg"})
    code = main(["train", "--config", "fcpose_r18_tiny", "--data", str(bad), "--images", str(tmp_path),
                 "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no 'images' list" in err[0], err
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "a.png"), "--weights", str(tiny_checkpoint), "--out",
                 str(tmp_path / "out"), "--annotations", str(bad), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no 'images' list" in err[0], err
    assert not (tmp_path / "out" / "predictions.json").exists()

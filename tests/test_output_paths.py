"""Every output path a user gives is checked first: one line, exit status 2, nothing lost or half-written."""

import json

import pytest

from fcpose.cli import main


@pytest.fixture
def blocker(tmp_path):
    path = tmp_path / "taken"
    path.write_text("keep me")
    return path


def _gt(tmp_path):
    from fcpose.config import COCO_KEYPOINT_NAMES

    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [10, 10, 2] * 17,
                           "num_keypoints": 17, "bbox": [5, 5, 20, 30], "area": 600.0, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES)}]}
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": 1, "category_id": 1, "keypoints": [10, 10, 1] * 17, "score": 0.9,
                                "bbox": [5, 5, 20, 30]}]))
    return ann, res


@pytest.mark.parametrize("command", ["train", "synth", "eval --json", "eval --results", "bench --json", "convert",
                                     "export"])
def test_output_path_that_is_blocked_by_a_file(command, blocker, tmp_path, tiny_checkpoint, capsys):
    ann, res = _gt(tmp_path)
    inside = str(blocker / "out.json")
    args = {
        "train": ["train", "--config", "fcpose_r18_tiny", "--data", str(ann), "--images", str(tmp_path),
                  "--output", str(blocker), "--no-progress"],
        "synth": ["synth", "--out", str(blocker), "--num", "1"],
        "eval --json": ["eval", "--data", str(ann), "--predictions", str(res), "--json", inside],
        "eval --results": ["eval", "--data", str(ann), "--weights", str(tiny_checkpoint), "--images", str(tmp_path),
                           "--results", inside],
        "bench --json": ["bench", "--config", "fcpose_r18_tiny", "--json", inside],
        "convert": ["convert", "fcpose_r50_official", str(blocker / "m.pt")],
        "export": ["export", "--weights", str(tiny_checkpoint), "--out", str(blocker / "m.onnx")],
    }[command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcpose {args[0]}: error: "), err
    assert f"{blocker} is a file, not a folder" in err[0], err
    assert blocker.read_text() == "keep me"


def test_output_file_that_is_a_folder(tmp_path, capsys):
    ann, res = _gt(tmp_path)
    assert main(["eval", "--data", str(ann), "--predictions", str(res), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fcpose eval: error: cannot write metrics file {tmp_path}: it is a folder"]

"""What a newcomer reads when something is wrong: one clear line each, exit status 2, no traceback."""

import collections
import json
from pathlib import Path

import pytest
import torch

from fcpose.cli import main


def _one_line_error(capsys, args, command="predict") -> str:
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"fcpose {command}: error: "), err
    return lines[0]


@pytest.fixture
def image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30)).save(path)
    return path


class Evil:  # a pickled class: loading it would import and run code
    pass


@pytest.mark.parametrize("case, expected", [
    ("onnx", r"is an ONNX model, not a PyTorch checkpoint: run it with `fcpose predict --backend onnxruntime"),
    ("preset", r"'fcpose_r18_tiny' is a preset \(a model architecture\), not weights: train it with `fcpose train "
               r"--config fcpose_r18_tiny \.\.\.`.*fcpose_r50_official"),
    ("yaml", r"is a config file, not weights"),
    ("garbage", r"it is not a readable PyTorch checkpoint \(the file is truncated, corrupt or of another format\); "
                r"download or save it again$"),
    ("truncated", r"it is not a readable PyTorch checkpoint \(the file is truncated, corrupt or of another format\); "
                  r"download or save it again$"),
    ("pickled_code", r"refusing to load .*evil\.pt: it names the Python object .*Evil, and loading it would run code"),
    ("missing", r"checkpoint not found: .*nope\.pt \(give an fcpose \.pt, an official \.pth or a model-zoo name"),
])
def test_weights_messages(case, expected, image, tmp_path, tiny_checkpoint, capsys):
    import re

    weights = {"onnx": tmp_path / "model.onnx", "preset": "fcpose_r18_tiny", "yaml": tmp_path / "c.yaml",
               "garbage": tmp_path / "g.pt", "truncated": tmp_path / "t.pt", "pickled_code": tmp_path / "evil.pt",
               "missing": tmp_path / "nope.pt"}[case]
    if case == "onnx":
        Path(weights).write_bytes(b"\x08\x07\x12\x07pytorch")
    elif case == "yaml":
        Path(weights).write_text("model: {}\n")
    elif case == "garbage":
        Path(weights).write_bytes(b"\x00garbage")
    elif case == "truncated":
        Path(weights).write_bytes(tiny_checkpoint.read_bytes()[:5000])
    elif case == "pickled_code":
        torch.save({"x": collections.OrderedDict(), "e": Evil()}, weights)
    line = _one_line_error(capsys, ["predict", str(image), "--weights", str(weights), "--out",
                                    str(tmp_path / "out"), "--no-progress"])
    assert re.search(expected, line), line
    assert not re.search(r"\(\d+\)$|\d$", line), line  # never ends in a bare number
    assert not (tmp_path / "out").exists()  # nothing is created before the model loads


def _gt_with_names() -> dict:
    from fcpose.config import COCO_KEYPOINT_NAMES

    kps = []
    for j in range(17):
        kps += [20.0 + j, 30.0 + 2 * j, 2]
    return {
        "images": [{"id": 7, "file_name": "photos/alice.jpg", "width": 100, "height": 100},
                   {"id": 9, "file_name": "bob.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "keypoints": kps, "num_keypoints": 17,
                         "bbox": [15.0, 25.0, 30.0, 40.0], "area": 1200.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": []}],
    }


def test_eval_matches_predict_output_by_file_name(tmp_path, capsys):
    from helpers import gt_to_results

    gt = _gt_with_names()
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    results = gt_to_results(gt)
    for r in results:
        del r["image_id"]
        r["file_name"] = "alice.jpg"  # what `fcpose predict` writes: the image's base name
    pred = tmp_path / "predictions.json"
    pred.write_text(json.dumps(results))
    assert main(["eval", "--data", str(ann), "--predictions", str(pred)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("keypoints AP 1.000  AP50 1.000")  # fractions, as in the --json file

    results[0]["file_name"] = "carol.jpg"
    pred.write_text(json.dumps(results))
    line = _one_line_error(capsys, ["eval", "--data", str(ann), "--predictions", str(pred)], "eval")
    assert "result 0 has file_name 'carol.jpg' and no image_id, and no ground-truth image has that file name" in line
    del results[0]["file_name"]
    pred.write_text(json.dumps(results))
    line = _one_line_error(capsys, ["eval", "--data", str(ann), "--predictions", str(pred)], "eval")
    assert "result 0 lacks image_id (results need an image_id, or a file_name" in line
    assert "--annotations ANN.json" in line


def test_eval_screen_and_json_agree(tmp_path, capsys):
    from helpers import gt_to_results

    gt = _gt_with_names()
    ann, pred, metrics = tmp_path / "gt.json", tmp_path / "r.json", tmp_path / "m.json"
    ann.write_text(json.dumps(gt))
    pred.write_text(json.dumps(gt_to_results(gt)))
    assert main(["eval", "--data", str(ann), "--predictions", str(pred), "--json", str(metrics)]) == 0
    screen = capsys.readouterr().out.splitlines()
    saved = json.loads(metrics.read_text())
    for line, kind in zip(screen, ("keypoints", "bbox")):
        fields = line.split()
        assert fields[0] == kind
        shown = dict(zip(fields[1::2], fields[2::2]))
        assert shown == {k: f"{v:.3f}" for k, v in saved[kind].items()}


def test_every_option_has_help():
    import argparse

    from fcpose.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, p in sub.choices.items():
        if not p.description:
            missing.append(f"{name} (no description)")
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    for action in sub._choices_actions:
        if not action.help:
            missing.append(f"{action.dest} (no summary)")
    assert missing == []


def _all_parsers():
    import argparse

    from fcpose.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("fcpose", parser), *sub.choices.items()]


def test_help_is_plain_text():
    """No reST markup from docstrings (double backquotes) in any --help, the demo's included."""
    import io
    from contextlib import redirect_stdout

    from fcpose import demo

    shown = {name: p.format_help() for name, p in _all_parsers()}
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        demo.main(["--help"])
    shown["demo"] = out.getvalue()
    assert [name for name, text in shown.items() if "``" in text] == []
    assert "The fcpose command line: predict, track, serve, train" in " ".join(shown["fcpose"].split())


def test_draw_nms_help_says_what_the_code_does():
    predict = dict(_all_parsers())["predict"]
    text = " ".join(next(a for a in predict._actions if "--draw-nms" in a.option_strings).help.split())
    assert "OKS" in text and "IoU" not in text


def test_preset_descriptions_are_whole_sentences(monkeypatch, tmp_path):
    from importlib.resources import files

    from fcpose.config import PRESET_SUMMARIES, list_presets, preset_summary

    assert set(list_presets()) <= set(PRESET_SUMMARIES)  # every shipped preset has its line
    # the fallback (a preset without a line) takes the first sentence of the YAML's opening comment, whole
    monkeypatch.delitem(PRESET_SUMMARIES, "overfit_tiny_official")
    line = preset_summary("overfit_tiny_official")
    comment = " ".join(x.lstrip("# ").strip() for x in (files("fcpose") / "configs" / "overfit_tiny_official.yaml")
                       .read_text().splitlines()[:3])
    assert line.endswith(".") and comment.startswith(line[:-1]) and "on a handful of real images" in line


def test_presets_lists_description_parameters_and_weights(capsys, monkeypatch, tmp_path):
    import fcpose
    from fcpose.config import list_presets

    monkeypatch.setenv("FCPOSE_CACHE", str(tmp_path))
    (tmp_path / "fcpose50.pth").write_bytes(b"")  # as if the R-50 weights were downloaded
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line.split() and line.split()[0] in list_presets()}
    assert set(rows) == set(list_presets())
    tiny = sum(p.numel() for p in fcpose.build_model("fcpose_r18_tiny").parameters())
    assert f"{tiny / 1e6:.1f}M" in rows["fcpose_r18_tiny"].split()
    assert "fcpose_r50_official (cached)" in rows["fcpose_r50_official"]
    assert "fcpose_r101_official (download)" in rows["fcpose_r101_official"]
    assert "none: train it" in rows["fcpose_r50_fpn"] and "the paper's model" in rows["fcpose_r50_fpn"]
    assert all(len(row.split()) > 5 for row in rows.values())  # every preset has a description
    # which presets need ImageNet weights to train (a FrozenBN backbone), which train from scratch
    needs = {name for name, row in rows.items() if "ImageNet weights" in row}
    assert needs == {"fcpose_r50_fpn", "fcpose_r101_fpn", "fcpose_dla34_rt", "fcpose_r50_official",
                     "fcpose_r101_official", "fcpose_r50_crowdpose"}
    assert all("from scratch (GN)" in rows[n] for n in ("fcpose_r18_tiny", "overfit_tiny", "overfit_tiny_official"))
    assert any(line.startswith("to train: 'ImageNet weights'") for line in lines)


@pytest.mark.parametrize("args, expected", [
    (["predict", "x.jpg", "--weights", "w", "--out", "o", "--size", "-5"],
     "fcpose predict: error: argument --size: expected a positive integer, got '-5' (see fcpose predict --help)"),
    (["predict", "x.jpg", "--weights", "w", "--out", "o", "--draw-threshold", "3"],
     "fcpose predict: error: argument --draw-threshold: expected a number in [0, 1], got '3' "
     "(see fcpose predict --help)"),
    (["predict"], "fcpose predict: error: the following arguments are required: SOURCE, --weights, --out "
                  "(see fcpose predict --help)"),
    (["predict", "x", "--weights", "w", "--out", "o", "--device", "gpu"],
     "fcpose predict: error: argument --device: expected cpu, cuda or cuda:N, got 'gpu' (see fcpose predict --help)"),
    (["synth", "--out", "o", "--num", "0"],
     "fcpose synth: error: argument --num: expected a positive integer, got '0' (see fcpose synth --help)"),
])
def test_usage_errors_are_one_line(args, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_train_checks_its_image_folder_first(tmp_path, capsys):
    ann = tmp_path / "a.json"
    ann.write_text("{}")
    line = _one_line_error(capsys, ["train", "--config", "fcpose_r18_tiny", "--data", str(ann), "--images",
                                    str(tmp_path / "nope"), "--output", str(tmp_path / "run")], "train")
    assert line == f"fcpose train: error: --images folder not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "run").exists()


def test_train_reads_its_eval_data_before_the_first_step(coco_tiny, tmp_path, capsys):
    """A missing --eval-data file stops the run at once, not at its first evaluation (the last one comes after
    training, before model_final.pt)."""
    small = ["--max-iter", "1", "--set", "input.min_size_train=[128, 128]", "--set", "input.max_size_train=160"]
    line = _one_line_error(capsys, ["train", "--config", "overfit_tiny", "--data", str(coco_tiny /
                                    "person_keypoints.json"), "--images", str(coco_tiny), "--output",
                                    str(tmp_path / "run"), "--eval-data", str(tmp_path / "val.json"), *small,
                                    "--no-progress"], "train")
    assert line.startswith("fcpose train: error: ") and "val.json" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_errors_from_data_loader_workers_become_one_line():
    from fcpose.errors import InputError, worker_message

    worker = InputError("Caught InputError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\n    raise InputError(msg)\nfcpose.errors.InputError: "
                        "cannot read image a.jpg: not an image file or an unsupported format\n")
    assert worker_message(worker) == "cannot read image a.jpg: not an image file or an unsupported format"
    assert worker_message(InputError("plain  message\nwrapped")) == "plain message wrapped"

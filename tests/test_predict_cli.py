"""`fcpose predict` end to end, and the one-line errors of the command line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from fcpose.cli import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_coco_tiny_folder(tiny_checkpoint, coco_tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(coco_tiny), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--score-threshold", "0.01", "--draw-threshold", "0", "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "predictions.json").read_text())
    images = sorted(p.name for p in coco_tiny.glob("*.jpg"))
    assert {r["file_name"] for r in results} == set(images)
    for r in results:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 51 and len(r["bbox"]) == 4
        assert r["image_id"] == int(Path(r["file_name"]).stem)
    gt = COCO(str(coco_tiny / "person_keypoints.json"))
    dt = gt.loadRes(results)  # pycocotools accepts the file
    assert len(dt.getAnnIds()) == len(results) > 0
    for name in images:
        assert (out / name).is_file()  # one rendered image per input


def test_predict_video(tiny_checkpoint, demo_video, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(demo_video), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--score-threshold", "0.01", "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "predictions.json").read_text())
    assert {r["frame"] for r in results} == set(range(5))
    from fcpose.inference.sources import VideoReader

    with VideoReader(out / "demo.mp4") as reader:
        frames = list(reader)
    assert len(frames) == 5 and frames[0].shape == (540, 960, 3)


def test_folder_with_one_bad_image_processes_the_rest(tiny_checkpoint, coco_tiny, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = sorted(coco_tiny.glob("*.jpg"))[:2]
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(good[0].read_bytes()[:500])
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--score-threshold", "0.01", "--no-progress"], capsys)
    assert code == 1
    assert "broken.jpg" in err and "Traceback" not in err
    results = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in results} == {p.name for p in good}


@pytest.mark.parametrize("case", ["missing_image", "unsupported", "missing_ckpt", "corrupt_ckpt", "bad_preset"])
def test_user_errors_are_one_line(case, tiny_checkpoint, tmp_path, capsys):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(image)
    weights = str(tiny_checkpoint)
    source = str(image)
    if case == "missing_image":
        source = str(tmp_path / "nope.jpg")
    elif case == "unsupported":
        source = str(tmp_path / "notes.txt")
        Path(source).write_text("hello")
    elif case == "missing_ckpt":
        weights = str(tmp_path / "nope.pt")
    elif case == "corrupt_ckpt":
        weights = str(tmp_path / "corrupt.pt")
        Path(weights).write_bytes(b"\x00garbage")
    if case == "bad_preset":
        code, out, err = run_cli(["presets", "no_such_preset"], capsys)
    else:
        code, out, err = run_cli(["predict", source, "--weights", weights, "--out", str(tmp_path / "o"),
                                  "--no-progress"], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("fcpose "), err
    assert "Traceback" not in err


def test_module_entry_point_and_unknown_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fcpose", "presets", "fcpose_r18_tiny", "--set", "model.nope=1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("fcpose presets: error: unknown config key 'model.nope' (valid here: backbone, "
                                   "fcos, fpn, keypoint)")
    proc = subprocess.run([sys.executable, "-m", "fcpose", "presets"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and "fcpose_dla34_rt" in proc.stdout

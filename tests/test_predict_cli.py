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


def test_folder_images_run_batch_size_at_a_time(tiny_checkpoint, tmp_path, capsys):
    """A folder goes to the predictor --batch-size images per call (equal sizes run together): the same
    detections as one image per call, a line per image with its share of the call's time; an unreadable
    image in a batch is skipped alone."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(96, 80), (96, 80), (96, 80), (64, 112), (96, 80)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "9_broken.png").write_bytes(b"not an image")
    runs = {}
    for batch in ("1", "3"):
        out = tmp_path / f"out{batch}"
        code, _, err = run_cli(["predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(out),
                                "--score-threshold", "0.05", "--batch-size", batch, "--no-progress", "--no-render"],
                               capsys)
        assert code == 1, err  # the broken image is reported, the others are done
        lines = err.strip().splitlines()
        per_image = [line for line in lines if line.split(":")[0].endswith(".png") and " ms" in line]
        assert [line.split(":")[0] for line in per_image] == [f"{i}.png" for i in range(5)], err
        assert sum("(a batch of 3)" in line for line in per_image) == (3 if batch == "3" else 0), err
        assert sum("9_broken.png" in line for line in lines) == 1, err
        runs[batch] = sorted(json.loads((out / "predictions.json").read_text()),
                             key=lambda r: (r["file_name"], -r["score"]))
    assert len(runs["1"]) == len(runs["3"]) > 0
    for a, b in zip(runs["1"], runs["3"]):  # batched convolutions may round differently in the last bits
        assert a["file_name"] == b["file_name"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)


def test_predict_video(tiny_checkpoint, demo_video, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(demo_video), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--score-threshold", "0.01", "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "predictions.json").read_text())
    assert {r["frame"] for r in results} == set(range(5))
    from fcpose.data.video import VideoReader

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


def _write_image(path: Path, size=(64, 48)) -> Path:
    from PIL import Image

    Image.new("RGB", size, (120, 90, 60)).save(path)
    return path


def test_single_corrupt_image_is_one_line_exit_2_and_no_output(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    _write_image(tmp_path / "ok.jpg")
    bad.write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(bad), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--no-progress"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "broken.jpg" in lines[0]
    assert lines[0].startswith("fcpose predict: error: cannot read image")
    assert not (out / "predictions.json").exists()


def test_all_inputs_bad_is_one_line(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = run_cli(["predict", str(bad), str(tmp_path / "absent.jpg"), "--weights", str(tiny_checkpoint),
                            "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "none of the 2 inputs could be used" in lines[0], err
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_folder_reports_each_bad_image_once(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _write_image(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    (folder / "c.png").write_bytes(b"not a png either")
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--no-progress"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert sum("b.jpg" in line for line in lines) == 1 and sum("c.png" in line for line in lines) == 1
    assert [line for line in lines if line.startswith("skipped:")] == [
        line for line in lines if "b.jpg" in line or "c.png" in line]
    assert lines[-1] == "2 of 3 input(s) failed (listed above)"
    assert {r["file_name"] for r in json.loads((out / "predictions.json").read_text())} <= {"a.jpg"}


def test_people_count_is_what_is_drawn(tiny_checkpoint, tmp_path, capsys):
    """The screen reports the people drawn (score >= --draw-threshold after duplicate removal), per image,
    with the time; predictions.json keeps every detection above --score-threshold."""
    image = _write_image(tmp_path / "x.png", (96, 80))
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(image), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--score-threshold", "0.01", "--draw-threshold", "0.5", "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) > 0
    lines = err.strip().splitlines()
    import re

    m = re.fullmatch(r"x\.png: (\d+) (?:person|people) \(score >= 0\.5\), \d+ ms", lines[0])
    assert m, lines[0]
    drawn = int(m.group(1))
    assert drawn <= sum(r["score"] >= 0.5 for r in results)
    assert re.fullmatch(rf"1 image: {drawn} (person|people) \(score >= 0\.5\), \d+ ms per image \([\d.]+/s\) -> "
                        rf".*predictions\.json \(all {len(results)} detections with score >= 0\.01\)", lines[-1]), \
        lines[-1]


def test_pose_nms_removes_duplicates_not_neighbours():
    import torch

    from fcpose.config import COCO_SIGMAS
    from fcpose.ops.oks import pose_nms

    gen = torch.Generator().manual_seed(0)
    person = torch.rand(17, 2, generator=gen) * torch.tensor([40.0, 100.0]) + torch.tensor([10.0, 10.0])
    same = person + torch.randn(17, 2, generator=gen) * 1.0  # the same person seen from a second location
    other = person + torch.tensor([45.0, 0.0])  # a neighbour of the same build standing next to them
    kps = torch.cat([torch.stack([person, same, other]), torch.ones(3, 17, 1)], dim=2)
    boxes = torch.tensor([[10.0, 10, 50, 110], [8, 12, 52, 108], [55, 10, 95, 110]])
    scores = torch.tensor([0.9, 0.5, 0.8])
    assert pose_nms(boxes, scores, kps, COCO_SIGMAS, 0.5).tolist() == [0, 2]
    assert pose_nms(boxes, scores, kps, COCO_SIGMAS, 1.0).tolist() == [0, 2, 1]  # 1 keeps everyone


@pytest.mark.parametrize("case", ["out_is_file", "out_uncreatable"])
def test_output_folder_errors_are_one_line(case, tiny_checkpoint, tmp_path, capsys):
    image = _write_image(tmp_path / "x.png")
    if case == "out_is_file":
        out = tmp_path / "taken"
        out.write_text("keep me")
    else:
        out = Path("/proc/fcpose-test-out")
    code, _, err = run_cli(["predict", str(image), "--weights", str(tiny_checkpoint), "--out", str(out),
                            "--no-progress"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcpose predict: error: ") and str(out) in lines[0], err
    if case == "out_is_file":
        assert out.read_text() == "keep me"


def test_eval_with_one_unreadable_image_scores_the_rest(tiny_checkpoint, coco_tiny, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for p in coco_tiny.glob("*.jpg"):
        shutil.copy(p, images / p.name)
    broken = sorted(images.glob("*.jpg"))[1]
    broken.write_bytes(broken.read_bytes()[:3000])
    metrics = tmp_path / "m.json"
    code, out, err = run_cli(["eval", "--data", str(coco_tiny / "person_keypoints.json"), "--weights",
                              str(tiny_checkpoint), "--images", str(images), "--json", str(metrics),
                              "--no-progress"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"skipped: cannot read image {broken}")
    assert lines[0].endswith("(scored as no detections)")
    assert lines[-1] == "1 image(s) could not be read (listed above) and count as having no detections"
    assert set(json.loads(metrics.read_text())) == {"keypoints", "bbox"}
    assert out.startswith("keypoints AP ")


def _three_image_dataset(tmp_path) -> Path:
    from fcpose.config import COCO_KEYPOINT_NAMES

    images = [{"id": i + 1, "file_name": f"{n}.jpg", "width": 96, "height": 80} for i, n in enumerate("abc")]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": [30, 30, 2] * 17, "num_keypoints": 17,
             "bbox": [10, 10, 40, 50], "area": 2000.0, "iscrowd": 0} for i in range(3)]
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES)}]}))
    return ann


def test_eval_with_a_wrong_image_folder_is_one_line(tmp_path, capsys):
    """A folder holding none of the annotation file's images: one line (how many of N, one example path),
    exit 2, before the model loads (the weights here do not exist), nothing written."""
    ann = _three_image_dataset(tmp_path)
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    _write_image(wrong / "unrelated.jpg")
    metrics = tmp_path / "m" / "metrics.json"
    code, out, err = run_cli(["eval", "--data", str(ann), "--weights", str(tmp_path / "never_read.pt"), "--images",
                              str(wrong), "--json", str(metrics), "--no-progress"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"fcpose eval: error: 0 of the 3 images of {ann} were found in {wrong} (e.g. {wrong / 'a.jpg'} does not "
        f"exist): give --images the folder that holds the file names of the annotation file"]
    assert not (tmp_path / "m").exists()


def test_eval_with_some_images_missing_says_it_once(tiny_checkpoint, tmp_path, capsys):
    ann = _three_image_dataset(tmp_path)
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "b.jpg", (96, 80))
    code, out, err = run_cli(["eval", "--data", str(ann), "--weights", str(tiny_checkpoint), "--images", str(folder),
                              "--no-progress"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines == [f"skipped: 2 of the 3 images of {ann} were not found in {folder} (e.g. {folder / 'a.jpg'}) "
                     f"(scored as no detections)",
                     "2 image(s) could not be read (listed above) and count as having no detections"], lines
    assert out.startswith("keypoints AP ")

"""fcpose dataset import (Label Studio) and fcpose dataset check (CVAT's COCO Keypoints 1.0 export as it comes, broken
files): samples written here from a small synthetic dataset, converted, checked, then trained for two steps."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from fcpose.cli import main
from fcpose.config import COCO_KEYPOINT_NAMES, COCO_SKELETON, KeypointSetConfig
from fcpose.data import DatasetReport, convert_label_studio
from fcpose.weights.checkpoint import read_checkpoint

FAST = ["input.min_size_train=[128, 128]", "input.max_size_train=160", "input.min_size_test=128",
        "input.max_size_test=160", "solver.warmup_iters=1", "solver.log_period=1", "solver.checkpoint_period=0"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """3 synthetic 128x160 images with 1-3 people (COCO's 17 keypoints, visible and occluded)."""
    from fcpose.data.synthetic.coco_writer import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    ann = generate_dataset(root, 3, 5, min_people=1, max_people=3, image_size=(128, 160), progress=False)
    return json.loads(ann.read_text()), root / "images"


def train_two_steps(ann_file, images, out) -> dict:
    """`fcpose train` for 2 iterations of the tiny model; the final checkpoint."""
    args = ["train", "--config", "overfit_tiny", "--data", str(ann_file), "--images", str(images), "--output",
            str(out), "--max-iter", "2", "--batch-size", "1", "--num-workers", "0", "--no-progress"]
    assert main(args + [a for o in FAST for a in ("--set", o)]) == 0
    return read_checkpoint(out / "model_final.pt")


def check(capsys, ann_file, images=None) -> tuple[int, list[str]]:
    """`fcpose dataset check`: exit status and output lines."""
    code = main(["dataset", "check", str(ann_file)] + (["--images", str(images)] if images else []))
    return code, capsys.readouterr().out.splitlines()


# ---- Label Studio ------------------------------------------------------------------------------------------------
def label_studio_export(coco: dict, names: list[str], rename: dict | None = None) -> list[dict]:
    """A Label Studio JSON export of ``coco``'s people (what the KeyPointLabels + RectangleLabels tags export):
    a box per person, its keypoints as children (``parentID``), percentages of the image size; uploaded file names
    carry Label Studio's 8-hex-digit prefix."""
    rename = rename or {}
    tasks = []
    for img in coco["images"]:
        w, h = img["width"], img["height"]
        result = []
        for ann in (a for a in coco["annotations"] if a["image_id"] == img["id"] and not a["iscrowd"]):
            x, y, bw, bh = ann["bbox"]
            box = {"id": f"box{ann['id']}", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                   "original_width": w, "original_height": h, "image_rotation": 0,
                   "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * bw / w, "height": 100 * bh / h,
                             "rotation": 0, "rectanglelabels": ["person"]}}
            result.append(box)
            for j, name in enumerate(COCO_KEYPOINT_NAMES):
                kx, ky, v = ann["keypoints"][3 * j:3 * j + 3]
                if v > 0 and rename.get(name, name) in names:
                    result.append({"id": f"kp{ann['id']}_{j}", "type": "keypointlabels", "parentID": box["id"],
                                   "from_name": "kp", "to_name": "image", "original_width": w, "original_height": h,
                                   "image_rotation": 0,
                                   "value": {"x": 100 * (kx + 0.5) / w, "y": 100 * (ky + 0.5) / h, "width": 0.5,
                                             "keypointlabels": [rename.get(name, name)]}})
        tasks.append({"id": 100 + img["id"], "data": {"image": f"/data/upload/7/0a1b2c3d-{img['file_name']}"},
                      "annotations": [{"id": 500 + img["id"], "was_cancelled": False, "result": result}]})
    return tasks


def test_label_studio_export_converts_to_the_same_people(synth, tmp_path, capsys):
    coco, images = synth
    tasks = label_studio_export(coco, COCO_KEYPOINT_NAMES)
    tasks[1]["annotations"][0]["result"].append(  # a label the keypoint set does not have
        {"id": "hat1", "type": "keypointlabels", "original_width": 160, "original_height": 128,
         "value": {"x": 10.0, "y": 10.0, "width": 0.5, "keypointlabels": ["hat"]}})
    tasks.append({"id": 200, "data": {"image": "/data/upload/7/0a1b2c3d-000001.jpg"}, "annotations": []})
    tasks.append({"id": 201, "data": {"image": "/data/upload/7/0a1b2c3d-000002.jpg"},
                  "annotations": [{"id": 9, "was_cancelled": True, "result": []}]})
    tasks.append({"id": 202, "data": {"image": "/data/upload/7/0a1b2c3d-000003.jpg"},  # labelled: nobody here
                  "annotations": [{"id": 10, "was_cancelled": False, "result": []}]})
    export = tmp_path / "project-1.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "coco.json"
    assert main(["dataset", "import", "--from", "label-studio", str(export), "--out", str(out),
                 "--images", str(images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "problem: task 102: label 'hat' is not a keypoint of the set (nose, left_eye, right_eye, left_ear, ...): "
        "left out",
        "problem: 2 tasks have no annotation (not labelled yet, or skipped): left out"]
    assert lines[2].startswith(f"wrote {out}: 4 images, {len(coco['annotations'])} people, ")
    got = json.loads(out.read_text())
    assert [img["file_name"] for img in got["images"]] == ["000001.jpg", "000002.jpg", "000003.jpg", "000003.jpg"]
    assert got["images"][3]["height"] == 128 and got["images"][3]["width"] == 160  # read from the file
    assert got["categories"][0]["skeleton"] == [[a + 1, b + 1] for a, b in COCO_SKELETON]
    assert len(got["annotations"]) == len(coco["annotations"])
    for mine, theirs in zip(got["annotations"], coco["annotations"]):
        assert mine["bbox"] == pytest.approx(theirs["bbox"], abs=1e-3)
        for j in range(17):
            x, y, v = mine["keypoints"][3 * j:3 * j + 3]
            tx, ty, tv = theirs["keypoints"][3 * j:3 * j + 3]
            assert v == (2 if tv > 0 else 0)
            if tv > 0:  # the same pixel index: + 0.5 into Label Studio's continuous percentages, - 0.5 back
                assert (x, y) == pytest.approx((tx, ty), abs=1e-3)
        assert mine["num_keypoints"] == sum(v > 0 for v in theirs["keypoints"][2::3])


def test_label_studio_keypoints_without_parent_go_to_the_box_they_lie_in():
    def point(label, x, y, parent=None):
        r = {"id": label, "type": "keypointlabels", "original_width": 200, "original_height": 100,
             "value": {"x": x, "y": y, "keypointlabels": [label]}}
        return {**r, "parentID": parent} if parent else r

    box = {"id": "b", "type": "rectanglelabels", "original_width": 200, "original_height": 100,
           "value": {"x": 10, "y": 10, "width": 20, "height": 50, "rectanglelabels": ["person"]}}
    other = {**box, "id": "c", "value": {**box["value"], "x": 25}}  # overlaps b over x in [25, 30] percent
    tasks = [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [box, other, point("nose", 15, 20),
                                                                                point("left_eye", 27, 20)]}]},
             {"id": 2, "data": {"image": "b.jpg"},
              "annotations": [{"result": [point("nose", 50, 50), point("left_hip", 55, 80)]}]}]
    tasks[1]["annotations"][0]["result"].append({"id": "p", "type": "keypointlabels", "value": {"x": 3}})  # no y
    coco, problems = convert_label_studio(tasks, KeypointSetConfig())
    assert problems == ["task 1: keypoint 'left_eye' at (54.0, 20.0) belongs to no single box (no parentID, inside "
                        "none or several): left out",
                        "task 2: region p (keypointlabels) lacks x/y: left out"]
    first, second = coco["annotations"][0], coco["annotations"][2]
    assert first["keypoints"][:3] == [29.5, 19.5, 2] and first["num_keypoints"] == 1  # 15% of 200 px, - 0.5
    assert coco["annotations"][1]["num_keypoints"] == 0  # box c: nobody's keypoints
    assert second["image_id"] == 2 and second["bbox"] == [100.0, 50.0, 10.0, 30.0] and second["num_keypoints"] == 2


def test_label_studio_rotated_box_is_one_line_with_its_keypoints():
    """A rotated box is left out with its keypoints (their parentID): one problem line, not one more per keypoint."""
    size = {"original_width": 200, "original_height": 100}
    box = {"id": "b", "type": "rectanglelabels", **size,
           "value": {"x": 10, "y": 10, "width": 20, "height": 50, "rotation": 30, "rectanglelabels": ["person"]}}
    upright = {**box, "id": "c", "value": {**box["value"], "x": 50, "rotation": 0}}
    points = [{"id": f"{parent}{label}", "type": "keypointlabels", "parentID": parent, **size,
               "value": {"x": x, "y": 20, "keypointlabels": [label]}}
              for parent, label, x in (("b", "nose", 15), ("b", "left_eye", 16), ("b", "hat", 17), ("c", "nose", 55))]
    tasks = [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [box, upright, *points]}]}]
    coco, problems = convert_label_studio(tasks, KeypointSetConfig())
    assert problems == ["task 1: box b is rotated (30 degrees): left out with its keypoints"]
    assert [(a["bbox"], a["num_keypoints"]) for a in coco["annotations"]] == [([100.0, 10.0, 40.0, 50.0], 1)]

def test_label_studio_boxless_person_under_a_pixel_across_is_a_problem():
    """A task without a box whose points span under a pixel either way (one point, points in a line) would be a
    box training drops with its keypoints: one problem line instead of an unusable person."""
    def task(tid, *points):
        result = [{"id": f"{tid}{label}", "type": "keypointlabels", "original_width": 200, "original_height": 100,
                   "value": {"x": x, "y": y, "keypointlabels": [label]}} for label, x, y in points]
        return {"id": tid, "data": {"image": f"{tid}.jpg"}, "annotations": [{"result": result}]}

    tasks = [task(1, ("nose", 50, 50)), task(2, ("nose", 50, 10), ("left_hip", 50, 60)),
             task(3, ("nose", 50, 10), ("left_hip", 50.2, 60)), task(4, ("nose", 50, 10), ("left_hip", 60, 60))]
    coco, problems = convert_label_studio(tasks, KeypointSetConfig())
    assert problems == [
        "task 1: no box, and the 1 keypoint span only 0.0 x 0.0 px (a person's box needs 1 px each way): left out; "
        "draw a box around the person",
        "task 2: no box, and the 2 keypoints span only 0.0 x 50.0 px (a person's box needs 1 px each way): left out; "
        "draw a box around the person",
        "task 3: no box, and the 2 keypoints span only 0.4 x 50.0 px (a person's box needs 1 px each way): left out; "
        "draw a box around the person"]
    assert len(coco["images"]) == 4  # the images stay (as with every problem, only the item is left out)
    assert [(a["image_id"], a["bbox"], a["num_keypoints"]) for a in coco["annotations"]] == [
        (4, [100.0, 10.0, 20.0, 50.0], 2)]


def test_label_studio_custom_keypoint_set_converts_checks_and_trains(synth, tmp_path, capsys):
    coco, images = synth
    rename = {"nose": "head", "left_shoulder": "l_shoulder", "right_shoulder": "r_shoulder", "left_hip": "l_hip",
              "right_hip": "r_hip"}
    names = list(rename.values())
    (tmp_path / "five.yaml").write_text(
        "keypoints:\n  names: [head, l_shoulder, r_shoulder, l_hip, r_hip]\n"
        "  skeleton: [[1, 2], [1, 3], [2, 4], [3, 4]]\n  flip_pairs: [[1, 2], [3, 4]]\n"
        "  sigmas: [0.03, 0.08, 0.08, 0.1, 0.1]\n")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(coco, names, rename)))
    out = tmp_path / "five.json"
    assert main(["dataset", "import", "--from", "label-studio", str(export), "--out", str(out), "--keypoints",
                 str(tmp_path / "five.yaml"), "--images", str(images)]) == 0
    capsys.readouterr()
    code, lines = check(capsys, out, images)
    assert code == 0 and lines[-1] == "result: ready to train"
    assert "sigmas: the category's 'sigmas' field" in lines
    assert "flip pairs: 2 (the category's 'flip_pairs' field: l_shoulder/r_shoulder, l_hip/r_hip)" in lines
    ckpt = train_two_steps(out, images, tmp_path / "run")
    assert ckpt["config"]["keypoints"]["names"] == names
    assert ckpt["config"]["keypoints"]["sigmas"] == [0.03, 0.08, 0.08, 0.1, 0.1]


def test_import_errors_are_one_line(tmp_path, capsys):
    export = tmp_path / "min.json"
    export.write_text(json.dumps({"image": "a.jpg", "kp": []}))  # JSON-MIN-like: not a list of tasks
    assert main(["dataset", "import", "--from", "label-studio", str(export), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"fcpose dataset: error: {export} is not a Label Studio JSON export (a list of tasks); export with "
                   "the 'JSON' format, not JSON-MIN or COCO"]
    assert not (tmp_path / "o.json").exists()


# ---- CVAT's COCO Keypoints 1.0 and dataset check ----------------------------------------------------------------
def cvat_export(coco: dict) -> dict:
    """``coco`` as CVAT's "COCO Keypoints 1.0" export writes it (through Datumaro's COCO keypoints writer): every
    label a category (those that are not skeletons with empty ``keypoints``), a 1-based skeleton, ``segmentation``
    lists, an ``attributes`` dict per annotation, points marked "outside" as v = 0 with their coordinates kept, and
    images without annotations listed."""
    out = copy.deepcopy(coco)
    out.pop("info", None)
    out["licenses"] = [{"name": "", "id": 0, "url": ""}]
    out["categories"] = [{"id": 1, "name": "person", "supercategory": "", "keypoints": list(COCO_KEYPOINT_NAMES),
                          "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]},
                         {"id": 2, "name": "bag", "supercategory": "", "keypoints": [], "skeleton": []}]
    for img in out["images"]:
        img.update({"license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
    for ann in out["annotations"]:
        ann.update({"segmentation": [], "attributes": {"occluded": False}})
        kp = ann["keypoints"]
        for j in range(17):
            if kp[3 * j + 2] == 0:
                kp[3 * j:3 * j + 2] = [12.0, 34.0]  # an "outside" point keeps where it was
    return out


def test_cvat_export_checks_and_trains_as_it_comes(synth, tmp_path, capsys):
    coco, images = synth
    folder = tmp_path / "images" / "default"  # the export's layout: images/<subset>/, annotations/
    shutil.copytree(images, folder)
    shutil.copy(folder / "000001.jpg", folder / "empty.jpg")
    data = cvat_export(coco)
    data["images"].append({"id": 4, "file_name": "empty.jpg", "width": 160, "height": 128, "license": 0,
                           "flickr_url": "", "coco_url": "", "date_captured": 0})
    data["annotations"][0]["attributes"]["occluded"] = True
    ann_file = tmp_path / "annotations" / "person_keypoints_default.json"
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps(data))
    code, lines = check(capsys, ann_file, folder)
    people = len(coco["annotations"])
    assert code == 0, lines
    assert lines[:5] == [
        f"{ann_file}: category 'person' (id 1), 17 keypoints",
        f"images: 4 listed, 1 without people; 4 of them found in {folder}",
        f"people: {people} ({people} with labelled keypoints), 0 crowd regions; boxes kept for training: {people}",
        "sigmas: COCO's, by keypoint name (the category has no 'sigmas' field)",
        "flip pairs: 8 (COCO's: left_eye/right_eye, left_ear/right_ear, left_shoulder/right_shoulder, ...)"]
    hidden = sum(any(v == 0 for v in a["keypoints"][2::3]) for a in coco["annotations"])
    assert lines[-3:] == [
        "note: annotation attributes (occluded; CVAT writes them) are not used: the keypoints' own visibility flags "
        "are",
        f"note: {hidden} annotations give coordinates to unlabelled keypoints (v = 0; CVAT keeps them for points "
        "marked outside): they are ignored, as COCO intends",
        "result: ready to train"]
    ckpt = train_two_steps(ann_file, folder, tmp_path / "run")
    assert ckpt["config"]["keypoints"]["names"] == COCO_KEYPOINT_NAMES


def test_check_lists_each_problem_of_a_broken_file(synth, tmp_path, capsys):
    coco, images = synth
    data = cvat_export(coco)
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]  # 16 keypoints
    data["annotations"][1]["image_id"] = 99
    data["images"][2]["file_name"] = "lost.jpg"
    ann_file = tmp_path / "broken.json"
    ann_file.write_text(json.dumps(data))
    code, lines = check(capsys, ann_file, images)
    a0, a1 = data["annotations"][0]["id"], data["annotations"][1]["id"]
    assert code == 1
    assert lines == [f"{ann_file}: not a valid COCO keypoint annotation file",
                     f"problem: annotation {a0} (annotations[0]) has 48 keypoint values, expected 51 (x, y, v for 17 "
                     "keypoints)",
                     f"problem: annotation {a1} (annotations[1]) refers to image 99, which is not in 'images'",
                     "result: 2 problems: cannot be trained on as it is"]

    data = cvat_export(coco)  # the shape is right; what training reads is not
    data["categories"][0]["skeleton"] = [[a, b] for a, b in COCO_SKELETON]  # 0-based
    data["images"][2]["file_name"] = "lost.jpg"
    data["images"][1]["width"] = 161
    ann_file.write_text(json.dumps(data))
    code, lines = check(capsys, ann_file, images)
    assert code == 1
    assert [line for line in lines if line.startswith("problem")] == [
        f"problem: image 2: {images / '000002.jpg'} is 128x160 (h x w) but the file says 128x161",
        f"problem: image 3: image not found: {images / 'lost.jpg'}",
        "problem: category 'person' (id 1): 'skeleton' pair [0, 1] is outside 1..17: skeleton pairs number the "
        "keypoints from 1, as in COCO (and CVAT's export)"]
    assert lines[-1] == "result: 3 problems: cannot be trained on as it is"
    # ... and training indeed refuses the file, with the same line
    assert main(["train", "--config", "overfit_tiny", "--data", str(ann_file), "--images", str(images), "--output",
                 str(tmp_path / "run"), "--max-iter", "1", "--num-workers", "0", "--no-progress"]) == 2
    assert "'skeleton' pair [0, 1] is outside 1..17" in capsys.readouterr().err


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d.pop("images"), "no 'images' list"),
    (lambda d: d.update(images=[]), "its 'images' list is empty"),
    (lambda d: d.update(images={"1": "a.jpg"}), "no 'images' list"),
    (lambda d: d.pop("categories"), "no 'categories' list (or it is empty)")])
def test_check_stops_at_a_missing_images_or_categories_list(synth, tmp_path, capsys, edit, problem):
    """Without its 'images' (or 'categories') list the file has one problem, not one more per annotation (each
    "refers to image N, which is not in 'images'")."""
    data = cvat_export(synth[0])
    edit(data)
    ann_file = tmp_path / "listless.json"
    ann_file.write_text(json.dumps(data))
    assert check(capsys, ann_file) == (1, [f"{ann_file}: not a valid COCO keypoint annotation file",
                                           f"problem: {problem}", "result: 1 problem: cannot be trained on as it is"])

def test_check_custom_keypoints_without_sigmas_and_unreadable_files(synth, tmp_path, capsys):
    coco, _ = synth
    data = cvat_export(coco)
    data["categories"][0]["keypoints"] = [str(i) for i in range(1, 18)]  # CVAT's default point names: 1, 2, ...
    ann_file = tmp_path / "numbered.json"
    ann_file.write_text(json.dumps(data))
    code, lines = check(capsys, ann_file)
    assert code == 1
    assert "sigmas: none (add a 'sigmas' field to the category)" in lines
    assert [line for line in lines if line.startswith("problem")] == [
        "problem: category 'person' (id 1) has 17 custom keypoints but no 'sigmas' field: add the 17 OKS sigmas (one "
        "per keypoint, as in the COCO API) to the category (not COCO keypoint names: 1, 2, 3, 4, 5)"]

    ann_file.write_text("{not json")
    assert main(["dataset", "check", str(ann_file)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcpose dataset: error: cannot read annotation file {ann_file}: ")


def test_report_lists_twenty_problems_and_counts_the_rest():
    report = DatasetReport(summary=["a.json: ..."], problems=[f"p{i}" for i in range(25)], notes=["n"])
    assert report.lines() == (["a.json: ...", "note: n"] + [f"problem: p{i}" for i in range(20)]
                              + ["problem: ... and 5 more problems",
                                 "result: 25 problems: cannot be trained on as it is"])
    assert not report.trainable and DatasetReport().trainable

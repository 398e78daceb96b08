"""`make demo`: the official COCO model on a real photo when its weights can be had, else the synthetic
model on a synthetic scene, with one line saying which and why; a synthetic-only model warns on real photos."""

import json
import urllib.error
from pathlib import Path

import pytest

from fcpose import demo
from fcpose.assets import DEMO_MODEL, PHOTO, SCENE, asset
from fcpose.errors import CheckpointError

PHOTO_PATH, SCENE_PATH = asset(PHOTO), asset(SCENE)


def test_shipped_demo_model_says_it_is_synthetic(monkeypatch, tmp_path):
    """The bundled model is a zoo name that needs no cache and no download."""
    from fcpose.weights import zoo
    from fcpose.weights.checkpoint import read_checkpoint

    monkeypatch.setenv("FCPOSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "download", lambda *a, **k: pytest.fail("the bundled model was downloaded"))
    assert zoo.resolve_weights("fcpose_synth_demo") == asset(DEMO_MODEL)
    assert read_checkpoint(asset(DEMO_MODEL))["trained_on"] == "synthetic"
    notes = asset("README.md").read_text()
    assert PHOTO in notes and "creativecommons.org/licenses/by/2.0" in notes
    assert not (tmp_path / "cache").exists()


def test_a_missing_bundled_file_is_one_line():
    from fcpose.errors import FCPoseError

    with pytest.raises(FCPoseError, match=r"^the bundled file nothing\.pt is missing from .*reinstall"):
        asset("nothing.pt")


def test_demo_falls_back_to_synthetic_offline(monkeypatch, tmp_path, capsys):
    from fcpose.weights import zoo

    def offline(url, dest, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("FCPOSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "download", offline)
    assert demo.main(["--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == ("demo: the official COCO weights (fcpose_r50_official) could not be downloaded ([Errno -2] "
                        "Name or service not known), so this is the small model trained on synthetic scenes only, on "
                        "a synthetic scene; with internet access (or the file in the cache, see the README) the demo "
                        "runs the COCO model on a real photo")
    assert not any(line.startswith("warning:") for line in lines)  # a synthetic scene: no domain warning
    assert lines[1].startswith("warm-up: ") and lines[2].startswith("sample.jpg: ")
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert (tmp_path / "out" / "sample.jpg").is_file()


def test_demo_uses_the_official_model_when_it_can(monkeypatch, tmp_path):
    from fcpose.weights import zoo

    monkeypatch.setattr(zoo, "fetch", lambda name, **kw: tmp_path / "fcpose50.pth")
    weights, image, line = demo.choose()
    assert (weights, image) == ("fcpose_r50_official", PHOTO_PATH)
    assert line.startswith("demo: the authors' COCO model (fcpose_r50_official) on a COCO val2017 photo")


def test_demo_offline_reason_comes_from_the_zoo(monkeypatch):
    from fcpose.weights import zoo

    def fail(name, **kw):
        error = CheckpointError("long message")
        error.reason = "timed out"
        raise error

    monkeypatch.setattr(zoo, "fetch", fail)
    weights, image, line = demo.choose()
    assert weights == "fcpose_synth_demo" and image == SCENE_PATH and "(timed out)" in line


@pytest.mark.parametrize("source, warns", [("photo", True), ("scene", False), ("synth", False)])
def test_synthetic_model_warns_once_on_real_images(source, warns, tmp_path, capsys):
    import shutil

    from fcpose.cli import main

    if source == "photo":
        inputs = [str(PHOTO_PATH), str(tmp_path / "copy.jpg")]
        shutil.copy(PHOTO_PATH, inputs[1])
    elif source == "scene":
        inputs = [str(SCENE_PATH)]
    else:
        assert main(["synth", "--out", str(tmp_path / "ds"), "--num", "2", "--height", "96", "--width", "128"]) == 0
        inputs = [str(tmp_path / "ds" / "images")]
    capsys.readouterr()
    assert main(["predict", *inputs, "--weights", "fcpose_synth_demo", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in lines if line.startswith("warning: this model was trained on synthetic scenes only")]
    assert len(warnings) == (1 if warns else 0), lines


def test_demo_reports_warm_up_apart_and_keeps_only_this_runs_outputs(tmp_path, capsys):
    """`fcpose demo --weights ...` after a run on the other image: only this run's rendering stays (files the
    demo does not write are not touched); the first image's time no longer includes the warm-up."""
    import re

    from fcpose.cli import main

    out = tmp_path / "demo_out"
    out.mkdir()
    stale = out / f"{Path(PHOTO).stem}.jpg"  # what an earlier run with the COCO model left
    stale.write_bytes(b"an older rendering")
    mine = out / "notes.txt"
    mine.write_text("not the demo's")
    assert main(["demo", "--out", str(out), "--weights", "fcpose_synth_demo"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "predictions.json", "sample.jpg"]
    assert mine.read_text() == "not the demo's"
    assert re.fullmatch(r"warm-up: a first, untimed run on sample\.jpg took \d+ ms \(.*\)", lines[1]), lines
    assert re.match(r"sample\.jpg: \d+ people \(score >= 0\.3\), \d+ ms$", lines[2]), lines
    assert lines[-1] == f"removed {stale} (an earlier demo run's rendering of another image)"

"""Batch inference on Ray Data (fcpose.inference.ray_data): the callable class on batches of bytes, paths and arrays
without a Ray cluster, its COCO writer against ``fcpose predict``, then a local Ray (``num_cpus=2``) end to end and
the worked example (examples/ray_batch_predict.py)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXPORT_TOL
from PIL import Image

from fcpose import Predictor
from fcpose.assets import SCENE, asset
from fcpose.data.images import read_image
from fcpose.errors import FCPoseError, InputError
from fcpose.inference.predict_command import run_predict
from fcpose.inference.ray_data import RayPredictor, detections_of, read_image_files, require_ray, write_coco_results

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "fcpose_synth_demo"  # the bundled demo model, by its zoo name
SIZES = {"min_size": 128, "max_size": 192}  # small inputs: CPU time


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Four crops of the bundled scene, two padded sizes, as PNG files named by their COCO-style ids."""
    scene = read_image(asset(SCENE))
    folder = tmp_path_factory.mktemp("ray_images")
    crops = [scene[:200, :300], scene[100:300, 150:450], scene[:, ::-1][:200, :300], scene[:150, :120]]
    for i, crop in enumerate(crops, start=1):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{i:06d}.png")
    return folder


def predicted(images: Path, batch_size: int) -> dict:
    """The Predictor's detections of each image, by file name. Exact equality needs the same images per network call
    (a convolution's float rounding depends on the batch: about 1e-4 px between batches of 1 and 2)."""
    paths = sorted(images.glob("*.png"))
    found = Predictor.from_checkpoint(WEIGHTS, batch_size=batch_size, **SIZES).predict(paths)
    assert sum(len(d) for d in found) > 0
    return {p.name: d for p, d in zip(paths, found)}


@pytest.fixture(scope="module")
def reference(images) -> dict:
    """Two images per network call, as ``ray_predictor`` runs the batches of the tests without Ray."""
    return predicted(images, batch_size=2)


@pytest.fixture(scope="module")
def reference_single(images) -> dict:
    """One image per call: what Ray's own split of rows into batches cannot change."""
    return predicted(images, batch_size=1)


@pytest.fixture(scope="module")
def ray_predictor() -> RayPredictor:
    return RayPredictor(WEIGHTS, batch_size=2, **SIZES)


def assert_same(row, dets) -> None:
    found = detections_of(row)
    assert row["error"] == "" and (int(row["height"]), int(row["width"])) == tuple(dets.image_size)
    for key in ("boxes", "scores", "keypoints"):
        assert torch.equal(getattr(found, key), getattr(dets, key)), key


def assert_close(found, dets) -> None:
    """The same people from another process, within the export tolerances: a convolution's float rounding depends on
    its thread count too, and Ray gives each worker as many threads as it has CPUs (here 1)."""
    assert len(found) == len(dets) > 0 and tuple(found.image_size) == tuple(dets.image_size)
    torch.testing.assert_close(found.scores, dets.scores, rtol=0, atol=EXPORT_TOL["score"])
    torch.testing.assert_close(found.boxes, dets.boxes, rtol=0, atol=EXPORT_TOL["box_px"])
    torch.testing.assert_close(found.keypoints[..., 2], dets.keypoints[..., 2], rtol=0,
                               atol=EXPORT_TOL["keypoint_score"])
    moved = (found.keypoints[..., :2] - dets.keypoints[..., :2]).abs().amax(dim=-1) > EXPORT_TOL["keypoint_px"]
    assert int(moved.sum()) <= max(1, moved.numel() // 200)  # heatmap arg-max ties (conftest.assert_same_people)


def assert_close_entries(got: list[dict], want: list[dict]) -> None:
    """:func:`assert_close` for COCO results entries, whose numbers are rounded to 0.001."""
    assert len(got) == len(want) > 0
    a, b = (np.array([[e["score"], *e["bbox"]] for e in x]) for x in (got, want))
    np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=0, atol=EXPORT_TOL["score"])
    np.testing.assert_allclose(a[:, 1:], b[:, 1:], rtol=0, atol=EXPORT_TOL["box_px"] + 2e-3)
    ka, kb = (np.array([e["keypoints"] for e in x]).reshape(len(x), -1, 3) for x in (got, want))
    np.testing.assert_allclose(ka[..., 2], kb[..., 2], rtol=0, atol=EXPORT_TOL["keypoint_score"] + 1e-3)
    moved = np.abs(ka[..., :2] - kb[..., :2]).max(axis=-1) > EXPORT_TOL["keypoint_px"] + 1e-3
    assert moved.sum() <= max(1, moved.size // 200)


def rows_of(out: dict) -> list[dict]:
    return [{key: values[i] for key, values in out.items()} for i in range(len(out["error"]))]


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def objects(items: list) -> np.ndarray:
    """A 1-D object column, as Ray's numpy batches carry bytes, strings and images of different sizes."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


@pytest.mark.parametrize("kind", ["bytes", "path", "image"])
def test_a_batch_gives_the_predictors_people_and_one_error_row_per_bad_image(kind, images, reference, ray_predictor):
    """Bytes (read_binary_files, Parquet), paths and arrays (read_images): the Predictor's detections exactly; a bad
    image in the middle is one row with its reason and no people, and the other columns pass through."""
    paths = sorted(images.glob("*.png"))
    cells = {"bytes": [png_bytes(p) for p in paths], "path": [str(p) for p in paths],
             "image": [read_image(p) for p in paths]}[kind]
    bad = {"bytes": b"not an image", "path": str(images / "missing.png"), "image": np.zeros((4, 4), np.uint8)}[kind]
    cells.insert(2, bad)
    batch = {kind: objects(cells), "tag": np.arange(len(cells))}
    if kind != "path":
        batch["path"] = objects([str(p) for p in paths[:2]] + ["bad.png"] + [str(p) for p in paths[2:]])
    rows = rows_of(ray_predictor(batch))
    assert [r["tag"] for r in rows] == list(range(len(cells)))
    assert (kind in rows[0]) == (kind == "path")  # image bytes and arrays are not carried on, paths are
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0] is rows[2] and len(detections_of(rows[2])) == 0
    assert rows[2]["predict_ms"] == 0.0 and "\n" not in rows[2]["error"]
    for row, path in zip(rows[:2] + rows[3:], paths):
        assert row["file_name"] == path.name and row["image_id"] == int(path.stem) and row["predict_ms"] > 0
        assert_same(row, reference[path.name])


def test_the_image_column_and_ids(ray_predictor, images):
    """A named column; an ``image_id`` column is kept as given; no id from a name without a number: -1."""
    path = sorted(images.glob("*.png"))[0]
    out = ray_predictor({"path": objects([str(path)]), "image_id": np.array([77])})
    assert out["image_id"].tolist() == [77]
    named = RayPredictor(WEIGHTS, column="jpeg", **SIZES)
    out = named({"jpeg": objects([png_bytes(path)])})
    assert out["image_id"].tolist() == [-1] and out["file_name"].tolist() == [""] and out["error"][0] == ""
    with pytest.raises(InputError, match="no column 'jpeg'"):
        named({"bytes": objects([png_bytes(path)])})
    with pytest.raises(InputError, match="none of the image columns"):
        ray_predictor({"data": objects([png_bytes(path)])})


def test_paths_in_another_column_keep_their_names_and_rows_without_either_are_refused(images, tmp_path):
    """Paths in a column not named ``path`` still name the rows; rows with neither an id nor a name cannot be
    written as COCO results (one line, no file)."""
    path = sorted(images.glob("*.png"))[0]
    out = RayPredictor(WEIGHTS, column="image", **SIZES)({"image": objects([str(path)])})
    assert out["file_name"].tolist() == [path.name] and out["image"].tolist() == [str(path)]
    nameless = rows_of(RayPredictor(WEIGHTS, column="jpeg", **SIZES)({"jpeg": objects([png_bytes(path)])}))
    with pytest.raises(InputError, match="neither an image_id nor a file name"):
        write_coco_results(nameless, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_rows_write_the_predictions_json_of_fcpose_predict(images, ray_predictor, tmp_path):
    """The COCO writer gives ``fcpose predict``'s predictions.json, entry for entry; error rows are left out and
    counted; the file is complete or absent."""
    out = tmp_path / "predict"
    assert run_predict([str(images)], WEIGHTS, str(out), size=SIZES["min_size"], max_size=SIZES["max_size"],
                       batch_size=2, render=False, progress=False, log=lambda msg: None) == 0
    paths = sorted(images.glob("*.png"))
    rows = rows_of(ray_predictor({"bytes": objects([png_bytes(p) for p in paths] + [b""]),
                                  "path": objects([str(p) for p in paths] + ["empty.png"])}))
    written, failed = write_coco_results(rows, tmp_path / "ray.json")
    assert failed == 1 and "empty" in rows[-1]["error"]
    assert json.loads(written.read_text()) == json.loads((out / "predictions.json").read_text())
    shuffled, _ = write_coco_results(rows[::-1], tmp_path / "shuffled.json")  # in whatever order Ray gives the rows
    assert shuffled.read_text() == written.read_text()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(FCPoseError):
        write_coco_results(rows, blocked / "ray.json")
    assert not (blocked / "ray.json").exists()


def test_rows_with_flattened_people_columns_and_no_people(images, ray_predictor, tmp_path):
    """People columns flattened (as a Parquet round trip may give them) turn back into the same detections, and an
    image with no people (N = 0, K unknown) into an empty one that writes no entries."""
    path = sorted(images.glob("*.png"))[0]
    row = rows_of(ray_predictor({"path": objects([str(path)])}))[0]
    flat = {**row, **{key: np.asarray(row[key]).reshape(-1) for key in ("boxes", "scores", "keypoints")}}
    for key in ("boxes", "scores", "keypoints"):
        assert torch.equal(getattr(detections_of(flat), key), getattr(detections_of(row), key)), key
    nobody = {**row, "boxes": np.zeros(0, np.float32), "scores": np.zeros(0, np.float32),
              "keypoints": np.zeros(0, np.float32)}
    found = detections_of(nobody)
    assert len(found) == 0 and found.keypoints.shape == (0, 0, 3) and found.to_coco(image_id=1) == []
    written, failed = write_coco_results([nobody], tmp_path / "nobody.json")
    assert failed == 0 and json.loads(written.read_text()) == []


def test_without_ray_one_clear_error(monkeypatch, images):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FCPoseError, match=r"pip install 'fcpose\[ray\]'"):
        require_ray()
    with pytest.raises(FCPoseError, match=r"fcpose\[ray\]"):
        read_image_files([images])


def test_read_image_files_says_what_cannot_be_used(images, tmp_path):
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    with pytest.raises(InputError, match="missing"):
        read_image_files([images, tmp_path / "missing"])
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    with pytest.raises(InputError, match="Ray Data runs images"):
        read_image_files([video])


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # the workers import this checkout's fcpose
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_ray_rows_from_parquet(local_ray, images, reference_single, tmp_path):
    """Parquet of image bytes and ids through ``map_batches`` on 2 workers of a local Ray (``num_cpus=2``): one row per
    image with the Predictor's people, the bad image one error row while the dataset goes on. The workers take half a
    CPU each: actors on all of Ray's CPUs leave none for the read tasks, and the dataset waits forever
    (ray-project/ray#44687). Slow (a Ray start, ~50 s here): CI runs the example below through Ray instead."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(images.glob("*.png"))
    pq.write_table(pa.table({"image": [png_bytes(p) for p in paths] + [b"junk"],
                             "image_id": [int(p.stem) for p in paths] + [99]}), tmp_path / "images.parquet")
    model = {"weights": WEIGHTS, "batch_size": 1, "column": "image", **SIZES}
    done = local_ray.data.read_parquet(tmp_path / "images.parquet").map_batches(
        RayPredictor, fn_constructor_kwargs=model, batch_size=2, batch_format="numpy",
        compute=local_ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5).materialize()
    rows = done.take_all()
    path, failed = write_coco_results(done, tmp_path / "from_dataset.json")  # a dataset is written row by row
    assert failed == 1 and path.read_text() == write_coco_results(rows, tmp_path / "from_rows.json")[0].read_text()
    done.write_parquet(tmp_path / "rows")  # the rows of a large job, streamed to Parquet, convert the same
    again, _ = write_coco_results(local_ray.data.read_parquet(tmp_path / "rows"), tmp_path / "from_parquet.json")
    assert again.read_text() == path.read_text()
    by_id = {int(row["image_id"]): row for row in rows}
    assert len(rows) == len(by_id) == len(paths) + 1 and "image" not in rows[0]
    assert "not an image" in by_id[99]["error"] and len(detections_of(by_id[99])) == 0
    for path in paths:
        assert by_id[int(path.stem)]["error"] == ""
        assert_close(detections_of(by_id[int(path.stem)]), reference_single[path.name])


def test_example_on_a_folder_with_a_broken_image(images, reference_single, tmp_path):
    """examples/ray_batch_predict.py on a folder (``read_image_files``) on its own local Ray (2 CPUs, 2 workers of
    the default half a CPU): predictions.json holds the Predictor's people, the broken file is one line on stderr
    and exit 1."""
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    folder = tmp_path / "in"
    shutil.copytree(images, folder)
    (folder / "000099.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [folder, "--weights", WEIGHTS, "--batch", 1, "--size", SIZES["min_size"], "--max-size", SIZES["max_size"],
            "--workers", 2, "--num-cpus", 2, "--out", out]  # the default CPUs per worker: 0.5 here
    result = subprocess.run([sys.executable, str(REPO / "examples" / "ray_batch_predict.py"), *map(str, args)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # one image failed
    assert "skipped: 000099.png: cannot read image 000099.png" in result.stderr
    assert "1 of 5 images failed" in result.stderr and "2 Ray workers of 0.5 CPUs" in result.stderr
    got = json.loads((out / "predictions.json").read_text())
    assert [e["image_id"] for e in got] == sorted(e["image_id"] for e in got)  # rows in image_id order
    paths = sorted(images.glob("*.png"))
    for path in paths:
        assert_close_entries([e for e in got if e["image_id"] == int(path.stem)],
                             reference_single[path.name].to_coco(image_id=int(path.stem), file_name=path.name))
    assert {e["file_name"] for e in got} == {p.name for p in paths}


def test_example_says_a_workers_error_in_one_line(images, tmp_path):
    """A worker that cannot load the model (a missing checkpoint): exit 2, the error's own message after the
    example's name (no exception class path), no output folder."""
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [images, "--weights", tmp_path / "missing.pt", "--workers", 1, "--num-cpus", 2, "--out", tmp_path / "out"]
    result = subprocess.run([sys.executable, str(REPO / "examples" / "ray_batch_predict.py"), *map(str, args)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("ray_batch_predict: error:")]
    assert len(said) == 1 and "CheckpointError" not in said[0], said
    assert said[0].startswith(f"ray_batch_predict: error: checkpoint not found: {tmp_path / 'missing.pt'} ("), said
    assert not (tmp_path / "out").exists()


def example():
    """examples/ray_batch_predict.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("ray_batch_predict", REPO / "examples" / "ray_batch_predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_cpus_per_worker_leave_one_cpu_for_reading_on_a_local_ray():
    """The default on a local Ray: all CPUs but one, shared (2 CPUs, 2 workers: 0.5 each, which runs where 1 each
    would wait forever, ray-project/ray#44687); a given value is kept, and refused when it leaves no CPU free; on a
    cluster (RAY_ADDRESS) the default is 1 and nothing is refused."""
    ex = example()
    assert ex.parse_args(["photos", "--out", "o"]).cpus_per_worker is None
    assert ex.worker_cpus(None, 2, 2, local=True) == 0.5
    assert ex.worker_cpus(None, 3, 8, local=True) == 2.33  # rounded down: 8 - 3 x 2.33 >= 1
    assert ex.worker_cpus(None, 4, 16, local=True) == 3.75
    assert ex.worker_cpus(None, 2, 1, local=True) == 0
    assert ex.worker_cpus(None, 2, 2, local=False) == 1
    assert ex.worker_cpus(0.5, 2, 2, local=True) == 0.5
    assert ex.worker_cpus(1, 2, 2, local=False) == 1
    with pytest.raises(FCPoseError, match="2 workers x 1 CPUs leave 0 of Ray's CPUs"):
        ex.worker_cpus(1, 2, 2, local=True)


def test_example_checks_a_parquet_tables_columns_before_any_inference(images, tmp_path):
    """Rows with neither an image_id nor a path column (and images as bytes) could not be written to
    predictions.json: the example says so in one line, exit 2, before a worker loads the model (here a missing
    checkpoint, which would otherwise be the error). The rule itself, on column types without Ray."""
    pa = pytest.importorskip("pyarrow", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'fcpose[ray]')")
    import pyarrow.parquet as pq

    ex = example()
    ex.check_columns(["image", "image_id"], [pa.binary(), pa.int64()], None)
    ex.check_columns(["bytes", "path"], [pa.binary(), pa.string()], None)
    ex.check_columns(["image"], [pa.large_string()], None)  # paths name the rows
    with pytest.raises(InputError, match="neither an image_id nor a path column"):
        ex.check_columns(["image", "tag"], [pa.binary(), pa.int64()], None)
    with pytest.raises(InputError, match="no column 'jpeg'"):
        ex.check_columns(["image", "image_id"], [pa.binary(), pa.int64()], "jpeg")
    paths = sorted(images.glob("*.png"))
    pq.write_table(pa.table({"image": [png_bytes(p) for p in paths], "tag": list(range(len(paths)))}),
                   tmp_path / "images.parquet")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = ["--parquet", tmp_path / "images.parquet", "--weights", tmp_path / "missing.pt", "--num-cpus", 2,
            "--out", tmp_path / "out"]
    result = subprocess.run([sys.executable, str(REPO / "examples" / "ray_batch_predict.py"), *map(str, args)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("ray_batch_predict: error:")]
    assert len(said) == 1 and "neither an image_id nor a path column (columns: image, tag)" in said[0], said
    assert "checkpoint not found" not in result.stderr and not (tmp_path / "out").exists()

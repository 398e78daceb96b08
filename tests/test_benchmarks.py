"""Every script in benchmarks/ runs, CI-sized (tiny presets and sizes, one repetition, outputs in tmp_path).

These check that the scripts still work against the library, not what they measure: no timing is asserted.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcpose.assets import DEMO_MODEL, asset

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
DEMO = asset(DEMO_MODEL)


def run(script: str, *args, ok=(0,), env=None) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` with this checkout's fcpose first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    cmd = ["bash", str(BENCH / script)] if script.endswith(".sh") else [sys.executable, str(BENCH / script)]
    result = subprocess.run([*cmd, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode in ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_run_all_smoke_bench_people_plot_and_summarize(tmp_path):
    """run_all.sh --smoke: bench_people.py (a preset, a variant), plot_people.py, then its --tables on them."""
    run("run_all.sh", "--smoke", env={"BENCH_OUT": str(tmp_path), "PYTHON": sys.executable})
    for variant in ("optimized", "reference"):
        report = json.loads((tmp_path / f"people_fcpose_r18_tiny_cpu_{variant}.json").read_text())
        assert [e["persons"] for e in report["results"]] == [1, 2] and report["variant"] == variant
    assert (tmp_path / "people.png").stat().st_size > 0
    tables = run("plot_people.py", "--tables", *tmp_path.glob("people_*.json")).stdout
    assert "| fcpose_r18_tiny | optimized fp32 |" in tables


def test_gpu_inference_check_small(tmp_path):
    out = tmp_path / "gpu.json"
    run("gpu_inference_check.py", "--device", "cpu", "--small", "--out", out)
    assert json.loads(out.read_text())


def test_serve_load(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    out = tmp_path / "serve.json"
    run("serve_load.py", "--clients", 1, "--seconds", 1, "--rounds", 1, "--warmup", 1, "--model-reps", 1,
        "--size", 128, "--json", out)
    assert json.loads(out.read_text())


def test_scale_out(tmp_path):
    """One process, torchrun with 2 processes and Ray Data with 2 workers on the same images: each row a number
    and predictions that match one process's (the Ray row: or a line saying ray is not installed)."""
    out = tmp_path / "scale_out.json"
    run("scale_out.py", "--images", 2, "--size", 128, "--json", out)
    report = json.loads(out.read_text())
    first, *others = report["rows"]
    assert first["status"] == "ok" and first["images_per_s"] > 0 and report["machine"]["cpu_model"]
    assert [r["path"] for r in others] == ["torchrun, 2 processes", "Ray Data, 2 workers"]
    ray_installed = importlib.util.find_spec("ray") is not None
    for row in others:
        assert row["status"] == "ok" or (row["path"].startswith("Ray") and not ray_installed), row
        if row["status"] == "ok":
            assert row["images_per_s"] > 0 and row["predictions_vs_one_process"]["same_detections_per_image"]


def test_train_throughput(coco_tiny, tmp_path):
    """images/s, the time split and the JSON."""
    out = tmp_path / "tp.json"
    run("train_throughput.py", "--config", "overfit_tiny", "--data", coco_tiny / "person_keypoints.json",
        "--device", "cpu", "--batch", 1, "--precision", "fp32", "--size", 128, "--steps", 1, "--warmup", 1,
        "--workers", 0, "--json", out)
    (result,) = json.loads(out.read_text())["runs"]
    assert result["images_per_sec"] > 0 and result["precision"] == "fp32" and result["batch"] == 1
    assert set(result["split_ms"]) == {"data", "forward_loss", "backward", "optimizer"}
    assert all(v >= 0 for v in result["split_ms"].values())


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_fcpose_name_a_script_imports_exists(script):
    """The quick guard against rot: every ``from fcpose... import name`` in a script, inside its functions too
    (the slow smoke runs below are the full check), names something the package has."""
    for node in ast.walk(ast.parse((BENCH / script).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fcpose"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)
                       and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            assert not missing, f"{script}: {node.module} has no {missing}"


@pytest.mark.slow  # ~70 s: three fresh processes on the golden R-50; the name check above runs in CI
def test_parity_noise_smoke(golden, tmp_path):
    """--smoke (the golden intermediates in float64 and fp32, the exports): the report, and ours within the
    intermediates' tolerance of the golden data (docs/parity.md)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "noise.json"
    run("parity_noise.py", "--smoke", "--out", out)
    report = json.loads(out.read_text())
    setting = report["settings"]["as_is"]
    assert 0 < report["golden_vs_ours64"]["intermediates"]["max"] < 3.2e-5
    assert 0 < setting["ours32_vs_ours64"]["intermediates"]["max"] < 3.2e-5
    assert setting["exports_vs_torch"]["onnxruntime"]["keypoints"] > 0 and report["flip_pair_swapped_px"] > 1


def test_tracking_quality_tracker_only_and_end_to_end(tmp_path):
    pytest.importorskip("motmetrics")
    out = tmp_path / "tracking.json"
    run("tracking_quality.py", "--clips", 1, "--frames", 6, "--weights", DEMO, "--size", 128, "--json", out)
    report = json.loads(out.read_text())
    assert 0 <= report["tracker_only"]["pose_aware"]["idf1"] <= 1
    assert set(report["end_to_end"]) >= {"pose_aware", "iou_only"}


def test_keypoint_error_analysis(tiny_checkpoint, coco_tiny, tmp_path):
    out = tmp_path / "errors.json"
    run("keypoint_error_analysis.py", "--weights", tiny_checkpoint, "--data", coco_tiny / "person_keypoints.json",
        "--images", coco_tiny, "--size", 128, "--json", out)
    assert "oracle_keypoints" in json.loads(out.read_text())["keypoint_AP"]


def _needs_openvino():
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from fcpose.cpu import onednn_cap_below_cpu

    if onednn_cap_below_cpu():
        pytest.skip("OpenVINO crashes under a capped oneDNN (ONEDNN_MAX_CPU_ISA below the CPU)")


@pytest.mark.slow
def test_openvino_int8_accuracy(tmp_path):
    """Three exports (fp32, int8, int8 with the heads) and four evaluations, each a process: minutes."""
    _needs_openvino()
    out = tmp_path / "accuracy.json"
    run("openvino_int8.py", "--sets", "synthetic", "--calib", 2, "--heldout", 2, "--work",
        tmp_path / "work", "--out", out)
    assert set(json.loads(out.read_text())["sets"]["synthetic"]["variants"]) == {
        "openvino_fp32", "openvino_int8", "openvino_int8_heads_int8"}


def test_train_check_overfit(coco_tiny, tmp_path):
    """Two iterations: the JSON is written; the target is not met."""
    out = tmp_path / "overfit.json"
    run("train_check.py", "overfit", "--set", "solver.max_iter=2", "--out", out)
    report = json.loads(out.read_text())
    assert report["iterations"] == 2 and report["met"] is False


def test_train_check_synthetic(tmp_path):
    out = tmp_path / "synth.json"
    run("train_check.py", "synthetic", "--train", 4, "--val", 2, "--work", tmp_path / "work",
        "--set", "solver.max_iter=2", "--out", out)
    assert json.loads(out.read_text())["iterations"] == 2

"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FCPOSE_SHARED", REPO.parent / "shared"))
COCO_TINY = SHARED / "data" / "coco_tiny"
DEMO_VIDEO = SHARED / "data" / "video" / "demo.mp4"
GOLDEN = SHARED / "golden" / "adelaidet_fcpose"
GOLDEN_TRAIN = SHARED / "golden" / "adelaidet_fcpose_train"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (shared test data not available here)")
    return path


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    return require(COCO_TINY / "person_keypoints.json").parent


@pytest.fixture
def demo_video() -> Path:
    return require(DEMO_VIDEO)


@pytest.fixture(scope="session")
def golden() -> Path:
    return require(GOLDEN / "NOTES.md").parent


@pytest.fixture(scope="session")
def golden_train() -> Path:
    return require(GOLDEN_TRAIN / "train_golden_r50.pt")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def select_people(model, dense, params=None, **options):
    """Stage 1 of the model's post-processor (``params``: a TestConfig, default the model's)."""
    from fcpose.postprocess import PostProcessor

    return PostProcessor.from_model(model, params).select(dense, **options)


def decode_people(model, dense, instances, tile_bytes=None):
    """Stage 2 of the model's post-processor: ``[N, K, 3]`` keypoints of ``instances``."""
    from fcpose.postprocess import PostProcessor

    return PostProcessor.from_model(model).keypoints(dense, instances, model.instance_params(dense, instances),
                                                     tile_bytes=tile_bytes)


def make_lively(model):
    """A fresh model whose random network still produces structured outputs (fcpose.bench.people.lively_heads)."""
    from fcpose.bench.people import lively_heads

    return lively_heads(model)


@pytest.fixture(scope="session")
def tiny_model():
    import fcpose

    torch.manual_seed(0)
    return make_lively(fcpose.build_model("fcpose_r18_tiny"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    import fcpose

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    fcpose.save_checkpoint(tiny_model, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """``fcpose export --dynamic`` of the tiny checkpoint, once per session (an export takes ~30 s here): the ONNX
    tests run it, the OpenVINO int8 test quantises it."""
    from fcpose.cli import main

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "--weights", str(tiny_checkpoint), "--out", str(path), "--dynamic"]) == 0
    return path


@pytest.fixture(scope="session")
def static_variant_onnx(tmp_path_factory):
    """``fcpose export --size 128x180`` (a static graph, padded to 128x192) of a model variant: the official-style
    3x3 controller, offsets in pixels and logit keypoint scores. Returns (model, path, what the command printed);
    the ONNX tests check the file and the printed line, the OpenVINO tests convert it to a static IR."""
    import contextlib
    import io

    import fcpose
    from fcpose.cli import main

    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny", [
        "model.keypoint.controller_kernel=3", "model.keypoint.offset_unit=pixel", "model.keypoint.score=logit"]))
    weights = tmp_path_factory.mktemp("variant") / "variant.pt"
    fcpose.save_checkpoint(model, weights)
    path = tmp_path_factory.mktemp("static_onnx") / "static.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        assert main(["export", "--weights", str(weights), "--out", str(path), "--size", "128x180"]) == 0
    return model, path, printed.getvalue()


# An exported model (onnxruntime, OpenVINO fp32) against PyTorch fp32 on the same images. Largest deviations
# measured (benchmarks/parity_noise.py, exports_vs_torch: tiny model, coco_tiny, 4,148 keypoints; Xeon AVX-512 +
# VNNI, PyTorch's kernels as is, ATEN_CPU_CAPABILITY=default and avx2 + ONEDNN_MAX_CPU_ISA=AVX2): person score
# 3.6e-7, box 9.2e-5 px, keypoint score 1.3e-4, keypoint 9.2e-5 px. onnxruntime and OpenVINO choose their
# kernels from the CPU alone, so their side could not be varied here: the margin is 10x (3x elsewhere), rounded
# up. A real error lands far above: the location grid one pixel off moves boxes and keypoints by 1 px; a
# swapped flip pair moves those keypoints by 283 px (median, same people).
EXPORT_TOL = {"score": 1e-5, "box_px": 1e-3, "keypoint_score": 2e-3, "keypoint_px": 1e-3}


def assert_same_people(exported, reference, keypoint_score_rtol: float = 0.0) -> int:
    """The same people (generating locations, order) within :data:`EXPORT_TOL`, except heatmap arg-max ties:
    two cells within float rounding of each other, where a keypoint jumps to the other cell while its score
    (a function of the peak value) still agrees — at most 1 keypoint in 200 (measured: 1 in 4,148). Returns
    how many keypoints jumped. ``keypoint_score_rtol``: for raw-logit keypoint scores (large values)."""
    assert len(exported) == len(reference)
    assert torch.equal(exported.locations, reference.locations)
    torch.testing.assert_close(exported.scores, reference.scores, rtol=0, atol=EXPORT_TOL["score"])
    torch.testing.assert_close(exported.boxes, reference.boxes, rtol=0, atol=EXPORT_TOL["box_px"])
    torch.testing.assert_close(exported.keypoints[..., 2], reference.keypoints[..., 2], rtol=keypoint_score_rtol,
                               atol=EXPORT_TOL["keypoint_score"])
    moved = (exported.keypoints[..., :2] - reference.keypoints[..., :2]).abs().amax(dim=-1) > EXPORT_TOL["keypoint_px"]
    assert int(moved.sum()) <= max(1, moved.numel() // 200), int(moved.sum())
    return int(moved.sum())


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the slow end-to-end checks (training to a target; minutes each)")


def pytest_collection_modifyitems(config, items):
    # The OpenVINO/NNCF tests run last: after NNCF has quantised a model in this process, a later training
    # test crashed the interpreter (segfault in native code, reproduced with test_openvino.py followed by
    # test_train_checks.py; not seen in separate processes). Known limitation, see the closing note.
    items.sort(key=lambda item: item.fspath.basename == "test_openvino.py")
    if config.getoption("--runslow") or os.environ.get("FCPOSE_RUNSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow end-to-end check: run with --runslow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

"""ONNX export of the whole pipeline: parity of onnxruntime with PyTorch, `fcpose export` / `predict --backend`."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_same_people

import fcpose
from fcpose.cli import main
from fcpose.errors import CheckpointError, FCPoseError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def onnx_model(tiny_onnx):
    return tiny_onnx


def test_onnxruntime_matches_pytorch_on_coco_tiny(onnx_model, tiny_model, coco_tiny):
    from fcpose.export.onnx_predictor import OnnxPredictor

    ort_pred = OnnxPredictor(onnx_model, score_threshold=0.05)
    pt_pred = fcpose.Predictor(tiny_model, score_threshold=0.05)
    images = sorted(coco_tiny.glob("*.jpg"))
    assert images
    total = 0
    for path in images:
        o, p = ort_pred(path), pt_pred(path)
        assert o.image_size == p.image_size
        assert_same_people(o, p)
        total += len(p)
    assert total > 0


def test_onnx_dynamic_sizes_thresholds_and_empty_output(onnx_model, tiny_model):
    from fcpose.export.onnx_predictor import OnnxPredictor

    gen = torch.Generator().manual_seed(7)
    image = torch.randint(0, 256, (90, 140, 3), generator=gen, dtype=torch.uint8).numpy()
    for threshold in (0.02, 0.3):
        o = OnnxPredictor(onnx_model, score_threshold=threshold, min_size=160, max_size=256)(image)
        p = fcpose.Predictor(tiny_model, score_threshold=threshold, min_size=160, max_size=256)(image)
        assert_same_people(o, p)
    none = OnnxPredictor(onnx_model, score_threshold=1.0)(image)
    assert len(none) == 0 and none.keypoints.shape == (0, 17, 3) and none.image_size == (90, 140)


def test_onnx_graph_contains_nms_and_metadata(onnx_model):
    import onnx

    model = onnx.load(str(onnx_model), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    assert "NonMaxSuppression" in ops
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["fcpose_export"])["dynamic"] is True
    assert json.loads(meta["fcpose_config"])["name"] == "fcpose_r18_tiny"
    assert [i.name for i in model.graph.input] == ["image", "score_threshold"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "keypoints", "levels", "locations"]


def test_predict_cli_with_onnxruntime(onnx_model, tiny_checkpoint, coco_tiny, tmp_path, capsys):
    out_ort, out_pt = tmp_path / "ort", tmp_path / "pt"
    common = [str(coco_tiny), "--score-threshold", "0.05", "--no-progress", "--no-render"]
    assert main(["predict", *common, "--weights", str(onnx_model), "--out", str(out_ort),
                 "--backend", "onnxruntime"]) == 0
    assert main(["predict", *common, "--weights", str(tiny_checkpoint), "--out", str(out_pt), "--no-optimize"]) == 0
    ort_res = json.loads((out_ort / "predictions.json").read_text())
    pt_res = json.loads((out_pt / "predictions.json").read_text())
    assert len(ort_res) == len(pt_res) > 0
    for a, b in zip(ort_res, pt_res):
        assert a["image_id"] == b["image_id"] and abs(a["score"] - b["score"]) < 1e-3
        assert np.allclose(np.reshape(a["keypoints"], (-1, 3))[:, :2], np.reshape(b["keypoints"], (-1, 3))[:, :2],
                           atol=0.5)


def test_static_export_of_a_model_variant(static_variant_onnx):
    """Static size; the official-style 3x3 controller, offsets in pixels and logit keypoint scores."""
    from fcpose.export.onnx_predictor import OnnxPredictor

    model, path, _ = static_variant_onnx
    pred = OnnxPredictor(path, score_threshold=0.05, min_size=128, max_size=192)
    assert pred.static_size == (128, 192)
    image = np.full((100, 150, 3), 90, dtype=np.uint8)
    image[20:80, 40:110] = 200
    o = pred(image)
    p = fcpose.Predictor(model, score_threshold=0.05, min_size=128, max_size=192)(image)
    assert len(p) > 0
    assert_same_people(o, p, keypoint_score_rtol=1e-4)
    with pytest.raises(FCPoseError, match="exported for 128x192"):
        OnnxPredictor(path, min_size=256, max_size=400)(image)


def test_not_an_export(tmp_path):
    from fcpose.export.onnx_predictor import OnnxPredictor

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError):
        OnnxPredictor(bad)
    with pytest.raises(CheckpointError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_export_compares_outputs_with_onnxruntime(onnx_model, tiny_model, static_variant_onnx):
    import copy

    from fcpose.export.onnx import OnnxPipeline, compare_with_onnxruntime
    from fcpose.model.deploy import optimize_for_inference
    from fcpose.postprocess import PostProcessor

    post = PostProcessor.from_model(tiny_model)
    same = OnnxPipeline(optimize_for_inference(tiny_model, channels_last=False), post).eval()
    report = compare_with_onnxruntime(same, onnx_model, (256, 384), 0.05)
    assert report["people"] > 0 and report["keypoints_px"] <= 0.5 and report["scores"] <= 1e-3

    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.head.controller.bias.add_(0.5)  # a different model: its keypoints move
    changed = OnnxPipeline(optimize_for_inference(other, channels_last=False), post).eval()
    with pytest.raises(FCPoseError, match="does not match PyTorch on a sample 256x384 input"):
        compare_with_onnxruntime(changed, onnx_model, (256, 384), 0.05)

    _, path, printed = static_variant_onnx  # `fcpose export` says what it checked
    assert "outputs checked against onnxruntime on a sample 128x192 input" in printed.strip().splitlines()[-1]
    assert [p.name for p in path.parent.iterdir()] == ["static.onnx"]  # no temporary file left

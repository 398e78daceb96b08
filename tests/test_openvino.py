"""OpenVINO backend: `fcpose export --format openvino [--int8]`, `--backend openvino` against PyTorch, errors."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import assert_same_people

import fcpose
from fcpose.cli import main
from fcpose.cpu import onednn_cap_below_cpu
from fcpose.errors import CheckpointError, FCPoseError, InputError

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("onnxscript")
if onednn_cap_below_cpu():  # what fcpose then refuses in one line: test_openvino_refuses_a_capped_onednn
    pytest.skip(f"ONEDNN_MAX_CPU_ISA={onednn_cap_below_cpu()} is below this CPU's instruction set: OpenVINO's CPU "
                f"plugin crashes so (the cap emulates another CPU for PyTorch only)", allow_module_level=True)


@pytest.fixture(scope="module")
def ir_fp32(tiny_checkpoint, tiny_onnx, tmp_path_factory):
    """`fcpose export --format openvino` of the tiny checkpoint. Its ONNX step hands over the session's ONNX export
    of the same checkpoint (tiny_onnx, the file that step writes), so that the trace (~30 s here) runs once."""
    import shutil
    from pathlib import Path
    from unittest import mock

    calls = []

    def same_export(model, out, **options):
        calls.append(options)
        shutil.copyfile(tiny_onnx, out)
        return Path(out)

    path = tmp_path_factory.mktemp("ov") / "tiny.xml"
    with mock.patch("fcpose.export.onnx.export_onnx", same_export):
        assert main(["export", "--weights", str(tiny_checkpoint), "--format", "openvino", "--out", str(path)]) == 0
    assert len(calls) == 1 and calls[0]["dynamic"] and calls[0]["size"] is None
    return path


@pytest.fixture(scope="module")
def ir_int8(tiny_onnx, coco_tiny, tmp_path_factory):
    """What `fcpose export --format openvino --int8` makes, from the session's ONNX export of the same checkpoint
    (the ONNX step of that command is `fcpose export --dynamic`'s; ir_fp32 runs the whole command)."""
    from fcpose.export.openvino import onnx_to_openvino

    path = tmp_path_factory.mktemp("ov8") / "tiny_int8.xml"
    return onnx_to_openvino(tiny_onnx, path, int8=True, calibration=coco_tiny / "person_keypoints.json",
                            calib_images=3)


def test_openvino_matches_pytorch_on_coco_tiny(ir_fp32, tiny_model, coco_tiny):
    from fcpose.export.openvino_predictor import OpenVinoPredictor

    ov_pred = OpenVinoPredictor(ir_fp32, score_threshold=0.05)
    pt_pred = fcpose.Predictor(tiny_model, score_threshold=0.05)
    assert ov_pred.precision == "fp32"
    total = 0
    for path in sorted(coco_tiny.glob("*.jpg")):
        o, p = ov_pred(path), pt_pred(path)
        assert o.image_size == p.image_size
        assert_same_people(o, p)
        total += len(p)
    assert total > 0


def test_ir_metadata_round_trip(ir_fp32, tiny_checkpoint):
    import openvino as ov

    model = ov.Core().read_model(str(ir_fp32))
    export = json.loads(model.get_rt_info(["fcpose", "export"]).astype(str))
    config = json.loads(model.get_rt_info(["fcpose", "config"]).astype(str))
    assert export["format"] == "fcpose-onnx-1" and export["dynamic"] is True
    assert export["openvino"]["precision"] == "fp32"
    assert config["name"] == "fcpose_r18_tiny"
    assert {op.get_type_name() for op in model.get_ops()} >= {"NonMaxSuppression", "Convolution", "TopK"}
    assert ir_fp32.with_suffix(".bin").is_file()
    assert not list(ir_fp32.parent.glob(".tiny.*"))  # no temporary folder left behind


def test_int8_export_quantises_convolutions_not_heads(ir_int8, tiny_model, coco_tiny):
    import openvino as ov

    from fcpose.export.openvino_predictor import OpenVinoPredictor

    model = ov.Core().read_model(str(ir_int8))
    ops = list(model.get_ops())
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) > 10
    for op in ops:
        if op.get_type_name() == "MatMul":  # controller and dynamic heads: fp32 inputs
            for inp in op.inputs():
                assert inp.get_source_output().get_node().get_type_name() != "FakeQuantize"
    pred = OpenVinoPredictor(ir_int8, score_threshold=0.05)
    assert pred.precision == "int8"
    info = pred.export_info["openvino"]
    assert info["calibration_images"] == 3 and info["fp32_ops"].startswith("MatMul")
    image = sorted(coco_tiny.glob("*.jpg"))[0]
    dets, ref = pred(image), fcpose.Predictor(tiny_model, score_threshold=0.05)(image)
    assert len(dets) > 0 and torch.isfinite(dets.keypoints).all()
    assert dets.keypoints.shape[1:] == ref.keypoints.shape[1:] and dets.image_size == ref.image_size
    # the same people, mostly: int8 moves scores near the threshold and the NMS order, not the scene
    same = {tuple(v) for v in dets.locations.tolist()} & {tuple(v) for v in ref.locations.tolist()}
    assert len(same) >= 0.5 * len(ref)


def test_predict_and_eval_cli_with_openvino(ir_fp32, tiny_checkpoint, coco_tiny, tmp_path, capsys):
    out_ov, out_pt = tmp_path / "ov", tmp_path / "pt"
    common = [str(coco_tiny), "--score-threshold", "0.05", "--no-progress", "--no-render"]
    assert main(["predict", *common, "--weights", str(ir_fp32), "--out", str(out_ov), "--backend", "openvino"]) == 0
    assert main(["predict", *common, "--weights", str(tiny_checkpoint), "--out", str(out_pt), "--no-optimize"]) == 0
    ov_res = json.loads((out_ov / "predictions.json").read_text())
    pt_res = json.loads((out_pt / "predictions.json").read_text())
    assert len(ov_res) == len(pt_res) > 0
    moved = total = 0
    for a, b in zip(ov_res, pt_res):
        assert a["image_id"] == b["image_id"] and abs(a["score"] - b["score"]) < 1e-3
        d = np.abs(np.reshape(a["keypoints"], (-1, 3))[:, :2] - np.reshape(b["keypoints"], (-1, 3))[:, :2]).max(1)
        moved, total = moved + int((d > 0.5).sum()), total + d.size
    assert moved <= max(1, total // 200)
    ann = str(coco_tiny / "person_keypoints.json")
    metrics = {}
    for backend, weights in (("openvino", ir_fp32), ("torch", tiny_checkpoint)):
        out = tmp_path / f"{backend}.json"
        assert main(["eval", "--data", ann, "--images", str(coco_tiny), "--weights", str(weights), "--backend",
                     backend, "--score-threshold", "0.05", "--no-progress", "--json", str(out)]) == 0
        metrics[backend] = json.loads(out.read_text())
    for kind in ("keypoints", "bbox"):
        for key, value in metrics["torch"][kind].items():
            assert abs(metrics["openvino"][kind][key] - value) < 0.01, (kind, key)


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_packages_give_one_line(tiny_checkpoint, coco_tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    code, err = _run(["predict", str(coco_tiny), "--weights", str(tmp_path / "m.xml"), "--out", str(tmp_path / "o"),
                      "--backend", "openvino", "--no-progress"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'fcpose[openvino]'" in err
    code, err = _run(["export", "--weights", str(tiny_checkpoint), "--format", "openvino",
                      "--out", str(tmp_path / "m.xml")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "openvino" in err
    monkeypatch.delitem(sys.modules, "openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    code, err = _run(["export", "--weights", str(tiny_checkpoint), "--format", "openvino", "--int8", "--calibration",
                      str(coco_tiny), "--out", str(tmp_path / "m.xml")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "nncf" in err
    assert not (tmp_path / "m.xml").exists() and not (tmp_path / "m.bin").exists()


def test_corrupt_and_foreign_ir(ir_fp32, coco_tiny, tmp_path, capsys):
    from fcpose.export.openvino_predictor import OpenVinoPredictor

    bad = tmp_path / "bad.xml"
    bad.write_text("<net><layers>not an IR")
    bad.with_suffix(".bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="cannot load OpenVINO model"):
        OpenVinoPredictor(bad)
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"garbage")
    garbage.with_suffix(".bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not an OpenVINO IR"):
        OpenVinoPredictor(garbage)
    code, err = _run(["predict", str(coco_tiny), "--weights", str(bad), "--out", str(tmp_path / "o"),
                      "--backend", "openvino"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "cannot load OpenVINO model" in err
    truncated = tmp_path / "trunc.xml"
    truncated.write_text(ir_fp32.read_text())
    truncated.with_suffix(".bin").write_bytes(ir_fp32.with_suffix(".bin").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="OpenVINO model"):
        OpenVinoPredictor(truncated)
    nobin = tmp_path / "nobin.xml"
    nobin.write_text(ir_fp32.read_text())
    with pytest.raises(CheckpointError, match="weights file nobin.bin is missing"):
        OpenVinoPredictor(nobin)
    with pytest.raises(CheckpointError, match="not found"):
        OpenVinoPredictor(tmp_path / "missing.xml")
    from fcpose.export.openvino import export_openvino

    with pytest.raises(InputError, match=r"\.xml file"):
        export_openvino(None, tmp_path / "model.onnx")  # refused before the model is looked at


def _rewrite(ir, out, export=None, config=None):
    import openvino as ov

    model = ov.Core().read_model(str(ir))
    if export is not None:
        model.set_rt_info(json.dumps(export), ["fcpose", "export"])
    if config is not None:
        model.set_rt_info(json.dumps(config), ["fcpose", "config"])
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def test_model_metadata_mismatch(ir_fp32, tmp_path):
    import openvino as ov

    from fcpose.export.openvino_predictor import OpenVinoPredictor

    model = ov.Core().read_model(str(ir_fp32))
    export = json.loads(model.get_rt_info(["fcpose", "export"]).astype(str))
    config = json.loads(model.get_rt_info(["fcpose", "config"]).astype(str))
    k = 14  # a config with fewer keypoints than the graph outputs
    kp = config["keypoints"]
    kp["names"], kp["sigmas"] = kp["names"][:k], kp["sigmas"][:k]
    kp["skeleton"] = [e for e in kp["skeleton"] if max(e) < k]
    kp["flip_pairs"] = [e for e in kp["flip_pairs"] if max(e) < k]
    with pytest.raises(CheckpointError, match="does not match its fcpose metadata.*17.*14 keypoints"):
        OpenVinoPredictor(_rewrite(ir_fp32, tmp_path / "k14.xml", config=config))
    wrong = dict(export, format="something-else")
    with pytest.raises(CheckpointError, match="not an fcpose OpenVINO model export"):
        OpenVinoPredictor(_rewrite(ir_fp32, tmp_path / "fmt.xml", export=wrong))


def test_static_ir_against_its_metadata(static_variant_onnx, tmp_path):
    from fcpose.export.openvino import onnx_to_openvino
    from fcpose.export.openvino_predictor import OpenVinoPredictor

    model, onnx_path, _ = static_variant_onnx
    path = onnx_to_openvino(onnx_path, tmp_path / "static.xml")
    pred = OpenVinoPredictor(path, min_size=128, max_size=192, score_threshold=0.05)
    assert pred.static_size == (128, 192)
    image = np.full((100, 150, 3), 90, dtype=np.uint8)
    image[20:80, 40:110] = 200
    reference = fcpose.Predictor(model, score_threshold=0.05, min_size=128, max_size=192)(image)
    assert len(reference) > 0
    assert_same_people(pred(image), reference, keypoint_score_rtol=1e-4)
    with pytest.raises(FCPoseError, match="exported for 128x192"):
        OpenVinoPredictor(path, min_size=256, max_size=400)(image)
    export = dict(pred.export_info, size=[96, 128])
    with pytest.raises(CheckpointError, match="does not match its fcpose metadata.*static size"):
        OpenVinoPredictor(_rewrite(path, tmp_path / "size.xml", export=export))


def test_export_argument_errors(tiny_checkpoint, coco_tiny, tmp_path, capsys):
    code, err = _run(["export", "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx"), "--int8"],
                     capsys)
    assert code == 2 and "for --format openvino" in err
    code, err = _run(["export", "--weights", str(tiny_checkpoint), "--format", "openvino", "--int8",
                      "--out", str(tmp_path / "m.xml")], capsys)
    assert code == 2 and "--calibration" in err and len(err.splitlines()) == 1
    code, err = _run(["export", "--weights", str(tiny_checkpoint), "--format", "openvino", "--int8",
                      "--calibration", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.xml")], capsys)
    assert code == 2 and "no such folder" in err
    code, err = _run(["predict", str(coco_tiny), "--weights", str(tiny_checkpoint), "--out",
                      str(tmp_path / "o"), "--backend", "openvino"], capsys)
    assert code == 2 and ".xml" in err
    assert not list(tmp_path.glob("m.*"))


def test_bench_backends_side_by_side(ir_fp32, tmp_path, capsys):
    """`fcpose bench --backends`: one report with every backend, the same people in each; and an exported
    file timed alone (structure only: speed is measured in benchmarks/, not asserted here)."""
    out = tmp_path / "b.json"
    assert main(["bench", "--config", "fcpose_r18_tiny", "--size", "128", "--max-size", "192", "--backends",
                 "torch,openvino,openvino-int8", "--calib-images", "2", "--runs", "2", "--warmup", "1",
                 "--score-threshold", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["results"]] == ["torch", "openvino", "openvino-int8"]
    assert report["input_shape"] == [128, 192] and report["int8"]["calibration"] == "random uniform noise images"
    people = {r["backend"]: r["people"] for r in report["results"]}
    assert people["torch"] == people["openvino"] > 0 and report["detection_params"]["score_threshold"] == 0
    assert all(r["total_ms"]["median"] > 0 and "speedup_vs_torch" in r for r in report["results"])
    printed = capsys.readouterr().out
    assert "openvino-int8" in printed and f"({report['machine']['instruction_set']})" in printed
    from fcpose.cpu import cpu_info, int8_note

    assert report.get("int8_note") == int8_note(cpu_info()[1])  # said where the CPU has no VNNI or AMX
    assert (report.get("int8_note") or "") in printed
    single = tmp_path / "s.json"
    assert main(["bench", "--backends", "openvino", "--weights", str(ir_fp32), "--runs", "1", "--warmup", "0",
                 "--json", str(single)]) == 0
    one = json.loads(single.read_text())
    assert [r["backend"] for r in one["results"]] == ["openvino"] and one["config"] == "fcpose_r18_tiny"
    code, err = _run(["bench", "--backends", "torch,tensorrt", "--config", "fcpose_r18_tiny"], capsys)
    assert code == 2 and "tensorrt" in err

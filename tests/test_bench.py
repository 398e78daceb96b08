"""`fcpose bench`: report format, forced-N selection, FLOP counting (no timing assertions)."""

import json

import pytest
import torch
from conftest import decode_people, select_people

import fcpose
from fcpose.bench.people import (
    ForcedSelection,
    count_network_flops,
    format_report,
    head_flops_per_person,
    run_bench,
    synthetic_image,
)
from fcpose.cli import main
from fcpose.config import TestConfig
from fcpose.postprocess import PostProcessor

STAT_KEYS = {"median", "p90", "mean", "min"}


def _check_entry(entry, persons):
    assert entry["persons"] == persons
    for key in ("total_ms", "network_ms", "heads_ms", "nms_ms", "preprocess_ms"):
        assert set(entry[key]) == STAT_KEYS and entry[key]["median"] >= 0
        assert entry[key]["p90"] >= entry[key]["min"]
    assert entry["total_ms"]["median"] >= entry["network_ms"]["median"]
    assert entry["peak_mem_mb"] >= 0 and entry["peak_total_mb"] > 0 and entry["fps"] > 0


def test_bench_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--config", "fcpose_r18_tiny", "--size", "96", "--max-size", "160", "--persons", "1,3,7",
                 "--runs", "2", "--warmup", "1", "--json", str(out), "--note", "test run"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "persons" in printed and "conv probe" in printed
    assert "total med/p90" in printed and "total as median/p90 over" in printed  # columns are labelled
    report = json.loads(out.read_text())
    machine = report["machine"]
    for key in ("cpu_model", "instruction_set", "logical_cpus", "torch", "torch_threads", "cpu_flags", "device_name"):
        assert key in machine
    assert f"({machine['instruction_set']}, torch {machine['torch_cpu_capability']} kernels)" in printed
    assert report["config"] == "fcpose_r18_tiny" and report["weights"] == "random" and report["note"] == "test run"
    assert report["input_shape"] == [96, 160] and report["resized_shape"] == [96, 160]
    assert report["optimize"] and report["fold_bn"] and report["precision"] == "fp32"
    assert [r["persons"] for r in report["results"]] == [1, 3, 7]
    for r, n in zip(report["results"], [1, 3, 7]):
        _check_entry(r, n)
        assert r["instances"] == n  # forced-N: exactly N people through the dynamic heads
        assert r["network_gflops_per_s"] > 0
    assert report["flops"]["network_gflop"] > 0 and report["flops"]["heads_gflop_per_person"] > 0
    probe = report["conv_probe"]
    assert probe["gflops_per_s"] > 0 and len(probe["convs"]) >= 5
    assert set(report["summary"]) >= {"total_ratio_max_over_min_persons", "network_vs_conv_probe", "per_person_share"}
    assert "loadavg_start" in report["contention"] and report["memory_method"]


@pytest.mark.parametrize("flags,expected,note", [
    ({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"}, "AVX-512 + VNNI + BF16 + AMX",
     False),  # Sapphire Rapids
    ({"avx2", "avx512f", "avx512_vnni"}, "AVX-512 + VNNI", False),  # Ice Lake / Cascade Lake
    ({"avx2", "fma"}, "AVX2 (no VNNI)", True),  # AMD EPYC Zen 3
    ({"avx2", "avx_vnni"}, "AVX2 + VNNI", False),  # Alder Lake
    ({"sse4_2"}, "no AVX2", True),
])
def test_instruction_set_and_int8_note(flags, expected, note):
    """What ``fcpose bench`` says of the CPU: the instruction set, and the int8 note without VNNI or AMX."""
    from fcpose.cpu import instruction_set, int8_note

    assert instruction_set(flags) == expected
    assert (int8_note(flags) is not None) == note


def test_openvino_refuses_a_capped_onednn(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below the CPU's own instruction set crashes OpenVINO's CPU plugin (SIGSEGV in
    inference, OpenVINO 2026.4 on an AVX-512 Xeon with AVX2): fcpose says so in one line instead."""
    pytest.importorskip("openvino")
    from fcpose.cpu import cpu_info
    from fcpose.errors import FCPoseError
    from fcpose.export.openvino_predictor import require_openvino

    if "avx512f" not in cpu_info()[1]:
        pytest.skip("needs an AVX-512 CPU (to cap oneDNN below it)")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(FCPoseError, match="ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below this CPU's AVX-512"):
        require_openvino()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert require_openvino().__name__ == "openvino"


def test_bench_reference_path_and_auto_mode(tiny_checkpoint):
    report = run_bench(weights=str(tiny_checkpoint), size=96, max_size=128, persons=["auto", 4], runs=1, warmup=0,
                       optimize=False, probe=False, flops=False)
    assert not report["optimize"] and not report["channels_last"]
    auto, forced = report["results"]
    _check_entry(auto, "auto")
    _check_entry(forced, 4)
    assert forced["instances"] == 4 and auto["instances"] >= 0
    assert "conv_probe" not in report and "flops" not in report


def test_bench_bad_persons_is_a_user_error(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--persons", "1,x"])
    assert "--persons" in capsys.readouterr().err


def test_flop_counts(tiny_model):
    x = torch.randn(1, 3, 64, 96)
    flops = count_network_flops(tiny_model, x, torch.device("cpu"), "fp32")
    stem = 2 * 3 * 64 * 7 * 7 * 32 * 48  # the 7x7 stem alone
    assert flops > stem
    # Doubling the image area about doubles the FLOPs.
    twice = count_network_flops(tiny_model, torch.randn(1, 3, 128, 96), torch.device("cpu"), "fp32")
    assert 1.8 < twice / flops < 2.2
    per_person = head_flops_per_person(tiny_model, 8, 12)
    assert per_person == 2 * 64 * 2737 + 2 * 8 * 12 * (34 * 32 + 32 * 32 + 32 * 17)


def test_synthetic_image_resizes_to_the_test_size():
    from fcpose.data.transforms import resize_shape

    img = synthetic_image(800, 1333)
    assert img.dtype.name == "uint8" and resize_shape(*img.shape[:2], 800, 1333) == (800, 1333)
    cfg = fcpose.load_config("fcpose_dla34_rt")
    img = synthetic_image(cfg.input.min_size_test, cfg.input.max_size_test)
    assert resize_shape(*img.shape[:2], 512, 736) == (512, 736)


def forced_people(model, dense, params, num, per_person):
    """The benchmark's forced-N selection (stage 1) with ``params``."""
    return ForcedSelection(PostProcessor.from_model(model, params), num, per_person).select(dense)


@pytest.mark.parametrize("num,per_person", [(1, 20), (7, 20), (40, 0), (60, 1)])
def test_forced_selection_gives_exactly_n(tiny_model, num, per_person):
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 96, 128))
    params = TestConfig(score_threshold=0.99, nms_threshold=0.01)  # a threshold that would keep nothing
    inst = forced_people(tiny_model, dense, params, num, per_person)
    for image in range(2):
        assert int((inst.batch_index == image).sum()) == num
    with torch.no_grad():
        kpts = decode_people(tiny_model, dense, inst)
    assert kpts.shape == (2 * num, 17, 3)


def test_forced_selection_prefers_nms_survivors(tiny_model):
    with torch.no_grad():
        dense = tiny_model(torch.randn(1, 3, 96, 128))
    params = TestConfig(score_threshold=0.0, nms_threshold=0.6, max_detections=1000)
    normal = select_people(tiny_model, dense, params)
    forced = forced_people(tiny_model, dense, params, 5, 0)
    assert torch.equal(forced.positions, normal.positions[:5]) and torch.equal(forced.levels, normal.levels[:5])


@pytest.mark.parametrize("num,per_person", [(1, 20), (7, 20), (40, 0), (60, 1), (300, 20)])
def test_forced_selection_fixed_form_equals_dynamic(tiny_model, num, per_person):
    """The forced-N selection in the sync-free form (what the bench runs on CUDA) picks the same people."""
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 96, 128))
    forced = ForcedSelection(PostProcessor.from_model(tiny_model, TestConfig(nms_threshold=0.3)), num, per_person)
    sizes = [(96, 128)] * 2
    with torch.no_grad():
        dynamic = forced(tiny_model, dense, sizes)
        slots = forced.fixed(tiny_model, dense)
    assert bool(slots.exact.all())
    for a, b in zip(dynamic, forced.finish(slots, sizes)):
        assert len(a) == len(b) == min(num, 257)  # 257 candidates: 12x16 + 6x8 + 3x4 + 2x2 + 1x1
        assert torch.equal(a.locations, b.locations) and torch.equal(a.boxes, b.boxes)
        # the fixed form runs max_detections heads (a different GEMM size): scores may round differently
        torch.testing.assert_close(a.keypoints, b.keypoints, rtol=0, atol=1e-4)


def test_bench_batch_mode_reports_images_per_second(capsys):
    report = run_bench("fcpose_r18_tiny", size=64, max_size=96, persons=[2], runs=1, warmup=0, probe=False,
                       flops=False, batch=3, preprocess="device")
    (entry,) = report["results"]
    _check_entry(entry, 2)
    assert report["batch"] == 3 and report["preprocess"] == "device" and not report["sync_free"]
    assert entry["images_per_s"] == pytest.approx(3000 / entry["total_ms"]["median"], rel=1e-2)
    assert "img/s" in format_report(report)
    single = run_bench("fcpose_r18_tiny", size=64, max_size=96, persons=[2], runs=1, warmup=0, probe=False,
                       flops=False)
    assert single["batch"] == 1 and single["preprocess"] == "host" and "images_per_s" not in single["results"][0]
    table = format_report(single)
    assert "img/s" not in table and "graph" not in table and "batch" not in table  # the CPU table as before

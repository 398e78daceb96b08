"""Inference decoding: the streamed peaks equal the materialised heatmaps (forced-N selection: test_bench.py)."""

import pytest
import torch
from conftest import decode_people, make_lively, select_people
from helpers import decode_heatmap_peaks

import fcpose
from fcpose.config import TestConfig
from fcpose.targets.keypoints import decode_offsets, gather_offsets


def reference_keypoints(model, dense, inst):
    """The definition: materialise every instance's heatmaps (the training op), take the arg-max cell and
    its softmax probability (or logit), add the offset at that cell."""
    heat = model.instance_heatmaps(dense, inst).float()
    peak, score = decode_heatmap_peaks(heat, model.keypoint_score)
    offsets = gather_offsets(dense.kpt_offsets.float(), inst.batch_index, peak)
    xy = decode_offsets(peak, offsets, dense.kpt_feats.shape[-1], dense.strides[0], model.offset_unit)
    return torch.cat([xy, score[..., None]], dim=-1)


def assert_same_keypoints(got, ref, score_rtol=1e-4):
    """xy equal up to rounding (same peak cells), scores to ``score_rtol``."""
    assert got.shape == ref.shape
    torch.testing.assert_close(got[..., :2], ref[..., :2], rtol=0, atol=1e-3)
    torch.testing.assert_close(got[..., 2], ref[..., 2], rtol=score_rtol, atol=1e-6)


def _dense_and_instances(model, shape=(2, 3, 96, 160), n=9):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        dense = model(torch.randn(*shape, generator=gen))
    inst = select_people(model, dense, TestConfig(score_threshold=0.0, max_detections=n))
    return dense, inst


@pytest.mark.parametrize("overrides", [
    [],
    ["model.keypoint.offset_unit=pixel", "model.keypoint.score=logit"],
    ["model.keypoint.head_layers=1"],
    ["model.keypoint.head_layers=2", "model.keypoint.head_channels=16"],
    ["model.keypoint.head_layers=4"],
], ids=["paper", "pixel-logit", "1-layer", "2-layers-16ch", "4-layers"])
def test_streamed_peaks_equal_materialised_heatmaps(overrides):
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny", overrides))
    dense, inst = _dense_and_instances(model)
    assert len(inst) == 18
    with torch.no_grad():
        assert_same_keypoints(decode_people(model, dense, inst), reference_keypoints(model, dense, inst))


def test_tiling_does_not_change_results(tiny_model):
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 160, 224), n=5)
    with torch.no_grad():
        one_tile = decode_people(tiny_model, dense, inst, tile_bytes=1 << 30)
        many = decode_people(tiny_model, dense, inst, tile_bytes=1)  # 256-cell tiles, last one partial
    assert (160 // 8) * (224 // 8) % 256 != 0
    assert torch.equal(one_tile[..., :2], many[..., :2])
    torch.testing.assert_close(one_tile[..., 2], many[..., 2], rtol=1e-5, atol=0)


def test_softmax_score_is_exact_for_huge_logits(tiny_model):
    """Logits in the hundreds (where exp underflows) still give the peak's softmax probability."""
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 64, 96), n=3)
    dense.kpt_feats = dense.kpt_feats * 50
    with torch.no_grad():
        heat = tiny_model.instance_heatmaps(dense, inst).double().flatten(2)
        got = decode_people(tiny_model, dense, inst)
    assert heat.abs().max() > 100
    want = torch.softmax(heat, dim=2).max(dim=2).values.float()
    torch.testing.assert_close(got[..., 2], want, rtol=2e-4, atol=1e-7)


def test_empty_instances(tiny_model):
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 64, 64), n=0)
    inst = inst.index(torch.zeros(len(inst), dtype=torch.bool))
    assert decode_people(tiny_model, dense, inst).shape == (0, 17, 3)

"""The streamed fast decoder equals the reference decoder; forced-N selection for the benchmark."""

import pytest
import torch
from conftest import make_lively

import fcpose
from fcpose.inference.fast_decode import (
    decode_keypoints_fast,
    fast_decode_supported,
    postprocess_fast,
    select_forced,
)
from fcpose.postprocess import DetectionParams, decode_keypoints, postprocess, select_instances


def assert_same_keypoints(fast, ref, score_rtol=1e-4):
    """xy equal up to rounding (same peak cells), scores to ``score_rtol``."""
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast[..., :2], ref[..., :2], rtol=0, atol=1e-3)
    torch.testing.assert_close(fast[..., 2], ref[..., 2], rtol=score_rtol, atol=1e-6)


def _dense_and_instances(model, shape=(2, 3, 96, 160), n=9):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        dense = model(torch.randn(*shape, generator=gen))
    inst = select_instances(dense, DetectionParams(score_threshold=0.0, max_detections=n))
    return dense, inst


@pytest.mark.parametrize("overrides", [
    [],
    ["model.keypoint.offset_unit=pixel", "model.keypoint.score=logit"],
    ["model.keypoint.head_layers=1"],
    ["model.keypoint.head_layers=2", "model.keypoint.head_channels=16"],
    ["model.keypoint.head_layers=4"],
], ids=["paper", "pixel-logit", "1-layer", "2-layers-16ch", "4-layers"])
def test_fast_equals_reference(overrides):
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny", overrides))
    dense, inst = _dense_and_instances(model)
    assert len(inst) == 18 and fast_decode_supported(model)
    with torch.no_grad():
        ref = decode_keypoints(model, dense, inst)
        fast = decode_keypoints_fast(model, dense, inst)
    assert_same_keypoints(fast, ref)


def test_tiling_does_not_change_results(tiny_model):
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 160, 224), n=5)
    with torch.no_grad():
        one_tile = decode_keypoints_fast(tiny_model, dense, inst, tile_bytes=1 << 30)
        many = decode_keypoints_fast(tiny_model, dense, inst, tile_bytes=1)  # 256-cell tiles, last one partial
    assert (160 // 8) * (224 // 8) % 256 != 0
    assert torch.equal(one_tile[..., :2], many[..., :2])
    torch.testing.assert_close(one_tile[..., 2], many[..., 2], rtol=1e-5, atol=0)


def test_softmax_score_is_exact_for_huge_logits(tiny_model):
    """Logits in the hundreds (where exp underflows) still give the peak's softmax probability."""
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 64, 96), n=3)
    dense.kpt_feats = dense.kpt_feats * 50
    with torch.no_grad():
        heat = tiny_model.instance_heatmaps(dense, inst).double().flatten(2)
        fast = decode_keypoints_fast(tiny_model, dense, inst)
    assert heat.abs().max() > 100
    want = torch.softmax(heat, dim=2).max(dim=2).values.float()
    torch.testing.assert_close(fast[..., 2], want, rtol=2e-4, atol=1e-7)


def test_postprocess_fast_equals_postprocess(tiny_model):
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 128, 192))
        params = DetectionParams(score_threshold=0.05, max_detections=20)
        ref = postprocess(tiny_model, dense, [(128, 180), (120, 192)], [(256, 360), (60, 96)], params)
        fast = postprocess_fast(tiny_model, dense, [(128, 180), (120, 192)], [(256, 360), (60, 96)], params)
    for r, f in zip(ref, fast):
        assert len(r) == len(f) > 0 and r.image_size == f.image_size
        assert torch.equal(r.boxes, f.boxes) and torch.equal(r.scores, f.scores)
        assert_same_keypoints(f.keypoints, r.keypoints)


def test_empty_instances(tiny_model):
    dense, inst = _dense_and_instances(tiny_model, shape=(1, 3, 64, 64), n=0)
    inst = inst.index(torch.zeros(len(inst), dtype=torch.bool))
    assert decode_keypoints_fast(tiny_model, dense, inst).shape == (0, 17, 3)


def test_unknown_head_falls_back_to_reference(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    head = model.dynamic_head
    original = type(head).relative_coords

    class OtherCoords(type(head)):  # a head variant the fast path does not know: y before x
        def relative_coords(self, locations, norms, height, width):
            return original(self, locations, norms, height, width).flip(1)

    head.__class__ = OtherCoords
    model.__dict__.pop("_fcpose_fast_decode_ok", None)  # the copy inherits the cached verdict
    with pytest.warns(RuntimeWarning, match="reference decoder"):
        assert not fast_decode_supported(model)
    with torch.no_grad():
        dense = model(torch.randn(1, 3, 96, 96))
        params = DetectionParams(score_threshold=0.0, max_detections=4)
        ref = postprocess(model, dense, [(96, 96)], None, params)[0]
        fast = postprocess_fast(model, dense, [(96, 96)], None, params)[0]
    assert torch.equal(ref.keypoints, fast.keypoints)


@pytest.mark.parametrize("num,per_person", [(1, 20), (7, 20), (40, 0), (60, 1)])
def test_forced_selection_gives_exactly_n(tiny_model, num, per_person):
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 96, 128))
    params = DetectionParams(score_threshold=0.99, nms_threshold=0.01)  # a threshold that would keep nothing
    inst, scale = select_forced(dense, params, num, per_person, [(96, 120), (90, 128)], [(192, 240), (90, 128)])
    for image in range(2):
        assert int((inst.batch_index == image).sum()) == num
    assert scale.shape == (2 * num, 2)
    assert (inst.boxes[:, 2] <= 240).all() and (inst.boxes[:, 3] <= 192).all()
    with torch.no_grad():
        kpts = decode_keypoints_fast(tiny_model, dense, inst)
    assert kpts.shape == (2 * num, 17, 3)


def test_forced_selection_prefers_nms_survivors(tiny_model):
    with torch.no_grad():
        dense = tiny_model(torch.randn(1, 3, 96, 128))
    params = DetectionParams(score_threshold=0.0, nms_threshold=0.6, max_detections=1000)
    normal = select_instances(dense, params)
    forced, _ = select_forced(dense, params, 5, candidates_per_person=0)
    assert torch.equal(forced.positions, normal.positions[:5]) and torch.equal(forced.levels, normal.levels[:5])

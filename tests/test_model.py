import pytest
import torch
import torch.nn.functional as F
from conftest import decode_people, select_people

import fcpose
from fcpose.config import TestConfig, load_config
from fcpose.postprocess import PostProcessor
from fcpose.structures import Instances
from fcpose.targets.locations import positions_to_locations


@pytest.mark.parametrize("preset", ["fcpose_r50_fpn", "fcpose_r101_fpn", "fcpose_dla34_rt", "fcpose_r18_tiny"])
def test_controller_outputs_equal_dynamic_parameter_count(preset):
    cfg = load_config(preset)
    model = fcpose.build_model(preset)
    assert cfg.num_dynamic_params == 2737
    assert model.head.controller.out_channels == 2737 == model.dynamic_head.num_params
    assert model.head.controller.kernel_size == (1, 1)
    assert model.strides == cfg.model.strides


def test_controller_follows_keypoint_count_and_width():
    model = fcpose.build_model("fcpose_r18_tiny", ["model.keypoint.head_channels=16"])
    assert model.head.controller.out_channels == (34 * 16 + 16) + (16 * 16 + 16) + (16 * 17 + 17)
    cfg = load_config("fcpose_r18_tiny")
    cfg.keypoints.names = ["a", "b", "c", "d", "e"]
    cfg.keypoints.sigmas = [0.05] * 5
    cfg.keypoints.skeleton, cfg.keypoints.flip_pairs = [[0, 1]], [[1, 2]]
    model = fcpose.build_model(cfg)
    assert model.head.controller.out_channels == (34 * 32 + 32) + (32 * 32 + 32) + (32 * 5 + 5)
    assert model.keypoint_branch.refine.out_channels == 10


@pytest.mark.parametrize("preset,levels", [("fcpose_r18_tiny", 5), ("fcpose_dla34_rt", 3)])
def test_output_shapes_per_level(preset, levels):
    model = fcpose.build_model(preset).eval()
    h, w = 96, 160
    with torch.no_grad():
        dense = model(torch.randn(2, 3, h, w))
    assert dense.num_levels == levels and dense.strides == [8, 16, 32, 64, 128][:levels]
    c = model.fpn.out_channels
    for lv, s in enumerate(dense.strides):
        size = (-(-h // s), -(-w // s))
        assert dense.cls_logits[lv].shape == (2, 1, *size)
        assert dense.box_reg[lv].shape == (2, 4, *size)
        assert dense.centerness[lv].shape == (2, 1, *size)
        assert dense.ctrl_feats[lv].shape == (2, c, *size)
        assert (dense.box_reg[lv] >= 0).all()
    assert dense.kpt_feats.shape == (2, 32, h // 8, w // 8)
    assert dense.kpt_offsets.shape == (2, 34, h // 8, w // 8)


@pytest.mark.parametrize("kernel", [1, 3])
def test_sparse_controller_equals_dense_conv(kernel):
    model = fcpose.build_model("fcpose_r18_tiny", [f"model.keypoint.controller_kernel={kernel}"]).eval()
    with torch.no_grad():
        model.head.controller.weight.normal_(0, 0.05)
        model.head.controller.bias.normal_(0, 0.05)
        dense = model(torch.randn(2, 3, 64, 96))
        gen = torch.Generator().manual_seed(0)
        n = 12
        levels = torch.randint(0, dense.num_levels, (n,), generator=gen)
        batch = torch.randint(0, 2, (n,), generator=gen)
        rows = torch.stack([torch.randint(0, dense.cls_logits[lv].shape[2], (1,), generator=gen)[0] for lv in levels])
        cols = torch.stack([torch.randint(0, dense.cls_logits[lv].shape[3], (1,), generator=gen)[0] for lv in levels])
        rows[0], cols[0], levels[0] = 0, 0, 0  # corner: the 3x3 neighbourhood reaches beyond the map
        pos = torch.stack([rows, cols], dim=1)
        inst = Instances(batch, levels, pos, positions_to_locations(pos, torch.tensor(dense.strides)[levels]))
        sparse = model.instance_params(dense, inst)
        for i in range(n):
            full = model.head.controller(dense.ctrl_feats[int(levels[i])])  # dense conv, zero padding
            want = full[batch[i], :, rows[i], cols[i]]
            torch.testing.assert_close(sparse[i], want, rtol=1e-4, atol=1e-5)


def test_no_detections_gives_empty_results(tiny_model):
    with torch.no_grad():
        dense = tiny_model(torch.randn(1, 3, 64, 64))
    params = TestConfig(score_threshold=1.1)
    assert len(select_people(tiny_model, dense, params)) == 0
    (dets,) = PostProcessor.from_model(tiny_model, params)(tiny_model, dense, [(64, 60)], [(128, 120)])
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.keypoints.shape == (0, 17, 3) and dets.scores.shape == (0,)
    assert dets.to_coco(image_id=1) == []


def test_postprocess_selection_rules(tiny_model):
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 128, 192))
    inst = select_people(tiny_model, dense, TestConfig(score_threshold=0.0, max_detections=7, nms_threshold=0.6))
    for image in range(2):
        sel = inst.batch_index == image
        assert sel.sum() == 7
        scores = inst.scores[sel]
        assert torch.all(scores[:-1] >= scores[1:])  # decreasing within an image
        # After NMS no two kept boxes overlap more than the threshold.
        from fcpose.ops.boxes import box_iou

        iou = box_iou(inst.boxes[sel], inst.boxes[sel])
        assert (iou.triu(1) <= 0.6).all()
    # Location and position agree with the level's stride.
    strides = torch.tensor(dense.strides)[inst.levels]
    torch.testing.assert_close(inst.locations, positions_to_locations(inst.positions, strides))
    # Score = sqrt(cls * ctr) read back from the dense maps.
    for i in range(len(inst)):
        lv, b, (r, c) = int(inst.levels[i]), int(inst.batch_index[i]), inst.positions[i].tolist()
        cls = torch.sigmoid(dense.cls_logits[lv][b, 0, r, c])
        ctr = torch.sigmoid(dense.centerness[lv][b, 0, r, c])
        assert torch.isclose(inst.scores[i], torch.sqrt(cls * ctr), rtol=1e-5)


def test_keypoints_are_peak_plus_offset(tiny_model):
    """The decoded keypoint equals the arg-max cell of the instance's own heatmap plus the offset there."""
    with torch.no_grad():
        dense = tiny_model(torch.randn(1, 3, 96, 128))
        inst = select_people(tiny_model, dense, TestConfig(score_threshold=0.0, max_detections=5))
        kpts = decode_people(tiny_model, dense, inst, tile_bytes=1)  # many small tiles
        heat = tiny_model.instance_heatmaps(dense, inst)
    w = heat.shape[-1]
    for n in range(len(inst)):
        for k in range(17):
            flat = heat[n, k].reshape(-1)
            idx = int(flat.argmax())
            r, c = divmod(idx, w)
            dx = float(dense.kpt_offsets[0, 2 * k, r, c]) * 8
            dy = float(dense.kpt_offsets[0, 2 * k + 1, r, c]) * 8
            assert kpts[n, k, 0].item() == pytest.approx(c * 8 + 4 + dx, abs=1e-4)
            assert kpts[n, k, 1].item() == pytest.approx(r * 8 + 4 + dy, abs=1e-4)
            assert kpts[n, k, 2].item() == pytest.approx(float(F.softmax(flat, 0).max()), rel=1e-4)


def _lively_inputs():
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(0, 256, (200 + 17 * i, 260 - 9 * i, 3), generator=gen, dtype=torch.uint8).numpy()
            for i in range(3)]


def test_batch_of_two_equals_two_batches_of_one(tiny_model):
    images = _lively_inputs()
    single = fcpose.Predictor(tiny_model, score_threshold=0.0, batch_size=1)
    batched = fcpose.Predictor(tiny_model, score_threshold=0.0, batch_size=4)
    ones = [single(im) for im in images]
    together = batched.predict(images)
    for a, b in zip(ones, together):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.boxes, b.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.keypoints[..., :2], b.keypoints[..., :2], rtol=1e-4, atol=1e-3)


def test_raw_batch_of_two_equals_single_runs(tiny_model):
    x = torch.randn(2, 3, 96, 128) * 50
    params = TestConfig(score_threshold=0.0)
    with torch.no_grad():
        post = PostProcessor.from_model(tiny_model, params)
        both = post(tiny_model, tiny_model(x), [(96, 128)] * 2)
        each = [post(tiny_model, tiny_model(x[i:i + 1]), [(96, 128)])[0] for i in range(2)]
    for a, b in zip(each, both):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.boxes, b.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a.keypoints, b.keypoints, rtol=1e-4, atol=1e-2)  # pixels


@pytest.mark.parametrize("hw", [(97, 131), (33, 500), (401, 57), (1, 1)])
def test_odd_image_sizes(tiny_model, hw):
    image = torch.randint(0, 256, (*hw, 3), dtype=torch.uint8).numpy()
    predictor = fcpose.Predictor(tiny_model, score_threshold=0.0)
    dets = predictor(image)
    assert dets.image_size == hw
    assert len(dets) > 0
    assert (dets.boxes[:, 0::2] >= 0).all() and (dets.boxes[:, 0::2] <= hw[1]).all()
    assert (dets.boxes[:, 1::2] >= 0).all() and (dets.boxes[:, 1::2] <= hw[0]).all()
    assert ((dets.boxes[:, 2] - dets.boxes[:, 0]) > 0).all()
    assert torch.isfinite(dets.keypoints).all()


@pytest.mark.parametrize("refine_input", ["p3", "tower"])
def test_refinement_reads_p3_or_the_branch_tower(refine_input):
    cfg = load_config("fcpose_r18_tiny", [f"model.keypoint.refine_input={refine_input}"])
    model = fcpose.build_model(cfg).eval()
    branch = model.keypoint_branch
    expected_in = cfg.model.fpn.channels if refine_input == "p3" else cfg.model.keypoint.branch_channels
    assert branch.refine.in_channels == expected_in
    assert branch.refine.out_channels == 2 * cfg.num_keypoints
    with torch.no_grad():
        dense = model(torch.zeros(1, 3, 96, 128))
    assert dense.kpt_offsets.shape == (1, 34, 12, 16)


def test_a_model_built_from_parts_needs_no_config(tiny_model):
    """FCPose without a config object: the Predictor and the post-processor take what they need from the model
    (decoding conventions) and the defaults (test sizes, test parameters)."""
    import copy

    import numpy as np

    from fcpose.config import InputConfig

    parts = copy.deepcopy(tiny_model)
    parts.cfg = None
    bare = fcpose.Predictor(parts, score_threshold=0.0)
    assert (bare.min_size, bare.max_size) == (InputConfig().min_size_test, InputConfig().max_size_test)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    small = fcpose.Predictor(parts, min_size=96, max_size=128, score_threshold=0.0)
    ref = fcpose.Predictor(tiny_model, min_size=96, max_size=128, score_threshold=0.0)
    got, want = small(image), ref(image)
    assert len(got) == len(want) > 0
    torch.testing.assert_close(got.keypoints, want.keypoints)

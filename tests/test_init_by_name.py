"""Fine-tuning to another keypoint set by name (``fcpose train --init``): the keypoints both sets name keep the
source model's outputs exactly, the others start fresh, and the report says which is which."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import decode_people, make_lively, select_people

import fcpose
from fcpose.assets import SCENE, asset
from fcpose.cli import main
from fcpose.config import COCO_KEYPOINT_NAMES
from fcpose.data.images import read_image
from fcpose.postprocess import PostProcessor
from fcpose.weights.checkpoint import init_from_checkpoint, read_checkpoint

# A CrowdPose-like set (written here: the built-in CrowdPose set is not this test's subject): COCO's 12 body
# keypoints in another order (shifted by the 5 face ones it lacks), then two keypoints COCO does not have.
NAMES = COCO_KEYPOINT_NAMES[5:] + ["head", "neck"]
SHARED = [(NAMES.index(n), COCO_KEYPOINT_NAMES.index(n)) for n in COCO_KEYPOINT_NAMES[5:]]  # (target, source)
SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079]
FLIP_PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
KEYPOINTS = [f"keypoints.names={json.dumps(NAMES)}", f"keypoints.sigmas={SIGMAS}",
             f"keypoints.flip_pairs={FLIP_PAIRS}", "keypoints.skeleton=[[12, 13], [13, 0], [13, 1]]"]
VARIANTS = {"paper": "fcpose_r18_tiny", "official": "overfit_tiny_official"}  # the official one has aux heads


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def source(request, tmp_path_factory):
    """A lively COCO-keypoint model of each variant, saved."""
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model(VARIANTS[request.param]))
    path = tmp_path_factory.mktemp("src") / "coco.pt"
    fcpose.save_checkpoint(model, path)
    return request.param, model, path


def _target(variant: str, seed: int = 7):
    torch.manual_seed(seed)
    return fcpose.build_model(VARIANTS[variant], KEYPOINTS).eval()


def _image() -> torch.Tensor:
    return torch.from_numpy(read_image(asset(SCENE))[:160, :224].copy()).permute(2, 0, 1).float()[None]


@torch.no_grad()
def test_shared_keypoints_keep_the_source_outputs(source):
    variant, src, path = source
    model = _target(variant)
    report = init_from_checkpoint(model, path)
    t, s = (torch.tensor(i) for i in zip(*SHARED))
    images = src.normalize(_image())
    a, b = src(images), model(images)
    for name in ("cls_logits", "box_reg", "centerness", "kpt_feats"):
        for x, y in zip(getattr(a, name), getattr(b, name)) if isinstance(getattr(a, name), list) else \
                [(getattr(a, name), getattr(b, name))]:
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
    offsets_a, offsets_b = a.kpt_offsets.unflatten(1, (17, 2)), b.kpt_offsets.unflatten(1, (14, 2))
    torch.testing.assert_close(offsets_b[:, t], offsets_a[:, s], rtol=1e-5, atol=1e-5)
    people = select_people(src, a)
    assert len(people.scores) > 0
    heat_a, heat_b = src.instance_heatmaps(a, people), model.instance_heatmaps(b, people)
    torch.testing.assert_close(heat_b[:, t], heat_a[:, s], rtol=1e-5, atol=1e-4)
    decoded_a, decoded_b = decode_people(src, a, people), decode_people(model, b, people)
    torch.testing.assert_close(decoded_b[:, t], decoded_a[:, s], rtol=1e-5, atol=1e-3)
    # The whole post-processing: the same people, the shared keypoints where the source model puts them.
    pred_a, pred_b = (PostProcessor.from_model(m)(m, d, [images.shape[-2:]])[0] for m, d in ((src, a), (model, b)))
    assert len(pred_a.scores) > 0
    torch.testing.assert_close(pred_b.boxes, pred_a.boxes)
    torch.testing.assert_close(pred_b.keypoints[:, t], pred_a.keypoints[:, s], rtol=1e-5, atol=1e-3)
    assert report.keypoints.copied == NAMES[:12] and report.keypoints.new == ["head", "neck"]
    assert report.keypoints.unused == COCO_KEYPOINT_NAMES[:5]
    lines = report.lines()
    assert lines[1].startswith("init: copied 12 keypoints by name: left_shoulder, right_shoulder,")
    assert lines[1].endswith("(not used: nose, left_eye, right_eye, left_ear, right_ear)")
    assert lines[2] == "init: new keypoints: head, neck (initialised as in a fresh model)"
    assert not report.reinitialized  # every tensor came from the file, the keypoint ones channel by channel
    if variant == "official":  # its auxiliary heads (training only): the stride-8 heatmaps (not the stride-2 ones,
        # whose upsampler mixes every keypoint's stride-8 map)
        aux_a, aux_b = (copy.deepcopy(m).train()(images).aux_heatmaps for m in (src, model))
        torch.testing.assert_close(aux_b["p3"][:, t], aux_a["p3"][:, s], rtol=1e-5, atol=1e-5)


def test_new_keypoints_start_fresh_and_shared_ones_are_copied(source):
    variant, src, path = source
    model, fresh = _target(variant), _target(variant)
    init_from_checkpoint(model, path)
    own, new, old = model.state_dict(), fresh.state_dict(), read_checkpoint(path)["model"]
    layout, src_layout = model.keypoint_channels(), src.keypoint_channels()
    expected = {"head.controller.weight", "head.controller.bias"} | (
        {"keypoint_branch.refine.weight"} if variant == "paper" else
        {"keypoint_branch.tower.2.weight", "keypoint_branch.p3_logits.weight", "keypoint_branch.p1_logits.weight",
         "keypoint_branch.upsampler.0.weight"})
    assert expected <= set(layout)
    for key, (dim, owner) in layout.items():
        src_owner = src_layout[key][1]
        for k in (12, 13):  # head, neck: the fresh model's values
            assert torch.equal(own[key].index_select(dim, (owner == k).nonzero()[:, 0]),
                               new[key].index_select(dim, (owner == k).nonzero()[:, 0])), key
        for k, j in SHARED:
            assert torch.equal(own[key].index_select(dim, (owner == k).nonzero()[:, 0]),
                               old[key].index_select(dim, (src_owner == j).nonzero()[:, 0])), key
        assert torch.equal(own[key].index_select(dim, (owner < 0).nonzero()[:, 0]),
                           old[key].index_select(dim, (src_owner < 0).nonzero()[:, 0])), key
    for key in set(own) - set(layout):
        assert torch.equal(own[key], old[key]), key


def test_same_keypoint_set_copies_everything_and_no_shared_name_copies_no_keypoint(tiny_checkpoint, tiny_model):
    torch.manual_seed(3)
    model = fcpose.build_model("fcpose_r18_tiny")
    report = init_from_checkpoint(model, tiny_checkpoint)
    assert report.keypoints is None and report.lines() == [report.summary()] and not report.reinitialized
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in model.state_dict().items())
    names = ["keypoints.names=[a, b, c]", "keypoints.sigmas=[0.1, 0.1, 0.1]", "keypoints.skeleton=[]",
             "keypoints.flip_pairs=[]"]
    torch.manual_seed(4)
    other = fcpose.build_model("fcpose_r18_tiny", names)
    fresh = {k: v.clone() for k, v in other.state_dict().items()}
    report = init_from_checkpoint(other, tiny_checkpoint)  # the backbone and towers still load; no keypoint does
    assert report.keypoints.copied == [] and report.keypoints.new == ["a", "b", "c"]
    assert report.lines()[-1].startswith("init: no keypoint name in common with the checkpoint's (nose, left_eye, ")
    layout, src_layout, old = other.keypoint_channels(3), other.keypoint_channels(17), tiny_model.state_dict()
    for key, value in other.state_dict().items():
        if key not in layout:
            assert torch.equal(value, old[key]), key
            continue
        dim, owner = layout[key]
        keypoint, shared = (owner >= 0).nonzero()[:, 0], (owner < 0).nonzero()[:, 0]
        assert torch.equal(value.index_select(dim, keypoint), fresh[key].index_select(dim, keypoint)), key
        assert torch.equal(value.index_select(dim, shared),
                           old[key].index_select(dim, (src_layout[key][1] < 0).nonzero()[:, 0])), key


def test_train_init_by_name_prints_both_lines_and_keeps_the_new_sets_sigmas(tiny_checkpoint, tmp_path, capsys):
    """``fcpose train --init`` on a dataset of the CrowdPose-like set: the report, and the new set's flip pairs and
    sigmas in the trained model's config."""
    assert main(["synth", "--out", str(tmp_path / "synth"), "--num", "2", "--seed", "5", "--max-people", "2",
                 "--height", "160", "--width", "192"]) == 0
    data = json.loads((tmp_path / "synth" / "annotations.json").read_text())
    cat = next(c for c in data["categories"] if c.get("name") == "person")
    cat.update(keypoints=NAMES, sigmas=SIGMAS, flip_pairs=FLIP_PAIRS, skeleton=[[13, 14], [14, 1], [14, 2]])
    for ann in data["annotations"]:
        kp = ann.get("keypoints") or [0] * 51
        body = kp[15:]
        head = kp[0:3]  # the nose stands in for the head; the neck is unlabelled
        ann["keypoints"] = body + head + [0, 0, 0]
        ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    ann_file = tmp_path / "k14.json"
    ann_file.write_text(json.dumps(data))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["train", "--config", "fcpose_r18_tiny", "--data", str(ann_file), "--images",
                 str(tmp_path / "synth" / "images"), "--output", str(out), "--init", str(tiny_checkpoint),
                 "--max-iter", "1", "--batch-size", "2", "--num-workers", "0", "--no-progress",
                 "--set", "input.min_size_train=[128, 128]", "--set", "input.max_size_train=192",
                 "--set", "solver.checkpoint_period=0"]) == 0
    err = capsys.readouterr().err
    assert "init: copied 12 keypoints by name: left_shoulder" in err
    assert "init: new keypoints: head, neck (initialised as in a fresh model)" in err
    cfg = read_checkpoint(out / "model_final.pt")["config"]["keypoints"]
    assert cfg["names"] == NAMES and cfg["sigmas"] == SIGMAS and cfg["flip_pairs"] == FLIP_PAIRS

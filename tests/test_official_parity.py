"""Parity with the official AdelaiDet FCPose code (golden outputs computed by running it, see NOTES.md).

The golden checkpoint goes through our converter; then every golden image at both test sizes must give the
official detections: the same people (matched by their generating FCOS location), boxes and keypoints,
detection scores and keypoint scores (raw logits, up to ~5e4 here, relative to the larger of 1 and the
instance's largest keypoint logit) within the measured tolerances below. Instances whose scores tie may come
out in another order, so they are matched by location, not by position in the list.

Intermediate tensors are compared with a relative measure suited to large activations (the golden backbone
is random, P6/P7 reach 1.6e5): ``max|ours - official| / max|official|`` per tensor, at most ``REL_TOL``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import decode_people, select_people

from fcpose.cli import main
from fcpose.data.images import read_image
from fcpose.inference.predictor import Predictor
from fcpose.structures import Instances
from fcpose.weights.checkpoint import load_model

CKPT = "model_r50_fp16.pth"
# Tolerances: 3x the largest deviation from the golden outputs seen (on a Xeon with AVX-512 + VNNI, PyTorch's
# kernels as is, under ATEN_CPU_CAPABILITY=default and under avx2 + ONEDNN_MAX_CPU_ISA=AVX2; docs/parity.md).
# A real error lands far above: a location grid one pixel off changes the people (their generating
# locations, compared exactly), a swapped flip pair moves keypoints by tens of pixels.
PX_TOL = 4.6e-4  # boxes and keypoints, px: seen 1.5e-4 (a box corner near 1,000 px: about 2 float32 ulps)
SCORE_TOL = 4.3e-5  # detection scores (seen 3.0e-6) and keypoint logits relative to max(1, |logit|) (seen 1.4e-5)
REL_TOL = 3.2e-5  # intermediates: seen 1.1e-5; floor 1.2e-5 (golden 5.2e-6 + ours 6.6e-6 against float64)
JSON_PX, JSON_SCORE = 1e-3, 5e-4  # predictions.json rounds coordinates and keypoint scores to 3 decimals


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|ours - ref| / max|ref|`` over the whole tensor."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max().clamp(min=1e-12))


@pytest.fixture(scope="module")
def model(golden):
    return load_model(golden / CKPT)


@pytest.fixture(scope="module")
def outputs(golden):
    return {r["min_size_test"]: r["images"] for r in json.loads((golden / "outputs_r50.json").read_text())["results"]}


@pytest.fixture(scope="module")
def images(coco_tiny):
    return {p.name: read_image(p) for p in sorted(coco_tiny.glob("*.jpg"))}


_SINGLE: dict = {}


def predict_single(model, image_name: str, image, size: int):
    """One image alone in its batch at short side ``size`` (cached: the batch test reuses these runs)."""
    key = (id(model), image_name, size)
    if key not in _SINGLE:
        _SINGLE[key] = Predictor(model, min_size=size, max_size=1333, batch_size=1)(image)
    return _SINGLE[key]


def compare(dets, gold: dict) -> dict[str, float]:
    """Check one image's detections against the official ones; returns the largest deviations."""
    inst = gold["instances"]
    assert len(dets) == gold["num_instances"] == len(inst["scores"])
    ours = {(int(lv), float(x), float(y)): i
            for i, (lv, (x, y)) in enumerate(zip(dets.levels.tolist(), dets.locations.tolist()))}
    theirs = [(int(lv), float(x), float(y)) for lv, (x, y) in zip(inst["fpn_levels"], inst["locations"])]
    assert sorted(ours) == sorted(theirs), "different people (generating locations) than the official code"
    idx = [ours[k] for k in theirs]
    boxes, scores, kpts = dets.boxes[idx].double(), dets.scores[idx].double(), dets.keypoints[idx].double()
    g_boxes = torch.tensor(inst["pred_boxes"], dtype=torch.float64)
    g_scores = torch.tensor(inst["scores"], dtype=torch.float64)
    g_kpts = torch.tensor(inst["pred_keypoints"], dtype=torch.float64)
    dev = {"box": (boxes - g_boxes).abs().max().item(), "score": (scores - g_scores).abs().max().item(),
           "kpt": (kpts[..., :2] - g_kpts[..., :2]).abs().max().item()}
    scale = g_kpts[..., 2].abs().amax(1, keepdim=True).clamp(min=1.0)
    dev["kpt_score_rel"] = ((kpts[..., 2] - g_kpts[..., 2]).abs() / scale).max().item()
    assert dev["box"] <= PX_TOL and dev["kpt"] <= PX_TOL, dev
    assert dev["score"] <= SCORE_TOL and dev["kpt_score_rel"] <= SCORE_TOL, dev
    return dev


@pytest.mark.parametrize("size", [512, 800])
def test_outputs_match_official(model, outputs, images, golden, size):
    predictor = Predictor(model, min_size=size, max_size=1333, batch_size=1)
    inputs = torch.load(golden / "inputs_uint8_bgr_r50.pt", weights_only=True)
    for gold in outputs[size]:
        image = images[gold["file_name"]]
        # Same resized input as detectron2 (PIL bilinear on uint8): rules out decode/resize differences.
        tensor, (h, w) = predictor.prepare(image)
        assert (h, w) == (gold["resized_height"], gold["resized_width"])
        ref = inputs[f"{size}/{gold['file_name']}"]
        assert torch.equal(tensor, model.normalize(ref.flip(0).float()))
        dev = compare(predict_single(model, gold["file_name"], image, size), gold)
        print(f"{size} {gold['file_name']}: {len(gold['instances']['scores'])} people, max dev {dev}")


def test_batch_gives_single_image_results(model, outputs, images):
    # 000000000785 (771 x 512) and 000000040083 (769 x 512) share the padded size 800 x 512.
    names = ["000000000785.jpg", "000000040083.jpg"]
    predictor = Predictor(model, min_size=512, max_size=1333, batch_size=2)
    batched = predictor.predict([images[n] for n in names])
    single = [predict_single(model, n, images[n], 512) for n in names]
    gold = {g["file_name"]: g for g in outputs[512]}
    for name, b, s in zip(names, batched, single):
        assert torch.equal(b.levels, s.levels) and torch.equal(b.locations, s.locations)
        for field in ("boxes", "scores", "keypoints"):
            a, c = getattr(b, field), getattr(s, field)
            assert torch.allclose(a, c, rtol=1e-5, atol=1e-4), (name, field, (a - c).abs().max())
        compare(b, gold[name])


def intermediate_pairs(model, d: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every compared intermediate as ``name -> (ours, official)``, ours computed in the model's dtype
    (``benchmarks/parity_noise.py`` runs this in float64 too). Also ``"argmax"``: the heatmap argmax cells."""
    bgr = d["image_uint8_bgr"].float()
    x = model.normalize(bgr.flip(0))  # normalize() takes RGB and flips to BGR itself
    ph, pw = d["meta"]["padded_hw"]
    x = F.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2]))[None]
    pairs = {"input": (x, d["input_tensor"])}
    with torch.no_grad():
        feats = model.fpn(model.backbone(x))
        dense = model(x)
    for i, name in enumerate(["p3", "p4", "p5", "p6", "p7"]):
        pairs[f"features.{name}"] = (feats[i], d["features"][name])
    fcos = d["fcos_head"]
    for lv, stride in enumerate(model.strides):
        pairs[f"logits.{lv}"] = (dense.cls_logits[lv], fcos["logits"][lv])
        pairs[f"ctrness.{lv}"] = (dense.centerness[lv], fcos["ctrness"][lv])
        pairs[f"bbox_reg.{lv}"] = (dense.box_reg[lv] / stride, fcos["bbox_reg"][lv])
        pairs[f"bbox_tower.{lv}"] = (dense.ctrl_feats[lv], fcos["bbox_tower"][lv])
    pairs["bases"] = (dense.kpt_feats, d["bases"][:, :32])
    pairs["offsets"] = (dense.kpt_offsets, d["bases"][:, 32:])

    # Proposals (resized-image coordinates, before rescaling): same set, same boxes and scores.
    props = d["proposals_before_postprocess"]
    inst = select_people(model, dense)
    ours = {(int(lv), float(x), float(y)): i
            for i, (lv, (x, y)) in enumerate(zip(inst.levels.tolist(), inst.locations.tolist()))}
    keys = [(int(lv), float(x), float(y)) for lv, (x, y) in zip(props["fpn_levels"].tolist(),
                                                                 props["locations"].tolist())]
    assert sorted(ours) == sorted(keys)
    idx = torch.tensor([ours[k] for k in keys])
    pairs["proposals.boxes"] = (inst.boxes[idx], props["pred_boxes"])
    pairs["proposals.scores"] = (inst.scores[idx], props["scores"])

    # Controller and dynamic head on the official proposals, in their order.
    strides = torch.tensor(model.strides)[props["fpn_levels"]]
    loc = props["locations"].long()
    positions = torch.stack([(loc[:, 1] - strides // 2) // strides, (loc[:, 0] - strides // 2) // strides], 1)
    dtype = dense.kpt_feats.dtype
    official = Instances(batch_index=torch.zeros(len(keys), dtype=torch.long), levels=props["fpn_levels"],
                         positions=positions, locations=props["locations"].to(dtype),
                         boxes=props["pred_boxes"].to(dtype), scores=props["scores"].to(dtype))
    with torch.no_grad():
        attn_input = model.head.controller_inputs(dense.ctrl_feats, official.batch_index, official.levels,
                                                  official.positions)
        params = model.head.controller_params(attn_input)
        heatmaps = model.instance_heatmaps(dense, official.index(slice(0, 8)))
        keypoints = decode_people(model, dense, official)
        argmax = torch.cat([model.instance_heatmaps(dense, official.index(slice(s, s + 25))).flatten(2).argmax(2)
                            for s in range(0, len(official), 25)])
    pairs["attn_input"] = (attn_input, d["attn_input"])
    pairs["attn_params"] = (params, d["attn_params"])
    pairs["keypoint_heatmap_logits"] = (heatmaps, d["keypoint_heatmap_logits"])
    pairs["pred_keypoints.xy"] = (keypoints[..., :2], props["pred_keypoints"][..., :2])
    pairs["pred_keypoints.score"] = (keypoints[..., 2], props["pred_keypoints"][..., 2])
    pairs["argmax"] = (argmax, d["keypoint_argmax_index"])
    return pairs


def test_intermediates_match_official(model, golden):
    d = torch.load(golden / "intermediates_r50.pt", weights_only=True)
    pairs = intermediate_pairs(model, d)
    assert torch.equal(*pairs.pop("input"))
    assert torch.equal(*pairs.pop("argmax"))
    errors = {name: rel_err(ours, ref) for name, (ours, ref) in pairs.items()}
    worst = max(errors, key=errors.get)
    print(f"intermediates: worst {worst} = {errors[worst]:.3g}; " +
          ", ".join(f"{k} {v:.2g}" for k, v in errors.items()))
    assert all(v <= REL_TOL for v in errors.values()), {k: v for k, v in errors.items() if v > REL_TOL}


def _cli_parity(golden, coco_tiny, outputs, tmp_path, size):
    out = tmp_path / f"out{size}"
    args = ["predict", str(coco_tiny), "--weights", str(golden / CKPT), "--out", str(out), "--no-render",
            "--no-progress", "--annotations", str(coco_tiny / "person_keypoints.json")]
    if size != 800:
        args += ["--size", str(size)]
    assert main(args) == 0
    preds = json.loads((out / "predictions.json").read_text())
    for gold in outputs[size]:
        mine = [p for p in preds if p["image_id"] == gold["image_id"]]
        inst = gold["instances"]
        assert len(mine) == gold["num_instances"]
        g_boxes = np.asarray(inst["pred_boxes"])
        # predictions.json: bbox xywh, keypoints in COCO's pixel-index convention (x, y - 0.5).
        o_boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in mine)])
        o_scores = np.asarray([p["score"] for p in mine])
        o_kpts = np.asarray([p["keypoints"] for p in mine]).reshape(len(mine), -1, 3)
        o_kpts[..., :2] += 0.5
        free = set(range(len(mine)))
        for i in range(len(g_boxes)):
            # Match by box (scores may tie, so the order can differ).
            j = min(free, key=lambda k: np.abs(o_boxes[k] - g_boxes[i]).max())
            free.remove(j)
            assert np.abs(o_boxes[j] - g_boxes[i]).max() <= PX_TOL + JSON_PX
            assert abs(o_scores[j] - inst["scores"][i]) <= SCORE_TOL
            g_k = np.asarray(inst["pred_keypoints"][i])
            assert np.abs(o_kpts[j, :, :2] - g_k[:, :2]).max() <= PX_TOL + JSON_PX
            scale = max(1.0, np.abs(g_k[:, 2]).max())
            assert np.abs(o_kpts[j, :, 2] - g_k[:, 2]).max() <= (SCORE_TOL + JSON_SCORE) * scale


def test_cli_predict_matches_official_512(golden, coco_tiny, outputs, tmp_path):
    _cli_parity(golden, coco_tiny, outputs, tmp_path, 512)


@pytest.mark.slow
def test_cli_predict_matches_official_800(golden, coco_tiny, outputs, tmp_path):
    _cli_parity(golden, coco_tiny, outputs, tmp_path, 800)

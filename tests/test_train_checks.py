"""Training traps turned into notes (fcpose/engine/train_checks.py): a random backbone kept frozen, a
schedule longer than the run, a config's keypoint set replaced by the data's, more data-loader workers than
CPUs."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import yaml
from test_train import _Crash, _CrashAfter  # the training tests' crash-and-resume helpers

from fcpose.config import KeypointSetConfig, apply_overrides, load_config, to_dict
from fcpose.data.coco import keypoint_set_from_coco
from fcpose.engine import train_checks
from fcpose.engine.optim import lr_factor
from fcpose.engine.train_checks import clamp_workers, fit_backbone_to_scratch, fit_keypoints_to_data, fit_schedule
from fcpose.engine.trainer import build_model, train
from fcpose.errors import ConfigError
from fcpose.model.norm import FrozenBatchNorm2d
from fcpose.weights.checkpoint import read_checkpoint

FAST = ["input.min_size_train=[160, 160]", "input.max_size_train=256", "input.min_size_test=160",
        "input.max_size_test=256", "solver.log_period=1", "solver.checkpoint_period=0"]


# ----------------------------------------------------------------------------------------------
# 1. No pretrained weights: nothing stays frozen
# ----------------------------------------------------------------------------------------------
def test_from_scratch_trains_the_whole_backbone(capsys):
    cfg = load_config("fcpose_r18_tiny", ["model.backbone.scratch_norm="])  # FrozenBN, freeze_at 2, no weights
    assert cfg.model.backbone.freeze_at == 2 and cfg.model.backbone.norm == "FrozenBN"
    assert fit_backbone_to_scratch(copy.deepcopy(cfg), has_pretrained=True) == []
    lines = fit_backbone_to_scratch(cfg, has_pretrained=False)
    assert capsys.readouterr().err.splitlines() == lines and len(lines) == 2
    assert lines[0].startswith("warning: no pretrained backbone weights")
    assert "the randomly initialised stem and res2 fixed" in lines[0]
    assert "freeze_at=0" in lines[0]
    assert "FrozenBatchNorm2d starts as the identity" in lines[1] and "model.backbone.norm=GN" in lines[1]
    assert "statistics are set from the first training batch" in lines[1]
    assert cfg.model.backbone.freeze_at == 0
    model = build_model(cfg)
    assert all(p.requires_grad for p in model.backbone.parameters())
    # GroupNorm trains from scratch: only the freeze warning; and nothing to say when freeze_at is 0.
    gn = load_config("fcpose_r18_tiny", ["model.backbone.norm=GN", "model.backbone.freeze_at=3"])
    assert len(fit_backbone_to_scratch(gn, has_pretrained=False, verbose=False)) == 1
    assert "initialised stem, res2 and res3 fixed" in fit_backbone_to_scratch(
        load_config("fcpose_r18_tiny", ["model.backbone.norm=GN", "model.backbone.freeze_at=3"]),
        has_pretrained=False, verbose=False)[0]
    assert fit_backbone_to_scratch(gn, has_pretrained=False, verbose=False) == []
    dla = fit_backbone_to_scratch(load_config("fcpose_dla34_rt"), has_pretrained=False, verbose=False)
    assert "initialised first 2 stages fixed" in dla[0]


def test_small_preset_trains_from_scratch_with_its_scratch_norm(capsys):
    """fcpose_r18_tiny (a first-run preset): FrozenBN for ImageNet weights, GroupNorm from scratch — one note,
    the config says what is trained; the paper's and the official presets are unchanged (they need weights)."""
    from fcpose.engine.train_checks import needs_pretrained_backbone

    cfg = load_config("fcpose_r18_tiny")
    assert (cfg.model.backbone.norm, cfg.model.backbone.scratch_norm) == ("FrozenBN", "GN")
    assert not needs_pretrained_backbone(cfg)
    pretrained = copy.deepcopy(cfg)
    assert fit_backbone_to_scratch(pretrained, has_pretrained=True) == [] and pretrained == cfg  # ImageNet: FrozenBN
    lines = fit_backbone_to_scratch(cfg, has_pretrained=False)
    assert capsys.readouterr().err.splitlines() == lines and len(lines) == 1
    assert lines[0].startswith("note: no pretrained backbone weights") and "model.backbone.norm=GN" in lines[0]
    assert "freeze_at 2 -> 0" in lines[0]
    assert (cfg.model.backbone.norm, cfg.model.backbone.freeze_at) == ("GN", 0)
    assert to_dict(cfg)["model"]["backbone"]["norm"] == "GN"  # config.yaml and the checkpoints say GN
    model = build_model(cfg)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.modules())
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert fit_backbone_to_scratch(cfg, has_pretrained=False, verbose=False) == []  # a resumed run: same config
    for name in ("fcpose_r50_fpn", "fcpose_r101_fpn", "fcpose_dla34_rt", "fcpose_r50_official",
                 "fcpose_r101_official"):
        paper = load_config(name)
        assert paper.model.backbone.scratch_norm == "" and needs_pretrained_backbone(paper), name
        fit_backbone_to_scratch(paper, has_pretrained=False, verbose=False)
        assert paper.model.backbone.norm == "FrozenBN", name
    with pytest.raises(ConfigError, match="model.backbone.scratch_norm must be one of"):
        load_config("fcpose_r18_tiny", ["model.backbone.scratch_norm=FrozenBN"])


def test_frozen_batchnorm_starts_as_the_identity():
    """What the FrozenBN warning says about a backbone without weights."""
    bn = FrozenBatchNorm2d(3)
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5)


# ----------------------------------------------------------------------------------------------
# 2. A schedule longer than the run is scaled to it
# ----------------------------------------------------------------------------------------------
def _schedule(*overrides: str):
    cfg = load_config("fcpose_r18_tiny", list(overrides))  # warmup 1000, steps [60000, 80000], max_iter 90000
    note = fit_schedule(cfg, verbose=False)
    return note, cfg.solver.warmup_iters, cfg.solver.steps


def test_schedule_that_fits_is_unchanged():
    for overrides in ([], ["solver.max_iter=80001"], ["solver.max_iter=1001", "solver.steps=[1000]"],
                      ["solver.max_iter=50", "solver.warmup_iters=49", "solver.steps=[49]"],
                      ["solver.max_iter=50", "solver.warmup_iters=0", "solver.lr_schedule=cosine"]):
        cfg = load_config("fcpose_r18_tiny", overrides)
        before = to_dict(cfg)
        assert fit_schedule(cfg) is None, overrides
        assert to_dict(cfg) == before


def test_schedule_longer_than_the_run_is_scaled(capsys):
    note, warmup, steps = _schedule("solver.max_iter=100")
    assert (warmup, steps) == (1, [67, 89])  # 90000-iteration schedule -> 100 (x 100 / 90000)
    assert note == ("note: the lr schedule did not fit in solver.max_iter=100, so it was scaled to it: steps "
                    "[60000, 80000] -> [67, 89] (x0.00111: the last step at 8/9 of the run); warmup_iters 1000 -> 1 "
                    "(scaled likewise)")
    assert _schedule("solver.max_iter=9000")[1:] == (100, [6000, 8000])
    # The steps fit (or a cosine schedule ignores them), the warm-up does not: 10% of the run.
    assert _schedule("solver.max_iter=500", "solver.steps=[300, 400]")[1:] == (50, [300, 400])
    note, warmup, steps = _schedule("solver.max_iter=100", "solver.lr_schedule=cosine")
    assert (warmup, steps) == (10, [60000, 80000]) and "warmup_iters 1000 -> 10 (10% of the run)" in note
    # A tiny run: steps stay inside it, a warm-up of 10% rounds down to none.
    assert _schedule("solver.max_iter=3")[1:] == (1, [2, 2])
    assert _schedule("solver.max_iter=5", "solver.warmup_iters=5", "solver.steps=[2]")[1:] == (0, [2])
    assert _schedule("solver.max_iter=1", "solver.warmup_iters=0", "solver.steps=[1]") == (None, 0, [1])
    assert _schedule("solver.max_iter=1", "solver.warmup_iters=5", "solver.steps=[1]") == (
        "note: the lr schedule did not fit in solver.max_iter=1, so it was scaled to it: warmup_iters 5 -> 0 "
        "(10% of the run)", 0, [1])
    # The result fits: applying the rule again (a resumed run reading config.yaml) changes nothing.
    cfg = load_config("fcpose_r18_tiny", ["solver.max_iter=100"])
    fit_schedule(cfg)
    assert capsys.readouterr().err.count("\n") == 1
    assert fit_schedule(cfg) is None
    # The lr now leaves warm-up and decays inside the run.
    assert lr_factor(0, cfg) == pytest.approx(0.001) and lr_factor(1, cfg) == 1.0
    assert lr_factor(67, cfg) == pytest.approx(0.1) and lr_factor(99, cfg) == pytest.approx(0.01)


# ----------------------------------------------------------------------------------------------
# 3. The keypoint set: the data's, with a note when the config had set another one
# ----------------------------------------------------------------------------------------------
THREE = KeypointSetConfig(names=["head", "left_hand", "right_hand"], skeleton=[[0, 1], [0, 2]], flip_pairs=[[1, 2]],
                          sigmas=[0.05, 0.06, 0.06])


def test_keypoint_set_of_the_data_replaces_a_default_one_silently(capsys):
    cfg = load_config("fcpose_r18_tiny")  # no keypoints: section: COCO's
    assert fit_keypoints_to_data(cfg, copy.deepcopy(THREE), "data.json") is None
    assert cfg.keypoints == THREE and capsys.readouterr().err == ""
    # Already the data's set: nothing to say either.
    assert fit_keypoints_to_data(cfg, copy.deepcopy(THREE), "data.json") is None
    assert capsys.readouterr().err == ""


def test_keypoint_set_set_by_the_config_is_replaced_with_a_note(capsys):
    cfg = load_config("fcpose_r18_tiny", ["keypoints.names=[head, left_hand, right_hand]",
                                          "keypoints.sigmas=[0.05, 0.06, 0.06]", "keypoints.skeleton=[]",
                                          "keypoints.flip_pairs=[]"])
    line = fit_keypoints_to_data(cfg, KeypointSetConfig(), "person_keypoints.json")
    assert capsys.readouterr().err == line + "\n" and cfg.keypoints == KeypointSetConfig()
    assert line == ("note: the training data person_keypoints.json defines the keypoint set, so it replaced the "
                    "config's: 3 keypoints (head, left_hand, right_hand) -> 17 (nose, left_eye, right_eye, "
                    "left_ear, ...)")
    # Same names, other sigmas: the fields that differ are named, and where to put the config's.
    cfg = load_config("fcpose_r18_tiny")
    cfg.keypoints = copy.deepcopy(THREE)
    cfg.keypoints.sigmas = [0.1, 0.1, 0.1]
    line = fit_keypoints_to_data(cfg, copy.deepcopy(THREE), "data.json", verbose=False)
    assert capsys.readouterr().err == "" and cfg.keypoints == THREE
    assert "replaced the config's: keypoints.sigmas -> the dataset's" in line
    assert "keypoint category of data.json" in line


def test_train_says_when_the_data_replaces_the_configs_keypoints(coco_tiny, tmp_path, capsys):
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=1", "solver.ims_per_batch=1",
                                              "keypoints.names=[a, b, c]", "keypoints.sigmas=[0.1, 0.1, 0.1]",
                                              "keypoints.skeleton=[]", "keypoints.flip_pairs=[]"])
    train(cfg, data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path / "o"),
          num_workers=0, progress=False)
    err = capsys.readouterr().err
    assert err.count("defines the keypoint set") == 1 and "3 keypoints (a, b, c) -> 17 (nose," in err
    assert len(read_checkpoint(tmp_path / "o" / "model_final.pt")["config"]["keypoints"]["names"]) == 17


# ----------------------------------------------------------------------------------------------
# 4. Data-loader workers
# ----------------------------------------------------------------------------------------------
def test_workers_are_clamped_to_the_usable_cpus(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert train_checks.usable_cpus() == 2
    assert clamp_workers(0) == 0 and clamp_workers(2) == 2 and capsys.readouterr().err == ""
    assert clamp_workers(8) == 2
    assert capsys.readouterr().err == ("note: 8 data-loader workers requested (solver.num_workers / --num-workers) "
                                       "but this process can use 2 CPU(s); using 2\n")
    assert clamp_workers(8, verbose=False) == 2 and capsys.readouterr().err == ""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert train_checks.usable_cpus() == 3 and clamp_workers(5, verbose=False) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert clamp_workers(5, verbose=False) == 1


# ----------------------------------------------------------------------------------------------
# In train(): the decisions reach the model, the lr, the saved config and a resumed run
# ----------------------------------------------------------------------------------------------
def test_train_from_scratch_with_a_long_schedule_and_resume(coco_tiny, tmp_path, capsys):
    """overfit_tiny (300 iterations: warm-up 30, steps [240]) with freeze_at 2, for 6 iterations: the stem
    trains, the lr leaves warm-up and decays, and a crashed + resumed run matches an uninterrupted one."""
    data = str(coco_tiny / "person_keypoints.json")
    common = dict(data=data, images=str(coco_tiny), num_workers=0, progress=False)
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=6", "solver.ims_per_batch=2",
                                              "model.backbone.freeze_at=2"])
    straight: list = []
    train(cfg, output=str(tmp_path / "a"), loss_log=straight, **common)
    err = capsys.readouterr().err
    assert "warning: no pretrained backbone weights" in err and "FrozenBN" not in err  # overfit_tiny uses GN
    assert ("note: the lr schedule did not fit in solver.max_iter=6, so it was scaled to it: steps [240] -> [5]"
            in err and "warmup_iters 30 -> 1 (scaled likewise)" in err)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["model"]["backbone"]["freeze_at"] == 0
    assert (saved["solver"]["warmup_iters"], saved["solver"]["steps"]) == (1, [5])
    assert read_checkpoint(tmp_path / "a" / "model_final.pt")["config"]["solver"]["steps"] == [5]
    assert cfg.solver.steps == [240] and cfg.model.backbone.freeze_at == 2  # the caller's config is untouched
    # The lr of each iteration (metrics.jsonl "iter" t logs the lr of iteration t - 1).
    lr0 = cfg.solver.base_lr * 2 / cfg.solver.reference_batch
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([lr0 * 0.001, lr0, lr0, lr0, lr0, lr0 * 0.1])
    # The stem, which freeze_at 2 would have kept at its random initialisation, was trained.
    init_cfg = apply_overrides(cfg, ["model.backbone.freeze_at=0"])
    init_cfg.keypoints = keypoint_set_from_coco(data)
    torch.manual_seed(cfg.solver.seed)
    init = build_model(init_cfg).state_dict()
    final = read_checkpoint(tmp_path / "a" / "last.pt")["model"]
    assert not torch.allclose(init["backbone.conv1.weight"], final["backbone.conv1.weight"])
    assert not torch.allclose(init["backbone.layer1.0.conv1.weight"], final["backbone.layer1.0.conv1.weight"])
    # Killed during iteration 5 with a checkpoint at 3, resumed with the same (unscaled) config: same losses.
    with pytest.raises(_Crash):
        train(apply_overrides(cfg, ["solver.checkpoint_period=3"]), output=str(tmp_path / "b"),
              loss_log=_CrashAfter(5), **common)
    resumed: list = []
    result = train(cfg, output=str(tmp_path / "b"), resume=True, loss_log=resumed, **common)
    assert [it for it, _ in resumed] == [3, 4, 5] and result.iterations == 6
    for (it_a, a), (_, b) in zip(straight[3:], resumed):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (it_a, key)


def test_train_clamps_the_workers(coco_tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_checks, "usable_cpus", lambda: 1)
    seen = []
    real = torch.utils.data.DataLoader.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("num_workers"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", spy)
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=1", "solver.ims_per_batch=1"])
    train(cfg, data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path / "o"),
          num_workers=3, progress=False)
    assert seen == [1]
    err = capsys.readouterr().err
    assert err.count("data-loader workers") == 1 and "3 data-loader workers requested" in err

"""Mixed-precision training: bf16 losses close to fp32, the network alone under autocast, honest step accounting,
the divergence stop, FrozenBN calibration from scratch, and old ``solver.amp`` configs."""

from __future__ import annotations

import copy

import pytest
import torch

from fcpose.cli import main
from fcpose.config import from_dict, load_config
from fcpose.data.augment import TrainTransform
from fcpose.data.coco import CocoKeypointDataset, keypoint_set_from_category
from fcpose.data.collate import collate, to_model_input
from fcpose.engine.trainer import StepAccounting, TrainStep, train
from fcpose.loss import FCPoseCriterion
from fcpose.model.fcpose import build_model
from fcpose.model.norm import FrozenBatchNorm2d, calibrate_frozen_bn
from fcpose.precision import Precision, cpu_supports
from fcpose.weights.checkpoint import read_checkpoint

FAST = ["input.min_size_train=[160, 160]", "input.max_size_train=256", "input.min_size_test=160",
        "input.max_size_test=256", "solver.warmup_iters=5", "solver.log_period=1", "solver.checkpoint_period=0"]
needs_bf16 = pytest.mark.skipif(not cpu_supports("bf16"), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")


def _batch(cfg, coco_tiny, size: int):
    transform = TrainTransform((size, size), 2 * size, cfg.keypoints.flip_index(), crop_range=None, flip_prob=0.0)
    ds = CocoKeypointDataset(coco_tiny / "person_keypoints.json", coco_tiny, cfg.keypoints, transform, seed=0,
                             crowd=cfg.input.crowd, filter_empty=True, min_keypoints=1)
    return collate([ds[0], ds[1]])


@needs_bf16
@pytest.mark.parametrize("preset,tol", [("overfit_tiny", 0.005), ("overfit_tiny_official", 0.01)])
def test_bf16_losses_are_finite_and_close_to_fp32(coco_tiny, preset, tol):
    """The paper and official criteria on coco_tiny with the network under CPU bf16 autocast: every term finite
    and within ``tol`` relative of fp32 (the same weights and batch; measured: at most 4.2e-4 for the paper
    criterion, loss_cls, and 1.4e-3 for the official one, loss_cls)."""
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _batch(cfg, coco_tiny, 256)
    x, sizes = to_model_input(model, batch["images"], "cpu")
    out = {}
    for name in ("fp32", "bf16"):
        step = TrainStep(model, FCPoseCriterion.from_config(cfg), Precision(torch.device("cpu"), name))
        state = copy.deepcopy(model.state_dict())  # BN statistics move in training mode: same start for both
        out[name] = {k: float(v.detach()) for k, v in step(x, batch["targets"], sizes).items()}
        model.load_state_dict(state)
    for key, ref in out["fp32"].items():
        low = out["bf16"][key]
        assert torch.isfinite(torch.tensor(low)), key
        assert abs(low - ref) <= tol * abs(ref) + 1e-3, (key, low, ref)


def test_criterion_and_heads_run_in_fp32_under_autocast(coco_tiny):
    """Autocast covers the network only: what reaches the criterion is float32."""
    cfg = load_config("overfit_tiny")
    model = build_model(cfg).train()
    batch = _batch(cfg, coco_tiny, 160)
    x, sizes = to_model_input(model, batch["images"], "cpu")
    crit = FCPoseCriterion.from_config(cfg)
    seen = {}
    real = crit.__call__

    class Spy(FCPoseCriterion):
        def __call__(self, model, dense, targets, image_sizes=None):
            seen["dtypes"] = {t.dtype for t in [*dense.cls_logits, *dense.ctrl_feats, dense.kpt_feats,
                                                dense.kpt_offsets]}
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            return real(model, dense, targets, image_sizes)

    spy = Spy.__new__(Spy)
    spy.__dict__.update(crit.__dict__)
    TrainStep(model, spy, Precision(torch.device("cpu"), "bf16"))(x, batch["targets"], sizes)
    assert seen == {"dtypes": {torch.float32}, "autocast": False}


@needs_bf16
def test_bf16_training_steps_are_finite(coco_tiny, tmp_path):
    result = train(load_config("overfit_tiny", FAST + ["solver.max_iter=2", "solver.ims_per_batch=2",
                                                       "solver.precision=bf16"]),
                   data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path),
                   num_workers=0, progress=False)
    assert result.iterations == 2 and result.skipped_steps == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_losses.values())
    ckpt = read_checkpoint(tmp_path / "model_final.pt")
    assert ckpt["config"]["solver"]["precision"] == "bf16"


def test_step_accounting_separates_calibration_from_real_skips():
    acc = StepAccounting(window=4, device=torch.device("cpu"))
    t, f = torch.tensor(True), torch.tensor(False)
    big, small = torch.tensor(65536.0), torch.tensor(0.5)
    acc.record(0, f, t, big)  # fp16: finite loss, scaled gradients overflowed: calibration
    acc.record(1, f, t, big)
    acc.record(2, t, t, big)  # taken
    acc.record(3, f, f, big)  # non-finite loss: real
    assert acc.collect() == (1, 2, 1)
    acc.record(4, f, t, small)  # overflow although the scale is < 1: the gradients themselves overflow: real
    acc.record(5, f, t, None)  # bf16/fp32 (no scaler): every skip is real
    assert acc.collect() == (2, 0, 3)  # the window holds iterations 2..5: three real skips
    for i in range(6, 10):
        acc.record(i, t, t, None)
    assert acc.collect() == (0, 0, 0)


def test_fp16_scale_calibration_is_counted_not_warned(coco_tiny, tmp_path, monkeypatch, capsys):
    """fp16 with a huge initial loss scale: the overflowing first steps are GradScaler calibration, reported once
    at the end and never as warnings; the run finishes and writes model_final.pt."""
    from fcpose.engine import trainer as trainer_mod

    real = torch.amp.GradScaler

    def big_scaler(device, enabled=True):
        return real(device, init_scale=2.0 ** 40, enabled=enabled)

    monkeypatch.setattr(trainer_mod.torch.amp, "GradScaler", big_scaler)
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=2", "solver.ims_per_batch=1", "solver.precision=fp16",
                                              "input.min_size_train=[96, 96]"])
    result = train(cfg, data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path),
                   num_workers=0, progress=False)
    err = capsys.readouterr().err
    assert result.skipped_steps == 0 and result.scale_reductions >= 1
    assert "warning" not in err.replace("warning: no pretrained", "")
    assert f"{result.scale_reductions} fp16 loss-scale calibration steps" in err
    assert (tmp_path / "model_final.pt").is_file()
    assert read_checkpoint(tmp_path / "model_final.pt")["scale_reductions"] == result.scale_reductions


def test_diverging_run_stops_with_one_line_and_no_final_model(coco_tiny, tmp_path, capsys):
    """The issue's CPU reproduction: base_lr 1000 without warm-up used to skip 28 of 30 steps and exit 0."""
    out = tmp_path / "run"
    code = main(["train", "--config", "overfit_tiny", "--data", str(coco_tiny / "person_keypoints.json"),
                 "--images", str(coco_tiny), "--output", str(out), "--max-iter", "30", "--num-workers", "0",
                 "--no-progress", "--batch-size", "1", "--set", "solver.base_lr=1000", "--set", "solver.warmup_iters=0",
                 *[a for o in FAST[:4] for a in ("--set", o)], "--set", "solver.log_period=2",
                 "--set", "solver.checkpoint_period=0", "--set", "solver.skip_window=20",
                 "--set", "solver.max_skipped_fraction=0.1"])
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("fcpose train: error:")]
    assert code == 2 and len(errors) == 1 and "training diverged at iteration" in errors[0]
    assert "no model_final.pt written" in errors[0]
    assert not (out / "model_final.pt").exists() and not list(out.glob(".*tmp"))


def test_divergence_keeps_the_last_good_checkpoint(coco_tiny, tmp_path, monkeypatch):
    """Weights that turn non-finite after a good checkpoint: the run stops, last.pt stays the good one."""
    from fcpose.engine import trainer as trainer_mod
    from fcpose.engine.trainer import TrainingDiverged

    real_step = trainer_mod.TrainSession.optimizer_step

    def poison(self, finite):
        real_step(self, finite)
        if self.loop.iteration == 3:  # after the 4th step (iteration counter not yet advanced)
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(trainer_mod.TrainSession, "optimizer_step", poison)
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=6", "solver.ims_per_batch=1",
                                              "solver.checkpoint_period=2", "solver.log_period=3",
                                              "input.min_size_train=[96, 96]"])
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(cfg, data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path),
              num_workers=0, progress=False)
    last = read_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 2 and not (tmp_path / "model_final.pt").exists()
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_skips_read_at_a_checkpoint_are_warned(coco_tiny, tmp_path, monkeypatch, capsys):
    """A real skip read by a checkpoint's divergence check (before the next log line) is still warned, once."""
    from fcpose.engine import trainer as trainer_mod

    real_backward = trainer_mod.TrainSession.backward_step

    def skip_second(self, total):
        grad_norm, finite, loss_finite = real_backward(self, total)
        if self.loop.iteration == 1:
            return grad_norm, torch.zeros_like(finite), torch.zeros_like(loss_finite)
        return grad_norm, finite, loss_finite

    monkeypatch.setattr(trainer_mod.TrainSession, "backward_step", skip_second)
    cfg = load_config("overfit_tiny", FAST + ["solver.max_iter=4", "solver.ims_per_batch=1",
                                              "solver.checkpoint_period=2", "solver.log_period=4",
                                              "input.min_size_train=[96, 96]"])
    result = train(cfg, data=str(coco_tiny / "person_keypoints.json"), images=str(coco_tiny), output=str(tmp_path),
                   num_workers=0, progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "skipped for a non-finite" in line]
    assert result.skipped_steps == 1
    assert warnings == ["warning: 1 step skipped for a non-finite loss or gradient in iterations 1-1 (1 so far)"]


def test_frozen_bn_calibration_normalises_every_layer():
    model = build_model("fcpose_r18_tiny").backbone.eval()
    x = torch.randn(2, 3, 96, 128) * 60 + 100  # 0-255-like pixels
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o.clone()))
             for i, m in enumerate(m for m in model.modules() if isinstance(m, FrozenBatchNorm2d))]
    count = calibrate_frozen_bn(model, lambda: model(x))
    model(x)
    for h in hooks:
        h.remove()
    assert count == len(outputs) > 10
    for y in outputs.values():
        torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(y.shape[1]), atol=1e-3, rtol=0)
        var = y.var(dim=(0, 2, 3), unbiased=False)
        assert ((var - 1).abs() < 1e-2).all() | (var < 1e-6).all()


def test_old_amp_key_reads_as_precision():
    assert from_dict({"solver": {"amp": True}}).solver.precision == "auto"
    assert from_dict({"solver": {"amp": False}}).solver.precision == "fp32"
    assert from_dict({"solver": {"amp": False, "precision": "bf16"}}).solver.precision == "bf16"
    assert load_config("overfit_tiny", ["solver.amp=false"]).solver.precision == "fp32"
    with pytest.raises(Exception, match="precision"):
        load_config("overfit_tiny", ["solver.precision=fp8"])


def test_coco_keypoint_subset_takes_cocos_sigmas_by_name(capsys):
    from fcpose.config import COCO_KEYPOINT_NAMES, COCO_SIGMAS

    names = [n for n in COCO_KEYPOINT_NAMES if "eye" not in n and "ear" not in n]
    kset = keypoint_set_from_category({"id": 1, "name": "person", "keypoints": names, "skeleton": []})
    assert kset.sigmas == [COCO_SIGMAS[COCO_KEYPOINT_NAMES.index(n)] for n in names]
    assert "COCO's sigmas are used" in capsys.readouterr().err
    assert [names[a] for a, b in kset.flip_pairs] == [n for n in names if n.startswith("left")]
    with pytest.raises(Exception, match="no 'sigmas' field.*not COCO keypoint names: tail"):
        keypoint_set_from_category({"id": 1, "name": "dog", "keypoints": [*names, "tail"]})

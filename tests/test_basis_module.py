"""The official keypoint branch (basis module) and aligned_bilinear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcpose import build_model
from fcpose.model.basis_module import BasisModule, aligned_bilinear


def test_aligned_bilinear_shapes_and_identity():
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(aligned_bilinear(x, 1), x)
    for factor in (2, 4):
        y = aligned_bilinear(x, factor)
        assert y.shape == (2, 3, 5 * factor, 7 * factor)
    c = torch.full((1, 1, 4, 6), 3.5)
    assert torch.allclose(aligned_bilinear(c, 4), torch.full((1, 1, 16, 24), 3.5))
    with pytest.raises(ValueError):
        aligned_bilinear(x, 1.5)


def test_aligned_bilinear_puts_input_cells_on_output_cells():
    # Input cell i (centre (i + 0.5) * f in output pixels) lands on output cell i * f + f // 2 exactly.
    x = torch.randn(1, 2, 6, 5)
    for factor in (2, 4):
        y = aligned_bilinear(x, factor)
        half = factor // 2
        assert torch.allclose(y[..., half::factor, half::factor], x, atol=1e-6)
        # Between two input cells the values are linear interpolations along each axis.
        mid = y[..., half, half + 1: half + factor]
        ref = torch.stack([x[..., 0, 0] + (x[..., 0, 1] - x[..., 0, 0]) * t / factor for t in range(1, factor)], -1)
        assert torch.allclose(mid, ref, atol=1e-5)


def test_basis_module_outputs_and_gradients():
    module = BasisModule(16, 17, channels=32, num_convs=2, norm="BN", feat_channels=8)
    feats = [torch.randn(2, 16, 16, 24), torch.randn(2, 16, 8, 12), torch.randn(2, 16, 4, 6)]
    f, offsets, aux = module(feats)
    assert aux == {}
    assert f.shape == (2, 8, 16, 24) and offsets.shape == (2, 34, 16, 24)
    (f.sum() + offsets.sum()).backward()
    assert all(p.grad is not None for p in module.parameters())
    module.eval()
    with torch.no_grad():
        f1, o1, _ = module([t[:1] for t in feats])
        f2, o2, _ = module(feats)
    assert torch.allclose(f1, f2[:1], atol=1e-5) and torch.allclose(o1, o2[:1], atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        module([torch.randn(1, 16, 15, 24), torch.randn(1, 16, 8, 12), torch.randn(1, 16, 4, 6)])


def test_basis_module_matches_plain_formula():
    torch.manual_seed(1)
    module = BasisModule(8, 2, channels=8, num_convs=1, norm="BN", feat_channels=4).eval()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]

    def block(seq, x):
        conv, bn = seq[0], seq[1]
        y = F.conv2d(x, conv.weight, padding=1)
        y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        return torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])

    with torch.no_grad():
        x = block(module.refine[0], feats[0])
        x = x + aligned_bilinear(block(module.refine[1], feats[1]), 2)
        x = x + aligned_bilinear(block(module.refine[2], feats[2]), 4)
        out = module.tower[-1](block(module.tower[0], x))
        f, offsets, _ = module(feats)
    assert torch.allclose(torch.cat([f, offsets], 1), out, atol=1e-5)


@pytest.mark.parametrize("preset", ["fcpose_r50_official", "fcpose_r101_official"])
def test_official_presets_build(preset):
    with torch.device("meta"):
        model = build_model(preset)
    cfg = model.cfg
    assert cfg.model.keypoint.branch == "official" and cfg.input.format == "BGR"
    assert isinstance(model.keypoint_branch, BasisModule)
    assert model.head.controller.weight.shape == (2737, 256, 3, 3)
    assert cfg.model.rel_coord_norm == [64.0, 128.0, 256.0, 512.0, 1333.0]
    assert model.backbone.layer2[0].conv1.stride == (2, 2)  # MSRA: stride in the 1x1


def test_auxiliary_heads_shapes_and_training_only():
    module = BasisModule(16, 5, channels=32, num_convs=1, norm="BN", feat_channels=8, aux_heads=True)
    feats = [torch.randn(2, 16, 8, 12), torch.randn(2, 16, 4, 6), torch.randn(2, 16, 2, 3)]
    f, offsets, aux = module(feats)
    assert aux["p3"].shape == (2, 5, 8, 12) and aux["p1"].shape == (2, 5, 32, 48)  # stride 8 and stride 2
    (f.sum() + offsets.sum() + aux["p3"].sum() + aux["p1"].sum()).backward()
    assert all(p.grad is not None for p in module.parameters())
    assert module.upsampler[0].weight.shape == (32 + 5, 32, 8, 8)  # ConvTranspose2d: [in, out, k, k]
    module.eval()
    assert module(feats)[2] == {}  # inference never runs them

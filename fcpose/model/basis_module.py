"""The official AdelaiDet keypoint branch ("basis module"): F and the refinement offsets from P3-P5.

Each of P3, P4, P5 goes through its own ``refine`` block (conv3x3 without bias + norm + ReLU, to ``channels``); the P4
and P5 branches are brought to P3's resolution with :func:`aligned_bilinear` and summed onto the P3 branch. A ``tower``
of ``num_convs`` x (conv3x3 without bias + norm + ReLU) and a 1x1 conv then gives ``feat_channels`` basis channels (F)
followed by ``2K`` offset channels (dx_k, dy_k interleaved, in input pixels), all at stride 8.

The official module also holds auxiliary heads used only by its training losses (built with
``aux_heads=True``): ``seg_head`` (2 x conv3x3 + norm + ReLU on the fused feature), ``p3_logits`` (1x1 conv to
K stride-8 heatmaps), ``upsampler`` (ConvTranspose2d(channels + K -> channels, kernel 8, stride 4, padding 2)
+ ReLU on ``[seg, p3]``) and ``p1_logits`` (conv3x3 to K stride-2 heatmaps). They run only in training mode
and play no part in the outputs; without them :mod:`fcpose.weights.official` drops their checkpoint entries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import get_norm


def aligned_bilinear(x: Tensor, factor: int) -> Tensor:
    """Upsample ``[B, C, H, W]`` by an integer ``factor`` to ``[B, C, factor*H, factor*W]`` so that input
    cell centres land on output cell centres (CondInst / AdelaiDet ``aligned_bilinear``).

    Steps: replicate-pad one row/column at the bottom/right, bilinear resize with ``align_corners=True`` to
    ``(factor*H + 1, factor*W + 1)``, replicate-pad ``factor // 2`` rows/columns at the top/left, crop to
    ``factor*H x factor*W``."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"aligned_bilinear needs a positive integer factor, got {factor}")
    factor = int(factor)
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    half = factor // 2
    x = F.pad(x, (half, 0, half, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, get_norm(norm, out_channels), nn.ReLU(inplace=True))


class BasisModule(nn.Module):
    """Official FCPose keypoint branch; same interface as :class:`~fcpose.model.keypoint_branch.KeypointBranch`.

    in_channels: channels of the pyramid levels (256).
    num_keypoints: K; the output has ``2K`` offset channels.
    channels: width of the refine blocks and the tower (128).
    num_convs: conv3x3 blocks in the tower (4).
    norm: "BN" (eval: running statistics) or "SyncBN" (what the official code trains with); "GN" works too.
    feat_channels: channels of F (the 32 bases).
    num_inputs: pyramid levels fused, from P3 up (3: P3, P4, P5).
    aux_heads: build the auxiliary p3/p1 heatmap heads of the official training (see the module docstring).

    Parameter names follow the official checkpoint (``refine.i.{0,1}``, ``tower.j.{0,1}``, ``tower.<last>``)."""

    def __init__(self, in_channels: int, num_keypoints: int, *, channels: int = 128, num_convs: int = 4,
                 norm: str = "BN", feat_channels: int = 32, num_inputs: int = 3, aux_heads: bool = False):
        super().__init__()
        self.refine = nn.ModuleList(_conv_norm_relu(in_channels, channels, norm) for _ in range(num_inputs))
        tower: list[nn.Module] = [_conv_norm_relu(channels, channels, norm) for _ in range(num_convs)]
        out = nn.Conv2d(channels, feat_channels + 2 * num_keypoints, 1)
        nn.init.kaiming_uniform_(out.weight, a=1)
        nn.init.constant_(out.bias, 0)
        tower.append(out)
        self.tower = nn.Sequential(*tower)
        self.feat_channels = feat_channels
        self.num_keypoints = num_keypoints
        self.aux_heads = bool(aux_heads)
        if self.aux_heads:
            self.seg_head = nn.Sequential(_conv_norm_relu(channels, channels, norm),
                                          _conv_norm_relu(channels, channels, norm))
            self.p3_logits = nn.Conv2d(channels, num_keypoints, 1)
            self.upsampler = nn.Sequential(nn.ConvTranspose2d(channels + num_keypoints, channels, 8, stride=4,
                                                              padding=2), nn.ReLU())
            self.p1_logits = nn.Conv2d(channels, num_keypoints, 3, padding=1)
            for conv in (self.p3_logits, self.p1_logits):
                nn.init.normal_(conv.weight, std=1e-4)
                nn.init.constant_(conv.bias, 0.0)

    def keypoint_channels(self, num_keypoints: int) -> dict[str, tuple[int, Tensor]]:
        """The per-keypoint channels of this branch with ``num_keypoints`` keypoints, ``{parameter: (dim, owner)}``
        (owner: the keypoint of each channel along ``dim``, -1 for shared ones): the tower's last conv (the bases,
        shared, then the offsets, (dx_k, dy_k) interleaved) and the auxiliary heads (``p3_logits`` and
        ``p1_logits`` outputs, the ``upsampler``'s inputs after the ``seg`` channels)."""
        k = torch.arange(num_keypoints)
        out = torch.cat([torch.full((self.feat_channels,), -1), k.repeat_interleave(2)])
        last = f"tower.{len(self.tower) - 1}"
        layout = {f"{last}.weight": (0, out), f"{last}.bias": (0, out)}
        if self.aux_heads:
            seg = torch.full((self.p3_logits.in_channels,), -1)
            layout.update({name: (0, k) for name in ("p3_logits.weight", "p3_logits.bias", "p1_logits.weight",
                                                      "p1_logits.bias")})
            layout["upsampler.0.weight"] = (0, torch.cat([seg, k]))  # ConvTranspose2d: [in, out, kh, kw]
        return layout

    def auxiliary(self, x: Tensor) -> dict[str, Tensor]:
        """Fused feature ``[B, C, H3, W3]`` -> ``{"p3": [B, K, H3, W3], "p1": [B, K, 4 H3, 4 W3]}`` heatmap logits."""
        seg = self.seg_head(x)
        p3 = self.p3_logits(seg)
        p1 = self.p1_logits(self.upsampler(torch.cat([seg, p3], dim=1)))
        return {"p3": p3, "p1": p1}

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Pyramid levels (P3 first) -> (F ``[B, feat_channels, H3, W3]``, offsets ``[B, 2K, H3, W3]``,
        auxiliary heatmap logits: :meth:`auxiliary` in training mode with ``aux_heads``, else ``{}``)."""
        x = self.refine[0](features[0])
        h, w = x.shape[-2:]
        for level in range(1, len(self.refine)):
            y = self.refine[level](features[level])
            factor = h // y.shape[-2]
            if factor * y.shape[-2] != h or factor * y.shape[-1] != w:
                raise ValueError(f"the basis module needs input sizes divisible by the pyramid strides; level "
                                 f"{level} is {tuple(y.shape[-2:])} for a P3 of {(h, w)} (pad the input to a "
                                 f"multiple of 32)")
            x = x + aligned_bilinear(y, factor)
        out = self.tower(x)
        aux = self.auxiliary(x) if self.aux_heads and self.training else {}
        return out[:, : self.feat_channels], out[:, self.feat_channels :], aux

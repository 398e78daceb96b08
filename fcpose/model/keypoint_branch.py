"""The paper's keypoint branch: the shared feature map F and the keypoint refinement module (Sec. 3.1-3.2).

F: ``num_convs`` x (conv3x3 + norm + ReLU) on P3 and a 1x1 conv to ``feat_channels`` (32) channels, at P3
resolution. Refinement: one conv with 2K outputs, the offsets (dx_k, dy_k) from each cell to the nearest
keypoint of type k, shared by all instances; it reads P3 (the paper) or, with ``refine_input="tower"``, the
branch's tower output (as the official code derives its offsets from its basis tower)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norm import get_norm


class KeypointBranch(nn.Module):
    def __init__(self, in_channels: int, num_keypoints: int, *, channels: int = 128, num_convs: int = 4,
                 norm: str = "GN", feat_channels: int = 32, refine_input: str = "p3"):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, channels, 3, padding=1, bias=False), get_norm(norm, channels),
                       nn.ReLU(inplace=True)]
            c = channels
        self.tower = nn.Sequential(*layers)
        self.feat_out = nn.Conv2d(c, feat_channels, 1)
        if refine_input not in ("p3", "tower"):
            raise ValueError(f"refine_input must be 'p3' or 'tower', got {refine_input!r}")
        self.refine_input = refine_input
        self.refine = nn.Conv2d(in_channels if refine_input == "p3" else c, 2 * num_keypoints, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.refine.weight, std=0.01)  # offsets start near 0 (targets are within +-2 strides)
        self.feat_channels = feat_channels

    def keypoint_channels(self, num_keypoints: int) -> dict[str, tuple[int, Tensor]]:
        """The per-keypoint channels of this branch with ``num_keypoints`` keypoints, ``{parameter: (dim, owner)}``
        (owner: the keypoint of each channel along ``dim``): the offsets, (dx_k, dy_k) interleaved."""
        owner = torch.arange(num_keypoints).repeat_interleave(2)
        return {"refine.weight": (0, owner), "refine.bias": (0, owner)}

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Pyramid levels (P3 first) -> (F ``[B, feat_channels, H3, W3]``, offsets ``[B, 2K, H3, W3]``, ``{}``:
        this branch has no auxiliary heads)."""
        p3 = features[0]
        tower = self.tower(p3)
        return self.feat_out(tower), self.refine(p3 if self.refine_input == "p3" else tower), {}

"""Feature pyramid: P3-P5 from C3-C5 (lateral 1x1 + top-down nearest x2 + output 3x3), P6/P7 from P5."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """Kaiming-uniform with a=1 and zero bias (the "c2_xavier" init of Detectron's FPN)."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class FPN(nn.Module):
    """``[C3, C4, C5]`` -> ``[P3, P4, P5(, P6, P7)]``, each with ``out_channels`` channels. P6 = conv3x3/2(P5) and P7 =
    conv3x3/2(ReLU(P6)) as in FCOS (``top_levels`` = 2); ``top_levels`` = 0 gives the real-time P3-P5 pyramid. Input
    sizes need not be multiples of 32: the top-down path is upsampled to the lateral's exact size."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, top_levels: int = 2):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.top_levels = top_levels
        if top_levels >= 1:
            self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        if top_levels >= 2:
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_xavier_fill(m)
        self.out_channels = out_channels

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        prev = self.lateral[-1](features[-1])
        outs = [self.output[-1](prev)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](prev))
        if self.top_levels >= 1:
            p6 = self.p6(outs[-1])
            outs.append(p6)
            if self.top_levels >= 2:
                outs.append(self.p7(F.relu(p6)))
        return outs

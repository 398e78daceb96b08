"""FCOS head with the FCPose controller.

Shared over levels: a classification tower and a box tower (``num_convs`` x conv3x3 + norm + ReLU), class
logits, box distances (``ReLU(scale_l * pred) * stride``, one learnable scale per level), centre-ness on
the box tower, and the **controller** that turns the box-tower feature of a location into the parameters
theta of that instance's dynamic keypoint head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import get_norm


class Scale(nn.Module):
    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init)]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(in_channels: int, num_convs: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=True))
        layers.append(get_norm(norm, in_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Per-level dense predictions; the controller is applied only where instances are generated.

    The controller is a conv with ``controller_kernel`` x ``controller_kernel`` kernel and
    ``num_params`` outputs (the paper: 1x1, 2,737 outputs). Because theta is only needed at the few locations that
    become instances, :meth:`controller_params` evaluates it there (identical to running the conv densely and reading
    those locations, see the tests) instead of producing a ``num_params``-channel map at every location."""

    def __init__(self, in_channels: int, strides: list[int], num_params: int, *, num_classes: int = 1,
                 num_convs: int = 4, norm: str = "GN", prior_prob: float = 0.01, controller_kernel: int = 1):
        super().__init__()
        self.strides = list(strides)
        self.cls_tower = _tower(in_channels, num_convs, norm)
        self.bbox_tower = _tower(in_channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        self.controller = nn.Conv2d(in_channels, num_params, controller_kernel, padding=controller_kernel // 2)
        for module in [self.cls_tower, self.bbox_tower, self.cls_logits, self.bbox_pred, self.centerness,
                       self.controller]:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def num_params(self) -> int:
        return self.controller.out_channels

    def keypoint_channels(self, param_keypoints: Tensor) -> dict[str, tuple[int, Tensor]]:
        """The controller's per-keypoint output channels, ``{parameter: (dim, owner)}``, given the keypoint each
        dynamic parameter belongs to (``DynamicKeypointHead.param_keypoints``); see ``FCPose.keypoint_channels``."""
        return {"controller.weight": (0, param_keypoints), "controller.bias": (0, param_keypoints)}

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """features: L x ``[B, C, H_l, W_l]`` -> (class logits, box distances in pixels, centre-ness logits,
        box-tower features), each a list over levels."""
        logits, boxes, ctrness, towers = [], [], [], []
        for level, x in enumerate(features):
            cls_t = self.cls_tower(x)
            box_t = self.bbox_tower(x)
            logits.append(self.cls_logits(cls_t))
            ctrness.append(self.centerness(box_t))
            reg = F.relu(self.scales[level](self.bbox_pred(box_t)))
            boxes.append(reg * self.strides[level])
            towers.append(box_t)
        return logits, boxes, ctrness, towers

    def controller_inputs(self, towers: list[Tensor], batch_index: Tensor, levels: Tensor, positions: Tensor) -> Tensor:
        """Gather the controller's receptive field at N locations -> ``[N, C * k * k]``.

        batch_index ``[N]``, levels ``[N]``, positions ``[N, 2]`` (row, col). For k = 3 the 3x3
        neighbourhood (zero beyond the map) is flattened channel-major (c * 9 + ky * 3 + kx), the layout
        of ``F.unfold`` and of the conv weight. Trace-friendly (no data-dependent shapes or branches), so
        the exported graph runs this same code: every level is read at every instance's (clamped)
        position and each instance keeps its own level's patch — a few thousand values per level."""
        k = self.controller.kernel_size[0]
        pad = k // 2
        n, c = batch_index.shape[0], towers[0].shape[1]
        taps = torch.arange(k, device=positions.device) - pad
        dy, dx = torch.meshgrid(taps, taps, indexing="ij")
        out = towers[0].new_zeros(n, c * k * k)
        for level, tower in enumerate(towers):
            h, w = tower.shape[-2:]
            rows = positions[:, 0, None] + dy.reshape(1, -1)  # [N, k*k]
            cols = positions[:, 1, None] + dx.reshape(1, -1)
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            patch = tower[batch_index[:, None], :, rows.clamp(0, h - 1), cols.clamp(0, w - 1)]  # [N, k*k, C]
            patch = (patch * inside[:, :, None].to(patch.dtype)).permute(0, 2, 1).reshape(n, c * k * k)
            out = torch.where((levels == level)[:, None], patch, out)
        return out

    def controller_params(self, inputs: Tensor) -> Tensor:
        """``[N, C * k * k]`` -> theta ``[N, num_params]`` (the controller conv evaluated at those locations)."""
        weight = self.controller.weight
        return F.linear(inputs.to(weight.dtype), weight.reshape(weight.shape[0], -1), self.controller.bias)

"""Location grids: the input-pixel position that each cell of a pyramid level stands for."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_locations(height: int, width: int, stride: int, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """``[H * W, 2]`` (x, y) input-pixel coordinates of the cells of an ``H x W`` level, row-major.

    Cell (row i, col j) sits at ``(j * stride + stride // 2, i * stride + stride // 2)`` (FCOS).
    """
    xs = torch.arange(width, device=device, dtype=dtype) * stride + stride // 2
    ys = torch.arange(height, device=device, dtype=dtype) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def positions_to_locations(positions: Tensor, strides: Tensor) -> Tensor:
    """``[N, 2]`` (row, col) grid positions with per-instance ``[N]`` strides -> ``[N, 2]`` (x, y) pixels."""
    s = strides.to(torch.float32)
    x = positions[:, 1].to(torch.float32) * s + torch.div(strides, 2, rounding_mode="floor").to(torch.float32)
    y = positions[:, 0].to(torch.float32) * s + torch.div(strides, 2, rounding_mode="floor").to(torch.float32)
    return torch.stack([x, y], dim=1)

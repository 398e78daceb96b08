"""The location grid: the input-pixel position that each cell of a pyramid level stands for, and back.

Cell (row i, col j) of a stride-``s`` level sits at ``(j * s + s // 2, i * s + s // 2)`` (FCOS). Every
part of fcpose that needs that rule — FCOS targets, keypoint codecs, the dynamic heads' relative
coordinates, decoding and the exported graph — calls :func:`cell_to_pixel` or one of the helpers below
(all trace-friendly: symbolic sizes and tensor strides work)."""

from __future__ import annotations

import torch
from torch import Tensor


def cell_to_pixel(index: Tensor, stride: int | Tensor) -> Tensor:
    """Row or column indices (any shape) -> the pixel coordinate of those cells' centres (same dtype as
    ``stride * index``; ``stride`` may be a per-element tensor)."""
    return index * stride + torch.div(stride, 2, rounding_mode="floor") if isinstance(stride, Tensor) \
        else index * stride + stride // 2


def pixel_to_cell(coord: Tensor, stride: int | Tensor) -> Tensor:
    """Inverse of :func:`cell_to_pixel` for cell-centre coordinates: pixel coordinate -> ``long`` index."""
    half = torch.div(stride, 2, rounding_mode="floor") if isinstance(stride, Tensor) else stride // 2
    return ((coord - half) / stride).round().long()


def compute_locations(height: int, width: int, stride: int, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """``[H * W, 2]`` (x, y) input-pixel centres of the cells of an ``H x W`` level, row-major."""
    xs = cell_to_pixel(torch.arange(width, device=device, dtype=dtype), stride)
    ys = cell_to_pixel(torch.arange(height, device=device, dtype=dtype), stride)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def flat_to_positions(index: Tensor, width: int | Tensor) -> Tensor:
    """Flat cell indices ``[...]`` (``row * width + col``; ``width`` may be per element) -> ``[..., 2]`` (row, col)."""
    row = torch.div(index, width, rounding_mode="floor")
    return torch.stack([row, index - row * width], dim=-1)


def flat_to_locations(index: Tensor, width: int, stride: int) -> Tensor:
    """Flat cell indices ``[...]`` (``row * width + col``) -> ``[..., 2]`` (x, y) float32 centres."""
    row, col = flat_to_positions(index, width).unbind(-1)
    return torch.stack([cell_to_pixel(col, stride), cell_to_pixel(row, stride)], dim=-1).to(torch.float32)


def positions_to_locations(positions: Tensor, strides: Tensor) -> Tensor:
    """``[N, 2]`` (row, col) grid positions with per-instance ``[N]`` strides -> ``[N, 2]`` (x, y) float32."""
    x = cell_to_pixel(positions[:, 1], strides).to(torch.float32)
    y = cell_to_pixel(positions[:, 0], strides).to(torch.float32)
    return torch.stack([x, y], dim=1)


def locations_to_positions(locations: Tensor, strides: Tensor) -> Tensor:
    """Inverse of :func:`positions_to_locations`: ``[N, 2]`` (x, y) cell centres -> ``[N, 2]`` (row, col)."""
    s = strides.to(locations.dtype)
    return torch.stack([pixel_to_cell(locations[:, 1], s), pixel_to_cell(locations[:, 0], s)], dim=1)

"""Keypoint encoders (heatmap cell, refinement offsets) with their decoders beside them.

Coordinates are continuous input pixels (pixel i spans [i, i + 1)). The heatmap of a keypoint lives on the stride-``s``
grid of P3 whose cell (row r, col c) stands for the pixel position ``(c * s + s // 2, r * s + s // 2)``. Following the
paper (Sec. 3.3), a keypoint at (x, y) is encoded as the one-hot cell ``(floor((x - s/2) / s), floor((y - s/2) / s))`` —
for s = 8 exactly ``floor((x - 4) / 8)`` — and the refinement module predicts the offset from a cell to the keypoint."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .locations import flat_to_locations


def offset_unit_scale(unit: str, stride: int) -> float:
    """Pixels per unit of the predicted offsets: ``stride`` for "stride" units, 1 for "pixel"."""
    if unit == "stride":
        return float(stride)
    if unit == "pixel":
        return 1.0
    raise ValueError(f"unknown offset unit {unit!r}")


# ---- Heatmap target: one cell per labelled keypoint ------------------------------------------
def encode_heatmap_index(xy: Tensor, stride: int, height: int, width: int) -> Tensor:
    """``[..., 2]`` keypoint (x, y) -> ``[...]`` flat index ``row * width + col`` of its one-hot cell.
    ``col = floor((x - s/2) / s)`` and ``row = floor((y - s/2) / s)``, clamped to the ``height x width`` grid (a
    keypoint within half a stride of the image border maps to the border cell)."""
    half = stride / 2.0
    col = torch.floor((xy[..., 0] - half) / stride).clamp(0, width - 1).to(torch.long)
    row = torch.floor((xy[..., 1] - half) / stride).clamp(0, height - 1).to(torch.long)
    return row * width + col


# ---- Official targets: truncated cells and Gaussian heatmaps (AdelaiDet's HeatmapGenerator) --
def official_grid_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The official heatmap grid of an image of ``height x width`` input pixels at ``stride`` (2 or 8):
    ``ceil(h / 32) * 32 / stride`` x ``ceil(w / 32) * 32 / stride`` cells (the image's own padded size)."""
    return int(math.ceil(height / 32) * 32 // stride), int(math.ceil(width / 32) * 32 // stride)


def encode_truncated_cell(keypoints: Tensor, stride: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``[..., 3]`` keypoints (x, y, v) -> (``[...]`` flat index ``row * width + col``, ``[...]`` bool valid).

    The official rule: cell ``(int(x / s), int(y / s))`` (truncation) on a ``height x width`` grid, valid when
    v > 0 and the cell lies in the grid. Invalid entries get index 0."""
    col = torch.trunc(keypoints[..., 0] / stride).to(torch.long)
    row = torch.trunc(keypoints[..., 1] / stride).to(torch.long)
    valid = (keypoints[..., 2] > 0) & (col >= 0) & (row >= 0) & (col < width) & (row < height)
    return torch.where(valid, row * width + col, torch.zeros_like(col)), valid


def gaussian_heatmaps(keypoints: Tensor, stride: int, height: int, width: int, sigma: float) -> Tensor:
    """Official Gaussian targets: ``[G, K, 3]`` keypoints (x, y, v) -> ``[K, height, width]`` (max over people).
    Keypoint k of a person puts ``exp(-(dx^2 + dy^2) / (2 sigma^2))`` on the cells of the patch around its truncated
    cell ``(int(x / s), int(y / s))`` (:func:`encode_truncated_cell`), the patch spanning
    ``round(c - 3 sigma - 1) .. round(c + 3 sigma + 2)`` (exclusive) on each axis, computed in float64 and stored as
    float32; labelled keypoints only, cells outside the grid dropped."""
    g, k = keypoints.shape[:2]
    device = keypoints.device
    out = torch.zeros(k, height * width, dtype=torch.float32, device=device)
    if g == 0:
        return out.reshape(k, height, width)
    _, valid = encode_truncated_cell(keypoints, stride, height, width)
    col = torch.trunc(keypoints[..., 0] / stride).to(torch.long)[valid]  # [P]
    row = torch.trunc(keypoints[..., 1] / stride).to(torch.long)[valid]
    kind = torch.arange(k, device=device).expand(g, k)[valid]
    if col.numel() == 0:
        return out.reshape(k, height, width)
    size = int(2 * np.round(3 * sigma) + 3)
    centre = (size - 1) / 2
    lo = int(np.round(-3 * sigma - 1))  # patch start relative to the cell (the official ul for an integer cell)
    idx = torch.arange(size, device=device)
    gauss = torch.exp(-((idx[None, :] - centre) ** 2 + (idx[:, None] - centre) ** 2).double() / (2 * sigma ** 2))
    cols = col[:, None] + lo + idx[None, :]  # [P, size]
    rows = row[:, None] + lo + idx[None, :]
    inside = (rows[:, :, None] >= 0) & (rows[:, :, None] < height) & (cols[:, None, :] >= 0) & \
        (cols[:, None, :] < width)  # [P, size, size]
    flat = (kind[:, None, None] * (height * width) + rows[:, :, None] * width + cols[:, None, :])[inside]
    values = gauss.to(torch.float32)[None].expand(col.numel(), size, size)[inside]
    out.view(-1).scatter_reduce_(0, flat, values, reduce="amax", include_self=True)
    return out.reshape(k, height, width)


# ---- Refinement offsets: from a cell to the keypoint -----------------------------------------
def decode_offsets(index: Tensor, offsets: Tensor, width: int, stride: int, unit: str = "stride") -> Tensor:
    """Cell ``index`` (flat, ``[...]``) centre + ``offsets`` in ``unit`` -> ``[..., 2]`` keypoint (x, y) pixels."""
    return flat_to_locations(index, width, stride) + offsets * offset_unit_scale(unit, stride)


def gather_offsets(offset_maps: Tensor, batch_index: Tensor, index: Tensor) -> Tensor:
    """Read the refinement offsets at given cells.

    offset_maps: ``[B, 2K, H, W]`` (dx_k, dy_k interleaved); batch_index: ``[N]``; index: ``[N, K]`` flat
    cells -> ``[N, K, 2]`` raw offsets of keypoint k at its own cell. (One flat gather: trace-friendly.)"""
    b, c, h, w = offset_maps.shape
    channel = 2 * torch.arange(c // 2, device=offset_maps.device)[None, :]  # [1, K]
    dx_at = (batch_index[:, None] * c + channel) * (h * w) + index  # [N, K] positions of dx_k in the flat maps
    flat = offset_maps.reshape(-1)
    return torch.stack([flat[dx_at], flat[dx_at + h * w]], dim=-1)


@torch.no_grad()
def encode_offset_maps(keypoints: Tensor, height: int, width: int, stride: int, unit: str = "stride",
                       radius: float = 2.0) -> tuple[Tensor, Tensor]:
    """Dense refinement targets for one image.

    keypoints: ``[G, K, 3]`` (x, y, v) of the G people, v > 0 = labelled. For every cell within ``radius``
    cells (Euclidean, in stride units) of a labelled keypoint of type k, the target is the offset to the
    *nearest* labelled keypoint of type k (the paper's "offsets to the nearest ground-truth keypoint").

    Returns ``targets [2K, H, W]`` (dx_k, dy_k interleaved, in ``unit``) and ``weights [K, H, W]`` (1 where
    supervised, else 0)."""
    g, k, _ = keypoints.shape
    device = keypoints.device
    targets = torch.zeros(k, 2, height * width, device=device)
    weights = torch.zeros(k, height * width, device=device)
    if g == 0:
        return targets.reshape(2 * k, height, width), weights.reshape(k, height, width)
    centres = flat_to_locations(torch.arange(height * width, device=device), width, stride)  # [HW, 2]
    xy = keypoints[..., :2].permute(1, 0, 2)  # [K, G, 2]
    labelled = (keypoints[..., 2] > 0).permute(1, 0)  # [K, G]
    delta = xy[:, None, :, :] - centres[None, :, None, :]  # [K, HW, G, 2]
    dist = delta.square().sum(-1).masked_fill(~labelled[:, None, :], float("inf"))  # [K, HW, G]
    best, arg = dist.min(dim=2)  # [K, HW]
    near = best <= (radius * stride) ** 2
    chosen = delta.gather(2, arg[:, :, None, None].expand(-1, -1, 1, 2)).squeeze(2)  # [K, HW, 2]
    scale = offset_unit_scale(unit, stride)
    targets = torch.where(near[..., None], chosen / scale, torch.zeros_like(chosen)).permute(0, 2, 1)
    weights = near.to(torch.float32)
    return targets.reshape(2 * k, height, width), weights.reshape(k, height, width)

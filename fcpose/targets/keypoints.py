"""Keypoint encoders (heatmap cell, refinement offsets) with their decoders beside them.

Coordinates are continuous input pixels (pixel i spans [i, i + 1)). The heatmap of a keypoint lives on
the stride-``s`` grid of P3 whose cell (row r, col c) stands for the pixel position
``(c * s + s // 2, r * s + s // 2)``. Following the paper (Sec. 3.3), a keypoint at (x, y) is encoded
as the one-hot cell ``(floor((x - s/2) / s), floor((y - s/2) / s))`` — for s = 8 exactly
``floor((x - 4) / 8)`` — and the refinement module predicts the offset from a cell to the keypoint.
"""

from __future__ import annotations

import torch
from torch import Tensor


def offset_unit_scale(unit: str, stride: int) -> float:
    """Pixels per unit of the predicted offsets: ``stride`` for "stride" units, 1 for "pixel"."""
    if unit == "stride":
        return float(stride)
    if unit == "pixel":
        return 1.0
    raise ValueError(f"unknown offset unit {unit!r}")


def cell_centers(index: Tensor, width: int, stride: int) -> Tensor:
    """Flat cell indices ``[...]`` on a grid of ``width`` columns -> ``[..., 2]`` (x, y) pixel centres."""
    col = torch.remainder(index, width)
    row = torch.div(index, width, rounding_mode="floor")
    half = stride // 2
    return torch.stack([col * stride + half, row * stride + half], dim=-1).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# Heatmap target: one cell per labelled keypoint
# ----------------------------------------------------------------------------------------------
def encode_heatmap_index(xy: Tensor, stride: int, height: int, width: int) -> Tensor:
    """``[..., 2]`` keypoint (x, y) -> ``[...]`` flat index ``row * width + col`` of its one-hot cell.

    ``col = floor((x - s/2) / s)`` and ``row = floor((y - s/2) / s)``, clamped to the ``height x width`` grid
    (a keypoint within half a stride of the image border maps to the border cell).
    """
    half = stride / 2.0
    col = torch.floor((xy[..., 0] - half) / stride).clamp(0, width - 1).to(torch.long)
    row = torch.floor((xy[..., 1] - half) / stride).clamp(0, height - 1).to(torch.long)
    return row * width + col


def decode_heatmap_peaks(heatmaps: Tensor, score: str = "softmax") -> tuple[Tensor, Tensor]:
    """``[N, K, H, W]`` heatmap logits -> (``[N, K]`` flat index of each peak, ``[N, K]`` peak score).

    ``score="softmax"``: the softmax probability of the peak over the H*W cells (what the
    cross-entropy training makes it); ``"logit"``: the raw maximum logit (official AdelaiDet).
    """
    flat = heatmaps.flatten(2)
    peak, index = flat.max(dim=2)
    if score == "softmax":
        value = torch.exp(peak - torch.logsumexp(flat, dim=2))
    elif score == "logit":
        value = peak
    else:
        raise ValueError(f"unknown keypoint score {score!r}")
    return index, value


# ----------------------------------------------------------------------------------------------
# Refinement offsets: from a cell to the keypoint
# ----------------------------------------------------------------------------------------------
def encode_offsets(xy: Tensor, index: Tensor, width: int, stride: int, unit: str = "stride") -> Tensor:
    """Offset ``[..., 2]`` from cell ``index`` (flat, ``[...]``) to keypoint ``xy`` (``[..., 2]``), in ``unit``."""
    return (xy - cell_centers(index, width, stride)) / offset_unit_scale(unit, stride)


def decode_offsets(index: Tensor, offsets: Tensor, width: int, stride: int, unit: str = "stride") -> Tensor:
    """Inverse of :func:`encode_offsets`: cell centre + offset -> ``[..., 2]`` keypoint (x, y) pixels."""
    return cell_centers(index, width, stride) + offsets * offset_unit_scale(unit, stride)


def gather_offsets(offset_maps: Tensor, batch_index: Tensor, index: Tensor) -> Tensor:
    """Read the refinement offsets at given cells.

    offset_maps: ``[B, 2K, H, W]`` (dx_k, dy_k interleaved); batch_index: ``[N]``; index: ``[N, K]`` flat
    cells -> ``[N, K, 2]`` raw offsets of keypoint k at its own cell.
    """
    b, c, h, w = offset_maps.shape
    flat = offset_maps.reshape(b, c, h * w)
    channel = 2 * torch.arange(c // 2, device=offset_maps.device)[None, :]  # [1, K]
    image = batch_index[:, None]  # [N, 1]
    dx = flat[image, channel, index]  # [N, K]
    dy = flat[image, channel + 1, index]
    return torch.stack([dx, dy], dim=-1)


@torch.no_grad()
def encode_offset_maps(keypoints: Tensor, height: int, width: int, stride: int, unit: str = "stride",
                       radius: float = 2.0) -> tuple[Tensor, Tensor]:
    """Dense refinement targets for one image.

    keypoints: ``[G, K, 3]`` (x, y, v) of the G people, v > 0 = labelled. For every cell within ``radius``
    cells (Euclidean, in stride units) of a labelled keypoint of type k, the target is the offset to the
    *nearest* labelled keypoint of type k (the paper's "offsets to the nearest ground-truth keypoint").

    Returns ``targets [2K, H, W]`` (dx_k, dy_k interleaved, in ``unit``) and ``weights [K, H, W]`` (1 where
    supervised, else 0).
    """
    g, k, _ = keypoints.shape
    device = keypoints.device
    targets = torch.zeros(k, 2, height * width, device=device)
    weights = torch.zeros(k, height * width, device=device)
    if g == 0:
        return targets.reshape(2 * k, height, width), weights.reshape(k, height, width)
    centres = cell_centers(torch.arange(height * width, device=device), width, stride)  # [HW, 2]
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

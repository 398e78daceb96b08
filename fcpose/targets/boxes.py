"""FCOS box encoding: a box seen from a location is its four distances (left, top, right, bottom)."""

from __future__ import annotations

import torch
from torch import Tensor


def encode_ltrb(locations: Tensor, boxes: Tensor) -> Tensor:
    """Distances from ``[..., 2]`` (x, y) locations to the sides of ``[..., 4]`` xyxy boxes -> ``[..., 4]``. Same units
    as the inputs (input pixels). Negative values mean the location is outside the box."""
    x, y = locations[..., 0], locations[..., 1]
    return torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)


def decode_ltrb(locations: Tensor, ltrb: Tensor) -> Tensor:
    """Inverse of :func:`encode_ltrb`: ``[..., 2]`` locations + ``[..., 4]`` distances -> ``[..., 4]`` xyxy."""
    x, y = locations[..., 0], locations[..., 1]
    return torch.stack([x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]], dim=-1)

"""Image resizing and batching shared by inference and training.

Images are ``uint8 [H, W, 3]`` RGB numpy arrays. Resizing follows detectron2's ``ResizeShortestEdge`` (the
size rule and PIL bilinear interpolation of the uint8 image), which is what the official FCPose
checkpoints were trained and evaluated with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F


def resize_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) when the short side becomes ``short`` and the long side at most ``max_size``."""
    scale = short / min(height, width)
    if height < width:
        new_h, new_w = float(short), scale * width
    else:
        new_h, new_w = scale * height, float(short)
    if max(new_h, new_w) > max_size:
        s = max_size / max(new_h, new_w)
        new_h, new_w = new_h * s, new_w * s
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL bilinear resize of a ``uint8 [H, W, C]`` image to ``[height, width, C]`` (no-op if same size)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` with values 0-255 (same channel order)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def padded_size(height: int, width: int, divisibility: int) -> tuple[int, int]:
    if divisibility <= 1:
        return height, width
    return int(math.ceil(height / divisibility) * divisibility), int(math.ceil(width / divisibility) * divisibility)


def batch_images(images: list[Tensor], divisibility: int = 32, pad_value: float = 0.0) -> Tensor:
    """Stack ``[3, h_i, w_i]`` tensors into ``[B, 3, H, W]``, zero-padded at the bottom/right to the largest
    size rounded up to ``divisibility``."""
    max_h = max(int(t.shape[-2]) for t in images)
    max_w = max(int(t.shape[-1]) for t in images)
    h, w = padded_size(max_h, max_w, divisibility)
    return torch.stack([F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=pad_value) for t in images])

"""Image resizing and batching shared by inference and training.

Images are ``uint8 [H, W, 3]`` RGB numpy arrays. Resizing follows detectron2's ``ResizeShortestEdge`` (the
size rule and PIL bilinear interpolation of the uint8 image), which is what the official FCPose
checkpoints were trained and evaluated with.

Two implementations of that resize: :func:`resize_image` (PIL, on the CPU: the reference, what training, ``fcpose eval``
and CPU inference use) and :func:`resize_tensor` (PyTorch ops on a tensor of any device: what inference on a GPU uses,
so that only the uint8 image crosses to the device). They differ by one grey level (rarely two) on a small share of
pixels; docs/gpu.md gives the measured effect on keypoints and AP."""

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


def upload_image(image: np.ndarray, device: torch.device) -> Tensor:
    """An RGB ``uint8 [H, W, 3]`` array -> a ``uint8 [3, H, W]`` tensor on ``device`` (a channels-last view of
    ``[H, W, 3]``; on a CPU a view of the array itself): the device preprocessing resizes it there."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)


def resize_tensor(image: Tensor, height: int, width: int) -> Tensor:
    """``[3, H, W]`` or a batch ``[B, 3, H, W]`` (uint8 or float, values 0-255, any device) -> ``float32
    [(B,) 3, height, width]``: :func:`resize_image`'s bilinear resize in PyTorch ops, each image as alone.

    PIL's way: a horizontal pass rounded half up to whole grey levels (PIL keeps a uint8 image between the
    passes), then a vertical pass, rounded again; each pass averages over the scaled triangle support when
    downscaling (``antialias=True``) and interpolates between pixel centres when upscaling. PIL's fixed-point
    coefficients against these float32 ones: the grey-level differences of the module docstring."""
    x = image.float()
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    single = x.dim() == 3
    x = F.interpolate(x[None] if single else x, size=(x.shape[-2], width), mode="bilinear", align_corners=False,
                      antialias=True)
    x = F.interpolate(_to_grey_levels(x), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    x = _to_grey_levels(x)
    return x[0] if single else x


def _to_grey_levels(x: Tensor) -> Tensor:
    """Round half up (PIL's rounding, not round-half-to-even: a 3/4 downscale lands on .5 often) into 0-255."""
    return x.add_(0.5).floor_().clamp_(0, 255)


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` with values 0-255 (same channel order)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def padded_size(height: int, width: int, divisibility: int) -> tuple[int, int]:
    if divisibility <= 1:
        return height, width
    return int(math.ceil(height / divisibility) * divisibility), int(math.ceil(width / divisibility) * divisibility)


def batch_images(images: list[Tensor], divisibility: int = 32, pad_value: float = 0.0) -> Tensor:
    """Stack ``[3, h_i, w_i]`` tensors into ``[B, 3, H, W]``, zero-padded at the bottom/right to the largest
    size rounded up to ``divisibility`` (on the images' device)."""
    max_h = max(int(t.shape[-2]) for t in images)
    max_w = max(int(t.shape[-1]) for t in images)
    h, w = padded_size(max_h, max_w, divisibility)
    return torch.stack([F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=pad_value) for t in images])

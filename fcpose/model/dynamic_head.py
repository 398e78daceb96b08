"""The dynamic, instance-aware keypoint head f_theta_i (Sec. 3.1).

For instance i generated at location (x_i, y_i) of level l, the input is F (``[F, H, W]``, the image's
shared keypoint features) with two relative-coordinate maps in front:
``rel(p) = ((x_i, y_i) - p) / norm_l`` for every cell centre p of F (x first, then y). Then 1x1 convs
``(F + 2) -> C -> ... -> K`` with ReLU between them, whose weights come from theta_i, split in the order
``w0, b0, w1, b1, ..., w_last, b_last`` (each w as ``[out, in]`` row-major).

All instances run together: layer 0 is one GEMM per image (its instances' stacked weights times the
image's F) plus a batched rank-2 update for the coordinates; the next layers are batched matmuls.
There is no loop over instances.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import dynamic_param_count
from ..targets.locations import compute_locations


class DynamicKeypointHead(nn.Module):
    """Parameter-free: its weights are the per-instance theta produced by the controller."""

    def __init__(self, feat_channels: int = 32, channels: int = 32, num_layers: int = 3, num_keypoints: int = 17,
                 stride: int = 8):
        super().__init__()
        self.in_channels = feat_channels + 2
        # Channel sizes of the layers: (F + 2) -> C -> ... -> K.
        self.dims = [self.in_channels] + [channels] * (num_layers - 1) + [num_keypoints]
        self.num_keypoints = num_keypoints
        self.stride = stride

    @property
    def num_params(self) -> int:
        return dynamic_param_count(self.dims[0], self.dims[1], len(self.dims) - 1, self.dims[-1])

    def initial_params(self, generator: torch.Generator | None = None) -> Tensor:
        """theta ``[P]`` of an ordinary Kaiming-initialised head (ReLU gain; zero biases).

        Used as the controller's initial bias: at the start of training every instance then runs this same
        working head and the controller learns the instance-specific part. A controller that starts near
        zero gives all three layers near-zero weights, whose gradients vanish through their product.
        """
        parts = []
        for i in range(len(self.dims) - 1):
            fan_in, fan_out = self.dims[i], self.dims[i + 1]
            bound = math.sqrt(6.0 / fan_in)  # Kaiming uniform, gain sqrt(2)
            parts.append((torch.rand(fan_out * fan_in, generator=generator) * 2 - 1) * bound)
            parts.append(torch.zeros(fan_out))
        return torch.cat(parts)

    def split_params(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """theta ``[N, P]`` -> per layer (weight ``[N, out, in]``, bias ``[N, out]``)."""
        if params.shape[1] != self.num_params:
            raise ValueError(f"expected {self.num_params} dynamic parameters, got {params.shape[1]}")
        n = params.shape[0]
        sizes = []
        for i in range(len(self.dims) - 1):
            sizes += [self.dims[i] * self.dims[i + 1], self.dims[i + 1]]
        chunks = torch.split(params, sizes, dim=1)
        layers = []
        for i in range(len(self.dims) - 1):
            w = chunks[2 * i].reshape(n, self.dims[i + 1], self.dims[i])
            layers.append((w, chunks[2 * i + 1]))
        return layers

    def relative_coords(self, locations: Tensor, norms: Tensor, height: int, width: int) -> Tensor:
        """``[N, 2]`` instance locations (x, y) and ``[N]`` divisors -> ``[N, 2, H * W]`` relative coordinates."""
        grid = compute_locations(height, width, self.stride, device=locations.device, dtype=locations.dtype)
        rel = locations[:, None, :] - grid[None, :, :]  # [N, HW, 2]
        return (rel / norms[:, None, None]).permute(0, 2, 1)

    def forward(self, feats: Tensor, params: Tensor, batch_index: Tensor, locations: Tensor,
                norms: Tensor) -> Tensor:
        """Heatmap logits of N instances.

        feats ``[B, F, H, W]`` (F of each image), params ``[N, P]``, batch_index ``[N]`` (image of each
        instance), locations ``[N, 2]`` (x, y) input pixels, norms ``[N]`` relative-coordinate divisors
        -> ``[N, K, H, W]``.
        """
        b, c, h, w = feats.shape
        n = params.shape[0]
        if n == 0:
            return feats.new_zeros(0, self.num_keypoints, h, w)
        layers = self.split_params(params.to(feats.dtype))
        w0, b0 = layers[0]
        c1 = w0.shape[1]
        flat = feats.reshape(b, c, h * w)
        # Layer 0, feature part: for each image one GEMM of its instances' stacked weights with F.
        x = feats.new_empty(n, c1, h * w)
        for image in range(b):
            idx = (batch_index == image).nonzero().squeeze(1)
            if idx.numel():
                wf = w0[idx, :, 2:].reshape(-1, c)  # [n_b * C1, F]
                x[idx] = (wf @ flat[image]).reshape(idx.numel(), c1, h * w)
        # Layer 0, coordinate part and bias: x += w0[:, :, :2] @ rel + b0.
        rel = self.relative_coords(locations.to(feats.dtype), norms.to(feats.dtype), h, w)
        x = torch.baddbmm(x + b0[:, :, None], w0[:, :, :2], rel)
        for w_l, b_l in layers[1:]:
            x = torch.baddbmm(b_l[:, :, None], w_l, torch.relu(x))
        return x.reshape(n, self.num_keypoints, h, w)

"""The dynamic, instance-aware keypoint head f_theta_i (Sec. 3.1).

For instance i generated at location (x_i, y_i) of level l, the input is F (``[F, H, W]``, the image's shared keypoint
features) with two relative-coordinate maps in front: ``rel(p) = ((x_i, y_i) - p) / norm_l`` for every cell centre p of
F (x first, then y). Then 1x1 convs ``(F + 2) -> C -> ... -> K`` with ReLU between them, whose weights come from
theta_i, split in the order ``w0, b0, w1, b1, ..., w_last, b_last`` (each w as ``[out, in]`` row-major).

Two ways to run the heads, both without a loop over instances:

* :meth:`DynamicKeypointHead.forward` materialises the ``[N, K, H, W]`` heatmap logits (training: the loss
  needs them). Layer 0 is one GEMM per image (its instances' stacked weights times the image's F) plus a
  batched rank-2 update for the coordinates; the next layers are batched matmuls.
* :meth:`DynamicKeypointHead.peaks` gives only what inference needs — per keypoint the arg-max cell, the peak logit and
  the softmax normaliser — streaming all instances over spatial tiles so that the activations stay in cache and no
  heatmap is stored (see :meth:`fold`). Tests check it against ``forward``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import dynamic_param_count
from ..targets.locations import compute_locations

EXP_FLOOR = -80.0  # exp() arguments are clamped here (exp(-80) ~ 1.8e-35, far above float32 subnormals)


def default_tile_bytes(device: torch.device) -> int:
    """Activation bytes per tile for :meth:`DynamicKeypointHead.peaks`: ~L2-sized on CPU, large on GPUs."""
    return 256 << 20 if device.type == "cuda" else 512 << 10


@dataclass
class FoldedHeads:
    """n dynamic heads rewritten as plain products on ``[F; x; y; 1]`` (see :meth:`DynamicKeypointHead.fold`).

    first: ``[n * c_0, F + 3]`` layer 0 (rows grouped by instance); mids: ``[n, c_{i+1}, c_i]`` hidden
    layers; last: ``[n, K, c_L]`` (None when the head has one layer and ``first`` gives the logits). Every
    ``c_i`` includes a constant-1 channel that carries the next layer's bias."""

    first: Tensor
    mids: list[Tensor]
    last: Tensor | None
    widths: list[int]  # c_0, c_1, ... (with the constant channel)
    num_keypoints: int

    @property
    def num_instances(self) -> int:
        return self.first.shape[0] // self.widths[0]


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
        """theta ``[P]`` of an ordinary Kaiming-initialised head (ReLU gain; zero biases). Used as the controller's
        initial bias: at the start of training every instance then runs this same working head and the controller learns
        the instance-specific part. A controller that starts near zero gives all three layers near-zero weights, whose
        gradients vanish through their product."""
        theta = torch.zeros(self.num_params)
        for weight, _ in self.split_params(theta[None]):  # views of theta: [1, out, in]
            bound = math.sqrt(6.0 / weight.shape[-1])  # Kaiming uniform, gain sqrt(2)
            weight.copy_((torch.rand(weight.shape, generator=generator) * 2 - 1) * bound)
        return theta

    def param_keypoints(self, num_keypoints: int | None = None) -> Tensor:
        """``[P]``: the keypoint each entry of theta belongs to (-1: shared by all keypoints), for this head with
        ``num_keypoints`` outputs (default its own): the last layer's weight rows and biases are per keypoint.
        Fine-tuning to another keypoint set maps the controller's outputs by it."""
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        head = self if k == self.num_keypoints else DynamicKeypointHead(
            self.in_channels - 2, self.dims[1], len(self.dims) - 1, k, self.stride)
        owner = torch.full((head.num_params,), -1)
        weight, bias = head.split_params(torch.arange(head.num_params)[None])[-1]  # theta's indices, last layer
        owner[weight[0]] = torch.arange(k)[:, None]  # its weight rows and biases are per keypoint
        owner[bias[0]] = torch.arange(k)
        return owner

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

    def forward(self, feats: Tensor, params: Tensor, batch_index: Tensor, locations: Tensor, norms: Tensor) -> Tensor:
        """Heatmap logits of N instances. feats ``[B, F, H, W]`` (F of each image), params ``[N, P]``, batch_index
        ``[N]`` (image of each instance), locations ``[N, 2]`` (x, y) input pixels, norms ``[N]`` relative-coordinate
        divisors -> ``[N, K, H, W]``."""
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

    # ---- Inference: peaks without heatmaps ---------------------------------------------------
    def fold(self, params: Tensor, locations: Tensor, norms: Tensor) -> FoldedHeads:
        """theta ``[n, P]``, locations ``[n, 2]`` (x, y) input pixels, divisors ``[n]`` -> :class:`FoldedHeads`.
        Layer 0's coordinate part is affine in the cell position p:
        ``w_xy . ((x_i, y_i) - p) / norm_i = w_xy . (x_i, y_i) / norm_i - (w_xy / norm_i) . p``, so
        ``[w_F, -w_xy / norm_i, b'_i]`` times ``[F; x; y; 1]`` (shared by all instances of an image) is the whole layer,
        bias included; hidden layers carry a constant-1 channel so each next bias is one more weight column."""
        layers = self.split_params(params)
        w0, b0 = layers[0]
        n, c1, cin = w0.shape
        f = cin - 2
        wxy = w0[:, :, :2] / norms[:, None, None]  # [n, c1, 2]
        bias0 = b0 + (wxy * locations[:, None, :]).sum(2)  # [n, c1]
        k = layers[-1][0].shape[1]
        if len(layers) == 1:
            first = torch.cat([w0[:, :, 2:], -wxy, bias0[:, :, None]], dim=2).reshape(n * c1, f + 3)
            return FoldedHeads(first, [], None, [c1], k)
        first = params.new_zeros(n, c1 + 1, f + 3)
        first[:, :c1, :f] = w0[:, :, 2:]
        first[:, :c1, f:f + 2] = -wxy
        first[:, :c1, f + 2] = bias0
        first[:, c1, f + 2] = 1.0  # the constant channel
        widths = [c1 + 1]
        mids = []
        for w, b in layers[1:-1]:
            out_c = w.shape[1]
            m = params.new_zeros(n, out_c + 1, widths[-1])
            m[:, :out_c, :-1] = w
            m[:, :out_c, -1] = b
            m[:, out_c, -1] = 1.0
            mids.append(m)
            widths.append(out_c + 1)
        w, b = layers[-1]
        last = torch.cat([w, b[:, :, None]], dim=2).contiguous()
        return FoldedHeads(first.reshape(n * (c1 + 1), f + 3), mids, last, widths, k)

    def feature_rows(self, feats: Tensor) -> Tensor:
        """One image's F ``[F, H, W]`` -> ``[F + 3, H * W]``: F, the cell centres x and y, and ones (float32);
        a batch ``[B, F, H, W]`` -> ``[B, F + 3, H * W]``."""
        c, h, w = feats.shape[-3:]
        lead = feats.shape[:-3]
        grid = compute_locations(h, w, self.stride, device=feats.device, dtype=torch.float32).t()
        extra = torch.cat([grid, grid.new_ones(1, h * w)]).expand(*lead, 3, h * w)
        return torch.cat([feats.reshape(*lead, c, h * w).float(), extra], dim=-2)

    def peaks(self, feats: Tensor, params: Tensor, locations: Tensor, norms: Tensor,
              tile_bytes: int | None = None, traceable: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmap peaks of n instances of ONE image, without storing heatmaps.

        feats ``[F, H, W]``, params ``[n, P]``, locations ``[n, 2]``, norms ``[n]`` -> per keypoint ``[n, K]``:
        the peak cell (flat index, first on ties), the peak logit, and ``S = sum_cells exp(logit - peak)``
        (the peak's softmax probability is ``1 / S``). feats ``[B, F, H, W]``: B images with the same number of
        instances each, image after image (``n = B * S``; the fixed-shape post-processing's slots), all in the
        same operations. Runs in float32. All instances go through all layers
        one spatial tile at a time (``tile_bytes`` of activations, ~L2 on CPU, in preallocated buffers); per
        tile each keypoint keeps its maximum and ``sum exp(logit - max)``, which combine exactly into the
        global values. ``traceable=True`` is the form for export: the same products on one tile (the whole
        map), out of place, with no size-dependent Python control flow."""
        heads = self.fold(params.float(), locations.float(), norms.float())
        rows = self.feature_rows(feats)
        if traceable:
            logits = _tile_logits(heads, rows)
            peak, cell = logits.max(dim=2)
            total = (logits - peak[:, :, None]).clamp_min(EXP_FLOOR).exp().sum(dim=2)
            return cell, peak, total
        hw = rows.shape[-1]
        n, k = heads.num_instances, heads.num_keypoints
        widest = max(heads.widths)
        tile_bytes = tile_bytes or default_tile_bytes(feats.device)
        tile = min(hw, max(256, (tile_bytes // (4 * n * widest)) // 64 * 64))
        ntile = -(-hw // tile)
        dev = rows.device
        vals = torch.empty(ntile, n, k, device=dev)
        index = torch.empty(ntile, n, k, dtype=torch.long, device=dev)
        sums = torch.empty(ntile, n, k, device=dev)
        buffers = _TileBuffers(torch.empty(n * widest * tile, device=dev), torch.empty(n * widest * tile, device=dev),
                               torch.empty(n * k * tile, device=dev))
        for t in range(ntile):
            s0 = t * tile
            logits = _tile_logits(heads, rows[..., s0:min(hw, s0 + tile)], buffers)
            torch.max(logits, dim=2, out=(vals[t], index[t]))
            if s0:
                index[t] += s0
            logits.sub_(vals[t][:, :, None]).clamp_min_(EXP_FLOOR).exp_()
            torch.sum(logits, dim=2, out=sums[t])
        peak, best_tile = vals.max(dim=0)  # the first tile holding the maximum: first cell on ties
        cell = index.gather(0, best_tile[None])[0]
        total = (sums * (vals - peak[None]).clamp_min_(EXP_FLOOR).exp_()).sum(0)
        return cell, peak, total


@dataclass
class _TileBuffers:
    """Preallocated activations for :func:`_tile_logits` (two ping-pong hidden buffers and the logits)."""

    ping: Tensor
    pong: Tensor
    logits: Tensor


def _tile_logits(heads: FoldedHeads, cols: Tensor, buffers: _TileBuffers | None = None) -> Tensor:
    """Folded heads on ``[F + 3, T]`` feature columns -> logits ``[n, K, T]``: layer 0 as one GEMM, ReLU, the
    hidden and last layers as batched products. ``[B, F + 3, T]`` columns of B images (instances image after
    image, the same number each): layer 0 as one batched product. With ``buffers`` every product writes into
    them (no allocation per tile); without, out of place (autograd- and export-friendly)."""
    n, size = heads.num_instances, cols.shape[-1]
    k, widths = heads.num_keypoints, heads.widths
    first = heads.first if cols.dim() == 2 else heads.first.view(cols.shape[0], -1, cols.shape[1])

    def layer0(out: Tensor | None = None) -> Tensor:
        if cols.dim() == 2:
            return torch.mm(first, cols) if out is None else torch.mm(first, cols, out=out)
        if out is None:
            return torch.bmm(first, cols).view(-1, size)
        torch.bmm(first, cols, out=out.view(cols.shape[0], -1, size))
        return out

    if buffers is None:
        x = layer0()
        if heads.last is None:
            return x.reshape(-1, k, size)
        x = x.relu().reshape(-1, widths[0], size)
        for m in heads.mids:
            x = torch.bmm(m, x).relu()
        return torch.bmm(heads.last, x)
    if heads.last is None:
        logits = layer0(buffers.logits[:n * k * size].view(n * k, size))
        return logits.view(n, k, size)
    x = layer0(buffers.ping[:n * widths[0] * size].view(n * widths[0], size))
    x = x.relu_().view(n, widths[0], size)
    bufs = (buffers.pong, buffers.ping)
    for i, m in enumerate(heads.mids):
        y = bufs[i % 2][:n * widths[i + 1] * size].view(n, widths[i + 1], size)
        torch.bmm(m, x, out=y)
        x = y.relu_()
    logits = buffers.logits[:n * k * size].view(n, k, size)
    torch.bmm(heads.last, x, out=logits)
    return logits

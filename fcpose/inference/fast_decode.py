"""Fast inference decoding: every person's dynamic head streamed over spatial tiles of F.

:func:`decode_keypoints_fast` gives the same keypoints as :func:`fcpose.postprocess.decode_keypoints`
(up to float rounding: cells within ~1e-5 of each other's logit may swap as the peak, scores differ by
~1e-5 relative) but never materialises the ``[N, K, H, W]`` heatmaps, so the per-person cost is a few
small matrix products that stay in the CPU cache:

* **Layer 0 is one GEMM for all the image's instances.** Its coordinate part is affine in the cell
  position, ``w_xy . ((x_i, y_i) - p) / norm_i = w_xy . (x_i, y_i) / norm_i - (w_xy / norm_i) . p``, so
  ``[w_F, -w_xy / norm_i, b'_i]`` (stacked over instances) times ``[F; x; y; 1]`` (shared by all of
  them) is the whole layer, bias included.
* **Biases ride along in the products**: every hidden layer carries a constant-1 channel, so the next
  layer's bias is one more weight column and no separate broadcast add is needed.
* **Spatial tiles** of ``tile`` cells (sized so a tile's activations of all instances fit in
  ``tile_bytes``, ~L2) go through all the layers; each keypoint keeps the tile's maximum (value and cell)
  and ``sum exp(logit - max)``, which combine exactly over tiles into the global peak and its softmax
  probability ``1 / sum_t s_t exp(m_t - M)``: no ``logsumexp`` over a materialised map.
* ``exp`` arguments are clamped at -80 (``exp(-80) ~ 2e-35`` adds nothing to a sum that contains 1),
  which keeps x86 ``exp`` off its very slow subnormal path.

The heads always run in float32 (also when the network ran under bf16/fp16 autocast): they are a tiny
share of the FLOPs and the arg-max wants the precision.

:func:`fast_decode_supported` checks once per model, on a few cells, that the model's dynamic head
computes exactly what this module assumes (layer layout, coordinate convention, ReLUs); if not (e.g. a
head variant added later), :func:`postprocess_fast` falls back to the reference decoder with a warning.

:func:`select_forced` is the benchmark's forced-N selection (see its docstring).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.boxes import clip_boxes, nms
from ..postprocess import DetectionParams, decode_keypoints, rescale_boxes, select_instances
from ..structures import DenseOutputs, Instances, PoseDetections
from ..targets.boxes import decode_ltrb
from ..targets.keypoints import decode_offsets, gather_offsets
from ..targets.locations import compute_locations, positions_to_locations

__all__ = [
    "decode_keypoints_fast", "fast_decode_supported", "postprocess_fast", "select_forced", "instance_params_fp32",
    "assemble_detections", "default_tile_bytes",
]

EXP_FLOOR = -80.0  # exp() arguments are clamped here (exp(-80) ~ 1.8e-35, far above float32 subnormals)


def default_tile_bytes(device: torch.device) -> int:
    """Activation bytes per tile: ~L2-sized on CPU, large on GPUs (few, big kernels)."""
    return 256 << 20 if device.type == "cuda" else 512 << 10


@dataclass
class FoldedHeads:
    """The dynamic heads of n instances rewritten as plain products on ``[F; x; y; 1]`` (see module doc).

    first: ``[n * c_0, F + 3]`` layer 0 (rows grouped by instance); mids: ``[n, c_{i+1}, c_i]`` hidden
    layers; last: ``[n, K, c_L]`` (or None when the head has one layer and ``first`` gives the logits).
    Every ``c_i`` includes the constant-1 channel that carries the next bias.
    """

    first: Tensor
    mids: list[Tensor]
    last: Tensor | None
    widths: list[int]  # c_0, c_1, ... (with the constant channel)
    num_keypoints: int


def fold_heads(head, params: Tensor, locations: Tensor, norms: Tensor) -> FoldedHeads:
    """theta ``[n, P]``, instance locations ``[n, 2]`` (x, y) input pixels, divisors ``[n]`` -> :class:`FoldedHeads`."""
    layers = head.split_params(params)
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


def feature_rows(feats: Tensor, stride: int) -> Tensor:
    """One image's F ``[F, H, W]`` -> ``[F + 3, H * W]``: F, the cell centres x and y, and ones (float32)."""
    c, h, w = feats.shape
    grid = compute_locations(h, w, stride, device=feats.device, dtype=torch.float32).t()
    return torch.cat([feats.reshape(c, h * w).float(), grid, feats.new_ones(1, h * w, dtype=torch.float32)], 0)


def stream_peaks(heads: FoldedHeads, rows: Tensor, tile_bytes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Run n folded heads over ``rows [F + 3, HW]`` tile by tile.

    Returns per keypoint ``[n, K]``: the peak cell (flat index, first on ties), the peak logit, and
    ``S = sum_cells exp(logit - peak)`` (so the peak's softmax probability is ``1 / S``).
    """
    hw = rows.shape[1]
    k = heads.num_keypoints
    n = heads.first.shape[0] // heads.widths[0]
    widest = max(heads.widths)
    tile = (tile_bytes // (4 * n * widest)) // 64 * 64
    tile = min(hw, max(256, tile))
    ntile = -(-hw // tile)
    dev = rows.device
    vals = torch.empty(ntile, n, k, device=dev)
    index = torch.empty(ntile, n, k, dtype=torch.long, device=dev)
    sums = torch.empty(ntile, n, k, device=dev)
    ping = torch.empty(n * widest * tile, device=dev)
    pong = torch.empty(n * widest * tile, device=dev)
    logits_buf = torch.empty(n * k * tile, device=dev)
    for t in range(ntile):
        s0 = t * tile
        size = min(hw, s0 + tile) - s0
        cols = rows[:, s0:s0 + size]
        if heads.last is None:
            logits = logits_buf[:n * k * size].view(n * k, size)
            torch.mm(heads.first, cols, out=logits)
            logits = logits.view(n, k, size)
        else:
            x = ping[:n * heads.widths[0] * size].view(n * heads.widths[0], size)
            torch.mm(heads.first, cols, out=x)
            x = x.relu_().view(n, heads.widths[0], size)
            bufs = (pong, ping)
            for i, m in enumerate(heads.mids):
                y = bufs[i % 2][:n * heads.widths[i + 1] * size].view(n, heads.widths[i + 1], size)
                torch.bmm(m, x, out=y)
                x = y.relu_()
            logits = logits_buf[:n * k * size].view(n, k, size)
            torch.bmm(heads.last, x, out=logits)
        torch.max(logits, dim=2, out=(vals[t], index[t]))
        if s0:
            index[t] += s0
        logits.sub_(vals[t][:, :, None]).clamp_min_(EXP_FLOOR).exp_()
        torch.sum(logits, dim=2, out=sums[t])
    peak, best_tile = vals.max(dim=0)  # the first tile holding the maximum: first cell on ties
    cell = index.gather(0, best_tile[None])[0]
    total = (sums * (vals - peak[None]).clamp_min_(EXP_FLOOR).exp_()).sum(0)
    return cell, peak, total


def instance_params_fp32(model, dense: DenseOutputs, instances: Instances) -> Tensor:
    """theta ``[N, P]`` in float32 (the controller gathered at the instances' locations), whatever dtype the
    dense outputs have (e.g. bf16 from an autocast network)."""
    inputs = model.head.controller_inputs(dense.ctrl_feats, instances.batch_index, instances.levels,
                                          instances.positions)
    weight = model.head.controller.weight
    return torch.nn.functional.linear(inputs.float(), weight.float().reshape(weight.shape[0], -1),
                                      model.head.controller.bias.float())


def decode_keypoints_fast(model, dense: DenseOutputs, instances: Instances, tile_bytes: int | None = None) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y in network-input pixels, score) of ``instances``, like
    :func:`fcpose.postprocess.decode_keypoints` (see the module docstring for how)."""
    feats = dense.kpt_feats
    n = len(instances)
    k = model.num_keypoints
    width = feats.shape[-1]
    stride = dense.strides[0]
    out = torch.zeros(n, k, 3, device=feats.device)
    if n == 0:
        return out
    tile_bytes = tile_bytes or default_tile_bytes(feats.device)
    params = instance_params_fp32(model, dense, instances)
    norms = model.rel_coord_norm.float()[instances.levels]
    locations = instances.locations.float()
    offsets_map = dense.kpt_offsets.float()
    for image in torch.unique(instances.batch_index).tolist():
        sel = (instances.batch_index == image).nonzero().squeeze(1)
        heads = fold_heads(model.dynamic_head, params[sel], locations[sel], norms[sel])
        cell, peak, total = stream_peaks(heads, feature_rows(feats[image], stride), tile_bytes)
        score = total.reciprocal() if model.keypoint_score == "softmax" else peak
        offsets = gather_offsets(offsets_map, instances.batch_index[sel], cell)
        out[sel, :, :2] = decode_offsets(cell, offsets, width, stride, model.offset_unit)
        out[sel, :, 2] = score
    return out


# ------------------------------------------------------------------------------------------------
# Guard: does this model's dynamic head compute what fold_heads assumes?
# ------------------------------------------------------------------------------------------------
_SUPPORT_ATTR = "_fcpose_fast_decode_ok"


def _check_head(model) -> bool:
    head = model.dynamic_head
    if model.keypoint_score not in ("softmax", "logit"):
        return False
    if not all(hasattr(head, a) for a in ("split_params", "num_params", "stride", "num_keypoints")):
        return False
    gen = torch.Generator().manual_seed(0)
    f = getattr(head, "in_channels", 34) - 2
    n, h, w = 2, 3, 5
    dev = model.rel_coord_norm.device
    feats = torch.randn(1, f, h, w, generator=gen).to(dev)
    params = (torch.randn(n, head.num_params, generator=gen) * 0.3).to(dev)
    locations = torch.tensor([[12.0, 4.0], [30.0, 20.0]], device=dev)
    norms = torch.tensor([64.0, 128.0], device=dev)
    with torch.no_grad():
        ref = head(feats, params, torch.zeros(n, dtype=torch.long, device=dev), locations, norms).float()
        heads = fold_heads(head, params, locations, norms)
        rows = feature_rows(feats[0], head.stride)
        x = heads.first @ rows
        if heads.last is not None:
            x = x.relu().view(n, heads.widths[0], -1)
            for m in heads.mids:
                x = torch.relu(m @ x)
            x = heads.last @ x
    return ref.shape == (n, head.num_keypoints, h, w) and torch.allclose(
        x.reshape(ref.shape), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max().clamp(min=1.0)))


def fast_decode_supported(model) -> bool:
    """True when the model's dynamic head matches the fast decoder (checked once, cached on the model)."""
    ok = getattr(model, _SUPPORT_ATTR, None)
    if ok is None:
        try:
            ok = _check_head(model)
        except Exception:  # any mismatch in shapes or signatures means "not supported"
            ok = False
        if not ok:
            warnings.warn("fcpose: this model's dynamic keypoint head differs from what the fast decoder assumes; "
                          "using the reference decoder", RuntimeWarning, stacklevel=2)
        setattr(model, _SUPPORT_ATTR, ok)
    return ok


# ------------------------------------------------------------------------------------------------
# Post-processing built on it
# ------------------------------------------------------------------------------------------------
def assemble_detections(instances: Instances, keypoints: Tensor, output_sizes: list[tuple[int, int]]
                        ) -> list[PoseDetections]:
    """Flat instances (boxes already in output pixels) and their ``[N, K, 3]`` keypoints -> one
    :class:`PoseDetections` per image."""
    results = []
    for image, size in enumerate(output_sizes):
        sel = instances.batch_index == image
        results.append(PoseDetections(boxes=instances.boxes[sel], scores=instances.scores[sel],
                                      keypoints=keypoints[sel], image_size=(int(size[0]), int(size[1])),
                                      levels=instances.levels[sel], locations=instances.locations[sel]))
    return results


def decode_people(model, dense: DenseOutputs, instances: Instances, scale: Tensor,
                  output_sizes: list[tuple[int, int]], fast: bool = True,
                  tile_bytes: int | None = None) -> list[PoseDetections]:
    """Keypoints of selected instances (boxes in output pixels, ``scale [N, 2]`` input->output) -> detections."""
    if fast and fast_decode_supported(model):
        keypoints = decode_keypoints_fast(model, dense, instances, tile_bytes)
    else:
        keypoints = decode_keypoints(model, dense, instances)
    keypoints[:, :, :2] *= scale[:, None, :]
    return assemble_detections(instances, keypoints, output_sizes)


@torch.no_grad()
def postprocess_fast(model, dense: DenseOutputs, input_sizes: list[tuple[int, int]],
                     output_sizes: list[tuple[int, int]] | None = None, params: DetectionParams | None = None,
                     tile_bytes: int | None = None) -> list[PoseDetections]:
    """Drop-in for :func:`fcpose.postprocess.postprocess` using :func:`decode_keypoints_fast`."""
    params = params or DetectionParams()
    output_sizes = output_sizes or input_sizes
    instances = select_instances(dense, params)
    instances, scale = rescale_boxes(instances, input_sizes, output_sizes)
    return decode_people(model, dense, instances, scale, output_sizes, tile_bytes=tile_bytes)


# ------------------------------------------------------------------------------------------------
# Forced-N selection for benchmarks
# ------------------------------------------------------------------------------------------------
def _level_candidates(cls_logits: Tensor, box_reg: Tensor, centerness: Tensor, stride: int, topk: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """One image and level, no threshold -> (flat cells ``[n]``, boxes ``[n, 4]``, scores ``[n]``)."""
    c, h, w = cls_logits.shape
    prob = torch.sigmoid(cls_logits.float()).reshape(c, h * w).max(dim=0).values
    ranking = prob * torch.sigmoid(centerness.float()).reshape(h * w)
    index = ranking.topk(min(topk, h * w), sorted=False).indices
    ranking = ranking[index]
    row = torch.div(index, w, rounding_mode="floor")
    col = index - row * w
    locations = torch.stack([col * stride + stride // 2, row * stride + stride // 2], dim=1).float()
    ltrb = box_reg.float().reshape(4, h * w)[:, index].t()
    return index, decode_ltrb(locations, ltrb), torch.sqrt(ranking)


@torch.no_grad()
def select_forced(dense: DenseOutputs, params: DetectionParams, num: int, candidates_per_person: int = 20,
                  input_sizes: list[tuple[int, int]] | None = None,
                  output_sizes: list[tuple[int, int]] | None = None) -> tuple[Instances, Tensor]:
    """Exactly ``num`` instances per image (fewer only if the image has fewer locations), for timing.

    The score threshold is skipped. Per level the ``pre_nms_topk`` best locations are taken as usual; of
    those, the ``num * candidates_per_person`` best over all levels (all of them if
    ``candidates_per_person`` is 0) go through the same NMS as in normal inference, so the NMS workload
    grows with the number of people as it does with a trained model (the default 20 is an assumption —
    about the FCOS locations around a person's centre that fire — not a measured figure). The ``num``
    best kept boxes are used; if NMS kept fewer, the best suppressed
    candidates fill up to ``num``. Boxes are scaled to ``output_sizes`` and clipped but never dropped.

    Returns the instances (boxes in output pixels) and their ``[N, 2]`` scale factors, like
    :func:`fcpose.postprocess.rescale_boxes`.
    """
    device = dense.kpt_feats.device
    batch = dense.kpt_feats.shape[0]
    parts = []
    for image in range(batch):
        cells, boxes, scores, levels = [], [], [], []
        for level, stride in enumerate(dense.strides):
            idx, bx, sc = _level_candidates(dense.cls_logits[level][image], dense.box_reg[level][image],
                                            dense.centerness[level][image], stride, params.pre_nms_topk)
            cells.append(idx)
            boxes.append(bx)
            scores.append(sc)
            levels.append(torch.full_like(idx, level))
        cell, box, score, level = torch.cat(cells), torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        if candidates_per_person > 0 and score.numel() > num * candidates_per_person:
            top = score.topk(num * candidates_per_person).indices
            cell, box, score, level = cell[top], box[top], score[top], level[top]
        keep = nms(box, score, params.nms_threshold)
        if keep.numel() < num:
            suppressed = torch.ones(score.numel(), dtype=torch.bool, device=device)
            suppressed[keep] = False
            rest = suppressed.nonzero().squeeze(1)
            rest = rest[torch.sort(score[rest], descending=True, stable=True).indices]
            keep = torch.cat([keep, rest[:num - keep.numel()]])
        keep = keep[:num]
        widths = torch.tensor([dense.cls_logits[lv].shape[-1] for lv in range(dense.num_levels)], device=device)
        cell, level = cell[keep], level[keep]
        row = torch.div(cell, widths[level], rounding_mode="floor")
        parts.append((torch.full_like(cell, image), level, torch.stack([row, cell - row * widths[level]], 1),
                      box[keep], score[keep]))
    batch_index, level, positions, boxes, scores = (torch.cat(p) for p in zip(*parts))
    strides = torch.tensor(dense.strides, device=device)[level]
    instances = Instances(batch_index=batch_index, levels=level, positions=positions,
                          locations=positions_to_locations(positions, strides), boxes=boxes, scores=scores)
    stride = dense.strides[0]
    input_sizes = input_sizes or [(dense.kpt_feats.shape[-2] * stride, dense.kpt_feats.shape[-1] * stride)] * batch
    output_sizes = output_sizes or input_sizes
    scale = torch.tensor([[ow / iw, oh / ih] for (ih, iw), (oh, ow) in zip(input_sizes, output_sizes)],
                         dtype=torch.float32, device=device).reshape(-1, 2)[batch_index]
    limits = torch.tensor(output_sizes, dtype=torch.float32, device=device).reshape(-1, 2)[batch_index]
    instances.boxes = clip_boxes(instances.boxes * scale.repeat(1, 2), limits[:, 0], limits[:, 1])
    return instances, scale

"""FCOS target assignment (Tian et al. 2019, as used by FCPose Sec. 3.3): which person each location
predicts, or background, or ignore.

Layout of every per-location tensor: ``[B, L_total]`` (or ``[B, L_total, 4]``) where the location axis
concatenates the pyramid levels in order (P3 first) and each level's ``H_l x W_l`` grid row-major — the
order of ``torch.cat([x.flatten(2) for x in level_maps], dim=2)`` on ``[B, C, H_l, W_l]`` maps, and of
:func:`~fcpose.targets.locations.compute_locations`. So location ``j`` of level ``l`` (``j = row * W_l + col``)
is at ``offsets[l] + j``, ``offsets = [0, L_0, L_0 + L_1, ...]``.

Rules (as in FCOS / AdelaiDet):

- a location is a candidate for a ground-truth box if it lies strictly inside the box's *centre region* — the box centre
  +- ``center_sampling_radius * stride_l``, clipped to the box — (or strictly inside the box when the radius is 0);
- and the largest of its four distances (l, t, r, b) to the box sides is within the level's size range
  ``[lo_l, hi_l]`` (inclusive): ``[-1, s_0], [s_0, s_1], ..., [s_last, inf)`` from ``sizes_of_interest``;
- among several candidate boxes the one with the smallest area wins (then the lowest index);
- a location without a box is background; background locations strictly inside a crowd (ignore) box are
  ignored by the classification loss. Positives win over ignore regions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import encode_ltrb
from .locations import compute_locations

INF = float("inf")


def level_size_ranges(sizes_of_interest: list[float], num_levels: int) -> list[tuple[float, float]]:
    """``[64, 128, 256, 512]`` for 5 levels -> ``[(-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)]``."""
    if len(sizes_of_interest) != num_levels - 1:
        raise ValueError(f"{num_levels} levels need {num_levels - 1} sizes of interest, got {sizes_of_interest}")
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [INF]
    return [(bounds[i], bounds[i + 1]) for i in range(num_levels)]


def centerness_from_ltrb(ltrb: Tensor) -> Tensor:
    """``[..., 4]`` positive distances -> ``[...]`` centre-ness ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))``."""
    lr = ltrb[..., 0::2]
    tb = ltrb[..., 1::2]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-12)) * \
        (tb.min(-1).values / tb.max(-1).values.clamp(min=1e-12))
    return ratio.clamp(min=0).sqrt()


@dataclass
class LocationGrid:
    """All locations of a pyramid, flattened level-major then row-major (shared by the images of a batch)."""

    locations: Tensor  # [L_total, 2] (x, y) input pixels
    levels: Tensor  # [L_total] long level index (0 = P3)
    positions: Tensor  # [L_total, 2] long (row, col) on the location's level
    strides: Tensor  # [L_total] float stride of the location's level
    sizes: list[tuple[int, int]]  # (H_l, W_l) per level

    @property
    def num_per_level(self) -> list[int]:
        return [h * w for h, w in self.sizes]

    def __len__(self) -> int:
        return int(self.levels.shape[0])


def location_grid(sizes: list[tuple[int, int]], strides: list[int], device: torch.device | str = "cpu") -> LocationGrid:
    """The :class:`LocationGrid` of levels of ``(H_l, W_l)`` cells with the given strides."""
    locs, levels, positions, stride_of = [], [], [], []
    for level, ((h, w), s) in enumerate(zip(sizes, strides)):
        locs.append(compute_locations(h, w, s, device=device))
        levels.append(torch.full((h * w,), level, dtype=torch.long, device=device))
        idx = torch.arange(h * w, device=device)
        positions.append(torch.stack([torch.div(idx, w, rounding_mode="floor"), idx % w], dim=1))
        stride_of.append(torch.full((h * w,), float(s), device=device))
    return LocationGrid(torch.cat(locs), torch.cat(levels), torch.cat(positions), torch.cat(stride_of),
                        [(int(h), int(w)) for h, w in sizes])


@dataclass
class FCOSTargets:
    """Targets of every location of every image (see the module docstring for the layout)."""

    labels: Tensor  # [B, L] long: class index (0 = person) at positives, -1 at background/ignored
    ignore: Tensor  # [B, L] bool: background inside a crowd region (excluded from the classification loss)
    box_targets: Tensor  # [B, L, 4] (l, t, r, b) distances in input pixels at positives, 0 elsewhere
    centerness_targets: Tensor  # [B, L] centre-ness of the box target at positives, 0 elsewhere
    matched_gt: Tensor  # [B, L] long: index into that image's gt boxes, -1 if none

    @property
    def positive(self) -> Tensor:
        """``[B, L]`` bool."""
        return self.labels >= 0


@torch.no_grad()
def assign_fcos_targets_single(locations: Tensor, strides: Tensor, size_ranges: Tensor, gt_boxes: Tensor,
                               ignore_boxes: Tensor | None = None, center_sampling_radius: float = 1.5,
                               gt_classes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """FCOS assignment for one image. locations ``[L, 2]`` (x, y); strides ``[L]`` (stride of each location's level);
    size_ranges ``[L, 2]`` (lo, hi of each location's level); gt_boxes ``[G, 4]`` xyxy; ignore_boxes ``[C, 4]`` xyxy or
    None; gt_classes ``[G]`` long (default 0). Returns (labels ``[L]``, ignore ``[L]``, box_targets ``[L, 4]``,
    centerness ``[L]``, matched ``[L]``) as in :class:`FCOSTargets`."""
    num_loc = locations.shape[0]
    device = locations.device
    gt_boxes = gt_boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
    num_gt = gt_boxes.shape[0]
    labels = torch.full((num_loc,), -1, dtype=torch.long, device=device)
    matched = torch.full((num_loc,), -1, dtype=torch.long, device=device)
    box_targets = torch.zeros(num_loc, 4, device=device)
    centerness = torch.zeros(num_loc, device=device)
    if num_gt > 0:
        ltrb = encode_ltrb(locations[:, None, :], gt_boxes[None, :, :])  # [L, G, 4]
        if center_sampling_radius > 0:
            centre = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])  # [G, 2]
            reach = (strides * center_sampling_radius)[:, None, None]  # [L, 1, 1]
            region_lo = torch.maximum(centre[None] - reach, gt_boxes[None, :, :2])  # [L, G, 2]
            region_hi = torch.minimum(centre[None] + reach, gt_boxes[None, :, 2:])
            inside = encode_ltrb(locations[:, None, :], torch.cat([region_lo, region_hi], dim=-1)).min(-1).values > 0
        else:
            inside = ltrb.min(-1).values > 0
        extent = ltrb.max(-1).values  # [L, G]
        in_range = (extent >= size_ranges[:, None, 0]) & (extent <= size_ranges[:, None, 1])
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])  # [G]
        cost = area[None].expand(num_loc, num_gt).masked_fill(~(inside & in_range), INF)
        best_area, best = cost.min(dim=1)  # first index on ties
        pos = torch.isfinite(best_area)
        classes = torch.zeros(num_gt, dtype=torch.long, device=device) if gt_classes is None else \
            gt_classes.to(device=device, dtype=torch.long)
        matched = torch.where(pos, best, matched)
        labels = torch.where(pos, classes[best], labels)
        chosen = ltrb.gather(1, best[:, None, None].expand(-1, 1, 4)).squeeze(1)  # [L, 4]
        box_targets = torch.where(pos[:, None], chosen, box_targets)
        centerness = torch.where(pos, centerness_from_ltrb(chosen.clamp(min=0)), centerness)
    ignore = torch.zeros(num_loc, dtype=torch.bool, device=device)
    if ignore_boxes is not None and ignore_boxes.numel() > 0:
        crowd = ignore_boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
        in_crowd = (encode_ltrb(locations[:, None, :], crowd[None]).min(-1).values > 0).any(dim=1)
        ignore = in_crowd & (labels < 0)
    return labels, ignore, box_targets, centerness, matched


@torch.no_grad()
def assign_fcos_targets(locations_per_level: list[Tensor], strides: list[int], sizes_of_interest: list[float],
                        gt_boxes_per_image: list[Tensor], ignore_boxes_per_image: list[Tensor | None] | None = None,
                        center_sampling_radius: float = 1.5,
                        gt_classes_per_image: list[Tensor] | None = None) -> FCOSTargets:
    """FCOS targets of a batch.

    locations_per_level: L_levels x ``[H_l * W_l, 2]`` (x, y) input-pixel locations, row-major
        (:func:`~fcpose.targets.locations.compute_locations`).
    strides: stride of each level.
    sizes_of_interest: upper size bound of every level but the last (see :func:`level_size_ranges`).
    gt_boxes_per_image: B x ``[G_b, 4]`` xyxy input pixels.
    ignore_boxes_per_image: B x ``[C_b, 4]`` xyxy crowd regions (or None).
    center_sampling_radius: in strides; 0 disables centre sampling (whole box).
    gt_classes_per_image: B x ``[G_b]`` class indices (default: all 0 = person).

    Returns :class:`FCOSTargets` with ``[B, L_total, ...]`` tensors (image-major, then level, then row-major)."""
    device = locations_per_level[0].device
    ranges = level_size_ranges(sizes_of_interest, len(locations_per_level))
    locations = torch.cat(locations_per_level).to(torch.float32)
    counts = [int(loc.shape[0]) for loc in locations_per_level]
    stride_of = torch.cat([torch.full((n,), float(s), device=device) for n, s in zip(counts, strides)])
    range_of = torch.cat([torch.tensor([r], device=device).expand(n, 2) for n, r in zip(counts, ranges)])
    outs = []
    for b, gt in enumerate(gt_boxes_per_image):
        ignore = None if ignore_boxes_per_image is None else ignore_boxes_per_image[b]
        classes = None if gt_classes_per_image is None else gt_classes_per_image[b]
        outs.append(assign_fcos_targets_single(locations, stride_of, range_of, gt, ignore, center_sampling_radius,
                                               classes))
    if not outs:
        num = locations.shape[0]
        return FCOSTargets(torch.zeros(0, num, dtype=torch.long, device=device),
                           torch.zeros(0, num, dtype=torch.bool, device=device), torch.zeros(0, num, 4, device=device),
                           torch.zeros(0, num, device=device), torch.zeros(0, num, dtype=torch.long, device=device))
    labels, ignore, box_targets, centerness, matched = (torch.stack(t) for t in zip(*outs))
    return FCOSTargets(labels, ignore, box_targets, centerness, matched)

"""Keypoint training targets of a batch (Sec. 3.3) and the sampling of the positive locations that
generate dynamic keypoint heads.

- Heatmap target of each (person, keypoint): the one-hot cell :func:`~fcpose.targets.keypoints.encode_heatmap_index`
  (``floor((x - 4) / 8)`` for stride 8) on the P3 grid, supervised where the keypoint is labelled (v > 0).
- Refinement targets: :func:`~fcpose.targets.keypoints.encode_offset_maps` per image (dense within a radius
  of each labelled keypoint, to the nearest keypoint of the same type, in the model's offset unit)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .keypoints import (
    encode_heatmap_index,
    encode_offset_maps,
    encode_truncated_cell,
    gaussian_heatmaps,
    official_grid_size,
)


@dataclass
class KeypointTargets:
    """Keypoint targets of a batch; people are concatenated over images (image 0's first)."""

    heatmap_index: Tensor  # [G_total, K] long: flat cell row * W3 + col of each keypoint's one-hot target
    heatmap_valid: Tensor  # [G_total, K] bool: the keypoint is labelled (v > 0)
    offset_targets: Tensor  # [B, 2K, H3, W3] (dx_k, dy_k) interleaved, in the offset unit
    offset_weights: Tensor  # [B, K, H3, W3] 1 where the refinement offset of keypoint type k is supervised
    gt_image: Tensor  # [G_total] long: image of each person
    gt_start: Tensor  # [B] long: index of each image's first person in G_total

    @property
    def has_keypoints(self) -> Tensor:
        """``[G_total]`` bool: the person has at least one labelled keypoint."""
        return self.heatmap_valid.any(dim=1)


@torch.no_grad()
def assign_keypoint_targets(keypoints_per_image: list[Tensor], height: int, width: int, stride: int,
                            offset_unit: str = "stride", offset_radius: float = 2.0) -> KeypointTargets:
    """Heatmap and refinement targets on the ``height x width`` P3 grid (stride ``stride``) of a batch.

    keypoints_per_image: B x ``[G_b, K, 3]`` (x, y, v) in input pixels. See :class:`KeypointTargets`."""
    if not keypoints_per_image:
        raise ValueError("assign_keypoint_targets needs at least one image")
    device = keypoints_per_image[0].device
    k = int(keypoints_per_image[0].shape[1])
    kpts = [kp.to(device=device, dtype=torch.float32).reshape(-1, k, 3) for kp in keypoints_per_image]
    counts = torch.tensor([kp.shape[0] for kp in kpts], dtype=torch.long, device=device)
    all_kpts = torch.cat(kpts)
    maps = [encode_offset_maps(kp, height, width, stride, offset_unit, offset_radius) for kp in kpts]
    return KeypointTargets(
        heatmap_index=encode_heatmap_index(all_kpts[..., :2], stride, height, width),
        heatmap_valid=all_kpts[..., 2] > 0,
        offset_targets=torch.stack([m[0] for m in maps]),
        offset_weights=torch.stack([m[1] for m in maps]),
        gt_image=torch.repeat_interleave(torch.arange(len(kpts), device=device), counts),
        gt_start=torch.cumsum(counts, 0) - counts,
    )


@torch.no_grad()
def sample_instances(groups: Tensor, scores: Tensor, max_instances: int) -> Tensor:
    """Choose which positive locations generate dynamic heads: at most ``max_instances`` spread evenly over the people,
    the highest-scoring locations of each person first. groups ``[P]`` long (the person each positive location belongs
    to), scores ``[P]`` (confidence) -> ``[N]`` indices into the P locations. Locations are taken round-robin: every
    person's best, then every person's second best, ... (within a round, higher scores first) until ``max_instances``
    are taken, so each person gets ``max_instances // people`` or one more (fewer if it has fewer locations, the rest
    going to the others). Every person gets at least one, so ``N = min(P, max(max_instances, people))``."""
    p = groups.shape[0]
    if p == 0:
        return torch.zeros(0, dtype=torch.long, device=groups.device)
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_group = by_score[torch.sort(groups[by_score], stable=True).indices]  # group-major, score-descending
    g = groups[by_group]
    pos = torch.arange(p, device=groups.device)
    start = torch.ones(p, dtype=torch.bool, device=groups.device)
    start[1:] = g[1:] != g[:-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=0).values
    rank = pos - first  # 0 = the person's best location
    # Round-robin: by rank, then by score within a rank.
    s = scores[by_group]
    order = torch.sort(s, descending=True, stable=True).indices
    order = order[torch.sort(rank[order], stable=True).indices]
    n = min(p, max(int(max_instances), int(start.sum())))
    return by_group[order[:n]]


# ---- The official recipe (AdelaiDet): stride-2 one-hot head targets and Gaussian auxiliary targets
@dataclass
class OfficialKeypointTargets:
    """Keypoint targets of the official training; people concatenated over images (image 0's first). The batch's
    stride-2 grid is ``4 H3 x 4 W3`` (``H3 x W3``: the padded stride-8 grid of the batch); each image's own targets live
    in its top-left ``ceil(h / 32) * 16 x ceil(w / 32) * 16`` part, zeros elsewhere."""

    head_index: Tensor  # [G_total, K] long: flat cell on the batch's stride-2 grid (0 where not valid)
    head_valid: Tensor  # [G_total, K] bool: labelled and inside the image's stride-2 grid
    keypoints: Tensor  # [G_total, K, 3] (x, y, v) input pixels, as given
    boxes: Tensor  # [G_total, 4] xyxy input pixels
    p1: Tensor  # [B, K, 4 H3, 4 W3] max over the image's people of the sigma Gaussians (stride 2)
    p3: Tensor  # [B, K, H3, W3] the same at stride 8 with sigma / 2
    gt_image: Tensor  # [G_total] long
    gt_start: Tensor  # [B] long

    @property
    def has_keypoints(self) -> Tensor:
        return self.head_valid.any(dim=1)


@torch.no_grad()
def assign_official_keypoint_targets(keypoints_per_image: list[Tensor], boxes_per_image: list[Tensor],
                                     image_sizes: list[tuple[int, int]], height: int, width: int,
                                     sigma: float = 1.8) -> OfficialKeypointTargets:
    """Targets of AdelaiDet's FCPose training on the batch's ``height x width`` stride-8 grid.

    keypoints_per_image: B x ``[G_b, K, 3]`` (x, y, v); boxes_per_image: B x ``[G_b, 4]``; image_sizes: (h, w)
    of each image before padding. Head target of (person, keypoint): the one-hot stride-2 cell
    ``(int(x / 2), int(y / 2))``; p1/p3: :func:`~fcpose.targets.keypoints.gaussian_heatmaps` at stride 2
    (``sigma``) and stride 8 (``sigma / 2``) on each image's grid."""
    if not keypoints_per_image:
        raise ValueError("assign_official_keypoint_targets needs at least one image")
    device = keypoints_per_image[0].device
    k = int(keypoints_per_image[0].shape[1])
    h2, w2 = 4 * height, 4 * width
    kpts = [kp.to(device=device, dtype=torch.float32).reshape(-1, k, 3) for kp in keypoints_per_image]
    boxes = [b.to(device=device, dtype=torch.float32).reshape(-1, 4) for b in boxes_per_image]
    p1 = torch.zeros(len(kpts), k, h2, w2, device=device)
    p3 = torch.zeros(len(kpts), k, height, width, device=device)
    index, valid = [], []
    for b, (kp, (ih, iw)) in enumerate(zip(kpts, image_sizes)):
        gh, gw = official_grid_size(ih, iw, 2)
        if gh > h2 or gw > w2:
            raise ValueError(f"image {b} ({ih}x{iw}) is larger than the batch's stride-8 grid {height}x{width}")
        cell, ok = encode_truncated_cell(kp, 2, gh, gw)
        # Re-index from the image's grid to the batch's (same rows, wider row pitch).
        index.append(torch.where(ok, torch.div(cell, gw, rounding_mode="floor") * w2 + cell % gw, cell))
        valid.append(ok)
        p1[b, :, :gh, :gw] = gaussian_heatmaps(kp, 2, gh, gw, sigma)
        p3[b, :, :gh // 4, :gw // 4] = gaussian_heatmaps(kp, 8, gh // 4, gw // 4, sigma / 2)
    counts = torch.tensor([kp.shape[0] for kp in kpts], dtype=torch.long, device=device)
    return OfficialKeypointTargets(
        head_index=torch.cat(index), head_valid=torch.cat(valid), keypoints=torch.cat(kpts),
        boxes=torch.cat(boxes), p1=p1, p3=p3,
        gt_image=torch.repeat_interleave(torch.arange(len(kpts), device=device), counts),
        gt_start=torch.cumsum(counts, 0) - counts)


@torch.no_grad()
def select_heads_per_person(groups: Tensor, images: Tensor, scores: Tensor, max_proposals: int
                            ) -> tuple[Tensor, Tensor]:
    """The official choice of the positive locations that get dynamic heads.

    groups ``[P]`` global person index of each positive location, images ``[P]`` its image, scores ``[P]``
    (``sigmoid(cls) * sigmoid(ctr)``), all in the official positive order (level, image, row-major). With
    ``n = max(groups) + 1`` people, each person keeps at most ``k = max(max_proposals // n, 1)`` locations:
    all of them in their order if it has at most k, else its top-k by score (highest first). Heads are
    ordered image by image, person by person (ascending), as the official code does; unlike it, every image
    of the batch is visited (the official loop stops after 2 images).

    Returns (``[N]`` indices into the P locations, ``[N]`` number of heads of each head's person)."""
    if groups.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=groups.device)
        return empty, empty
    # Tensor operations throughout (one host read, for k): no loop over images or people. People are numbered
    # image by image (``groups`` are global indices), so ascending person order is also image order.
    p = groups.numel()
    num = int(groups.max()) + 1
    k = max(int(max_proposals) // num, 1)
    count = torch.bincount(groups, minlength=num)  # [num] positives per person
    pos = torch.arange(p, device=groups.device)
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_group = by_score[torch.sort(groups[by_score], stable=True).indices]  # person-major, score-descending
    g = groups[by_group]
    start = torch.ones(p, dtype=torch.bool, device=groups.device)
    start[1:] = g[1:] != g[:-1]
    rank = pos - torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=0).values  # 0 = best
    over = count[g] > k  # this person has more than k positives: keep its top k, best first
    kept = by_group[~over | (rank < k)]
    # Within a person: the positive order when all are kept, else the score order (its rank).
    within = torch.empty_like(pos)
    within[by_group] = torch.where(over, rank, by_group)
    kept = kept[torch.sort(groups[kept] * p + within[kept], stable=True).indices]
    return kept, count.clamp(max=k)[groups[kept]]

"""Keypoint training targets of a batch (Sec. 3.3) and the sampling of the positive locations that
generate dynamic keypoint heads.

- Heatmap target of each (person, keypoint): the one-hot cell :func:`~fcpose.targets.keypoints.encode_heatmap_index`
  (``floor((x - 4) / 8)`` for stride 8) on the P3 grid, supervised where the keypoint is labelled (v > 0).
- Refinement targets: :func:`~fcpose.targets.keypoints.encode_offset_maps` per image (dense within a radius
  of each labelled keypoint, to the nearest keypoint of the same type, in the model's offset unit).

Decoders sit beside the encoders: :func:`decode_keypoint_targets` recovers the keypoints from the heatmap
cell and the offset target read there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .keypoints import decode_offsets, encode_heatmap_index, encode_offset_maps, gather_offsets


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

    keypoints_per_image: B x ``[G_b, K, 3]`` (x, y, v) in input pixels. See :class:`KeypointTargets`.
    """
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


def decode_keypoint_targets(targets: KeypointTargets, stride: int, offset_unit: str = "stride") -> Tensor:
    """Inverse of :func:`assign_keypoint_targets`: ``[G_total, K, 3]`` (x, y, valid) from each keypoint's
    heatmap cell refined by the offset *target* at that cell (exact for a keypoint whose cell is supervised
    by it, i.e. no nearer keypoint of the same type)."""
    width = targets.offset_targets.shape[-1]
    offsets = gather_offsets(targets.offset_targets, targets.gt_image, targets.heatmap_index)
    xy = decode_offsets(targets.heatmap_index, offsets, width, stride, offset_unit)
    return torch.cat([xy, targets.heatmap_valid[..., None].to(xy.dtype)], dim=-1)


@torch.no_grad()
def sample_instances(groups: Tensor, scores: Tensor, max_instances: int) -> Tensor:
    """Choose which positive locations generate dynamic heads: at most ``max_instances`` spread evenly over
    the people, the highest-scoring locations of each person first.

    groups ``[P]`` long (the person each positive location belongs to), scores ``[P]`` (confidence) ->
    ``[N]`` indices into the P locations. Locations are taken round-robin: every person's best, then every
    person's second best, ... (within a round, higher scores first) until ``max_instances`` are taken, so
    each person gets ``max_instances // people`` or one more (fewer if it has fewer locations, the rest going
    to the others). Every person gets at least one, so ``N = min(P, max(max_instances, people))``.
    """
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

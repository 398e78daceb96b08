"""FCPose training criterion: dense outputs + targets -> named, weighted losses (Eq. 4).

``L = L_fcos + alpha * L_heatmap + beta * L_reg`` with

- ``loss_cls``: sigmoid focal loss (alpha 0.25, gamma 2) over all locations except ignored (crowd) ones,
  summed and divided by the number of positives (averaged over processes, at least 1);
- ``loss_box``: GIoU loss of the positives' (l, t, r, b), weighted by their centre-ness targets and
  divided by the sum of those (averaged over processes);
- ``loss_ctr``: binary cross-entropy of the centre-ness logits of the positives / number of positives;
- ``loss_heatmap``: alpha x softmax cross-entropy over the ``H3 x W3`` cells of each labelled keypoint of each
  sampled instance (one-hot target ``floor((x - 4) / 8)``), averaged over those (instance, keypoint) pairs;
- ``loss_offset``: beta x mean squared error of the refinement offsets (per coordinate, in the model's
  offset unit) at the supervised cells (within ``offset_radius`` cells of a labelled keypoint).

At most ``max_proposals`` (M = 50) positive locations per batch generate dynamic heads, spread evenly over
the people with labelled keypoints, most confident (``sigmoid(cls) * sigmoid(ctr)``, detached) first
(:func:`~fcpose.targets.pose.sample_instances`). Normalisers are averaged over ``torch.distributed``
processes so that the gradient DDP averages is the gradient of the whole batch. Every trainable
parameter is part of every step's loss graph (a batch without people, or without keypoints, adds zero
times the outputs that would otherwise be unused), so DDP needs no ``find_unused_parameters``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FCPoseConfig
from .distributed import reduce_mean, reduce_sum
from .model.fcpose import FCPose
from .ops.boxes import ltrb_giou
from .structures import DenseOutputs, Instances
from .targets.fcos import FCOSTargets, LocationGrid, assign_fcos_targets, location_grid
from .targets.keypoints import offset_unit_scale
from .targets.locations import compute_locations
from .targets.pose import (
    KeypointTargets,
    OfficialKeypointTargets,
    assign_keypoint_targets,
    assign_official_keypoint_targets,
    sample_instances,
    select_heads_per_person,
)

LOSS_NAMES = ("loss_cls", "loss_box", "loss_ctr", "loss_heatmap", "loss_offset")
# The official recipe, in the official summation order (AdelaiDet's loss_fcos_cls, loss_fcos_loc, loss_fcos_ctr,
# p1_loss, p3_loss, loss_keypoint, loss_direction).
OFFICIAL_LOSS_NAMES = ("loss_cls", "loss_box", "loss_ctr", "loss_p1", "loss_p3", "loss_keypoint", "loss_direction")


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017) of logits and {0, 1} targets of the same shape. ``alpha < 0`` disables
    the class balancing factor."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def _flatten_levels(maps: list[Tensor]) -> Tensor:
    """L x ``[B, C, H_l, W_l]`` -> ``[B, L_total, C]`` (levels concatenated, each row-major)."""
    return torch.cat([m.flatten(2) for m in maps], dim=2).permute(0, 2, 1)


def _positive_scores(dense: DenseOutputs, fcos: FCOSTargets, b_idx: Tensor, l_idx: Tensor) -> Tensor:
    """``sigmoid(cls) * sigmoid(ctr)`` (of the matched class) at locations ``l_idx`` of images ``b_idx``."""
    cls = _flatten_levels(dense.cls_logits)
    ctr = _flatten_levels(dense.centerness)[..., 0]
    labels = fcos.labels[b_idx, l_idx]
    return torch.sigmoid(cls[b_idx, l_idx, labels].float()) * torch.sigmoid(ctr[b_idx, l_idx].float())


def _grid_instances(grid: LocationGrid, b_idx: Tensor, l_idx: Tensor) -> Instances:
    """:class:`Instances` at grid locations ``l_idx`` of images ``b_idx`` (the heads to run in training)."""
    return Instances(batch_index=b_idx, levels=grid.levels[l_idx], positions=grid.positions[l_idx],
                     locations=grid.locations[l_idx])


class FCPoseCriterion:
    """Computes the FCPose losses of a batch; holds no parameters. Only :meth:`from_config` reads a config.

    Call as ``losses = criterion(model, dense, targets, image_sizes)``:

    - ``model``: the :class:`~fcpose.model.FCPose` that produced ``dense`` (or a DDP wrapper of it); its
      ``instance_heatmaps`` runs the controller and the dynamic heads of the sampled instances;
    - ``dense``: :class:`~fcpose.structures.DenseOutputs` of ``model(images)``;
    - ``targets``: one dict per image with ``boxes`` ``[G, 4]`` xyxy, ``keypoints`` ``[G, K, 3]`` (x, y, v)
      and optionally ``ignore_boxes`` ``[C, 4]`` — all in network-input pixels (the transformed image, before
      padding); any device;
    - ``image_sizes``: (h, w) of each image before padding (checked against the batch size; locations in
      the padding are background, as in FCOS).

    Returns ``{"loss_cls", "loss_box", "loss_ctr", "loss_heatmap", "loss_offset"}``: scalar tensors, already
    weighted, to be summed. After a call, :attr:`stats` holds detached counts (``num_pos``,
    ``num_instances``, ``num_keypoints``, ``num_offset_cells``) of this process's batch."""

    def __init__(self, num_keypoints: int, strides: list[int], sizes_of_interest: list[float], *,
                 center_sampling_radius: float = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 heatmap_weight: float = 1.0, offset_weight: float = 1.0, max_proposals: int = 50,
                 offset_unit: str = "stride", offset_radius: float = 2.0, recipe: str = "paper",
                 keypoint_weight: float = 2.5, direction_weight: float = 9.0, distance_norm: float = 12.0,
                 aux_weight: float = 0.2, aux_sigma: float = 1.8):
        if recipe not in ("paper", "official"):
            raise ValueError(f"unknown loss recipe {recipe!r}")
        if len(sizes_of_interest) != len(strides) - 1:
            raise ValueError(f"{len(strides)} levels need {len(strides) - 1} sizes of interest")
        self.num_keypoints = int(num_keypoints)
        self.strides = [int(s) for s in strides]
        self.sizes_of_interest = [float(s) for s in sizes_of_interest]
        self.center_sampling_radius = float(center_sampling_radius)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.heatmap_weight = float(heatmap_weight)
        self.offset_weight = float(offset_weight)
        self.max_proposals = int(max_proposals)
        self.offset_unit = offset_unit
        self.offset_radius = float(offset_radius)
        self.recipe = recipe
        self.keypoint_weight = float(keypoint_weight)
        self.direction_weight = float(direction_weight)
        self.distance_norm = float(distance_norm)
        self.aux_weight = float(aux_weight)
        self.aux_sigma = float(aux_sigma)
        self.stats: dict[str, Tensor] = {}

    @classmethod
    def from_config(cls, cfg: FCPoseConfig) -> FCPoseCriterion:
        """From an :class:`~fcpose.config.FCPoseConfig`."""
        m, loss = cfg.model, cfg.loss
        return cls(cfg.num_keypoints, m.strides, m.fcos.sizes_of_interest,
                   center_sampling_radius=m.fcos.center_sampling_radius, focal_alpha=loss.focal_alpha,
                   focal_gamma=loss.focal_gamma, heatmap_weight=loss.heatmap_weight,
                   offset_weight=loss.offset_weight, max_proposals=loss.max_proposals,
                   offset_unit=m.keypoint.offset_unit, offset_radius=loss.offset_radius, recipe=loss.recipe,
                   keypoint_weight=loss.keypoint_weight, direction_weight=loss.direction_weight,
                   distance_norm=loss.distance_norm, aux_weight=loss.aux_weight, aux_sigma=loss.aux_sigma)

    def _prepare(self, dense: DenseOutputs, targets: list[dict], image_sizes: list[tuple[int, int]] | None = None):
        """(location grid, FCOS targets, keypoint targets of the recipe) of a batch."""
        device = dense.kpt_feats.device
        if list(dense.strides) != self.strides:
            raise ValueError(f"the model's strides {dense.strides} differ from the criterion's {self.strides}")
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in dense.cls_logits]
        grid = location_grid(sizes, self.strides, device)
        k = self.num_keypoints
        boxes = [t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) for t in targets]
        ignore = [t["ignore_boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) if "ignore_boxes" in t
                  else torch.zeros(0, 4, device=device) for t in targets]
        kpts = [t["keypoints"].to(device=device, dtype=torch.float32).reshape(-1, k, 3) if "keypoints" in t
                else torch.zeros(b.shape[0], k, 3, device=device) for t, b in zip(targets, boxes)]
        for b, kp in zip(boxes, kpts):
            if b.shape[0] != kp.shape[0]:
                raise ValueError(f"a target has {b.shape[0]} boxes but {kp.shape[0]} keypoint sets")
        fcos = assign_fcos_targets(list(grid.locations.split(grid.num_per_level)), self.strides,
                                   self.sizes_of_interest, boxes, ignore, self.center_sampling_radius)
        h3, w3 = (int(v) for v in dense.kpt_feats.shape[-2:])
        if self.recipe == "official":
            if image_sizes is None:
                raise ValueError("the official recipe needs the image sizes (its targets live on each image's grid)")
            return grid, fcos, assign_official_keypoint_targets(kpts, boxes, list(image_sizes), h3, w3, self.aux_sigma)
        return grid, fcos, assign_keypoint_targets(kpts, h3, w3, self.strides[0], self.offset_unit, self.offset_radius)

    def __call__(self, model: nn.Module, dense: DenseOutputs, targets: list[dict],
                 image_sizes: list[tuple[int, int]] | None = None) -> dict[str, Tensor]:
        core = getattr(model, "module", model)
        batch = int(dense.kpt_feats.shape[0])
        if len(targets) != batch or (image_sizes is not None and len(image_sizes) != batch):
            raise ValueError(f"{batch} images in the batch but {len(targets)} targets"
                             + ("" if image_sizes is None else f" and {len(image_sizes)} image sizes"))
        grid, fcos, kt = self._prepare(dense, targets, image_sizes)
        losses = self.detection_losses(dense, fcos, grid)
        if self.recipe == "official":
            losses.update(self.auxiliary_losses(dense, kt))
            losses.update(self.official_keypoint_losses(core, dense, grid, fcos, kt))
            return losses
        losses.update(self.keypoint_losses(core, dense, grid, fcos, kt))
        return losses

    def detection_losses(self, dense: DenseOutputs, fcos: FCOSTargets, grid: LocationGrid) -> dict[str, Tensor]:
        """FCOS losses (``loss_cls``, ``loss_box``, ``loss_ctr``) from the assigned targets. The paper recipe takes the
        GIoU of the boxes in pixels; the official one (AdelaiDet ``compute_ious``) the smoothed GIoU
        (``(I + 1) / (U + 1)``) of the distances in stride units."""
        cls = _flatten_levels(dense.cls_logits).float()  # [B, L, C]
        reg = _flatten_levels(dense.box_reg).float()  # [B, L, 4]
        ctr = _flatten_levels(dense.centerness).float()[..., 0]  # [B, L]
        pos = fcos.positive
        num_pos = pos.sum().float()
        num_pos_avg = reduce_mean(num_pos).clamp(min=1.0)

        onehot = torch.zeros_like(cls)
        b_idx, l_idx = pos.nonzero(as_tuple=True)
        onehot[b_idx, l_idx, fcos.labels[b_idx, l_idx]] = 1.0
        focal = sigmoid_focal_loss(cls, onehot, self.focal_alpha, self.focal_gamma)
        loss_cls = (focal * (~fcos.ignore)[..., None]).sum() / num_pos_avg

        ctr_t = fcos.centerness_targets[b_idx, l_idx]
        ctr_norm = reduce_mean(ctr_t.sum()).clamp(min=1e-6)
        pred_ltrb, target_ltrb = reg[b_idx, l_idx], fcos.box_targets[b_idx, l_idx]
        if self.recipe == "official":  # strides are powers of 2: the division is exact
            stride = grid.strides[l_idx][:, None]
            giou = ltrb_giou(pred_ltrb / stride, target_ltrb / stride, smooth=1.0)
        else:
            giou = ltrb_giou(pred_ltrb, target_ltrb)
        loss_box = ((1.0 - giou) * ctr_t).sum() / ctr_norm
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[b_idx, l_idx], ctr_t, reduction="sum") / num_pos_avg
        self.stats["num_pos"] = num_pos.detach()
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}

    @torch.no_grad()
    def sample_positive_instances(self, dense: DenseOutputs, grid, fcos: FCOSTargets,
                                  kt: KeypointTargets) -> tuple[Instances, Tensor]:
        """The positive locations that generate dynamic heads (see :func:`sample_instances`) as
        :class:`~fcpose.structures.Instances`, and the ``[N]`` global index of each one's person."""
        b_idx, l_idx = fcos.positive.nonzero(as_tuple=True)
        gt = kt.gt_start[b_idx] + fcos.matched_gt[b_idx, l_idx]
        keep = kt.has_keypoints[gt]
        b_idx, l_idx, gt = b_idx[keep], l_idx[keep], gt[keep]
        score = _positive_scores(dense, fcos, b_idx, l_idx)
        sel = sample_instances(gt, score, self.max_proposals)
        b_idx, l_idx, gt = b_idx[sel], l_idx[sel], gt[sel]
        instances = _grid_instances(grid, b_idx, l_idx)
        return instances, gt

    def keypoint_losses(self, core: FCPose, dense: DenseOutputs, grid, fcos: FCOSTargets,
                        kt: KeypointTargets) -> dict[str, Tensor]:
        """``loss_heatmap`` (sampled instances' dynamic heads) and ``loss_offset`` (shared refinement map)."""
        instances, gt = self.sample_positive_instances(dense, grid, fcos, kt)
        if len(instances) > 0:
            heatmaps = core.instance_heatmaps(dense, instances).float()  # [N, K, H3, W3]
            logp = F.log_softmax(heatmaps.flatten(2), dim=2)
            nll = -logp.gather(2, kt.heatmap_index[gt][..., None]).squeeze(2)  # [N, K]
            valid = kt.heatmap_valid[gt].float()
            heat_sum = (nll * valid).sum()
            num_kpts = valid.sum()
        else:
            # No instance: run one head anyway (image 0, first P3 cell) so that the controller and the
            # keypoint features stay in the graph with a zero gradient.
            first = torch.zeros(1, dtype=torch.long, device=grid.levels.device)
            dummy = _grid_instances(grid, first, first)
            heat_sum = core.instance_heatmaps(dense, dummy).float().sum() * 0.0
            num_kpts = heat_sum.detach() * 0.0
        loss_heatmap = self.heatmap_weight * heat_sum / reduce_mean(num_kpts).clamp(min=1.0)

        pred = dense.kpt_offsets.float()
        weights = kt.offset_weights.repeat_interleave(2, dim=1)  # [B, 2K, H3, W3]
        sq = (pred - kt.offset_targets).square() * weights
        num_cells = kt.offset_weights.sum()
        loss_offset = self.offset_weight * sq.sum() / reduce_mean(2.0 * num_cells).clamp(min=1.0)
        self.stats.update(num_instances=torch.tensor(len(instances)), num_keypoints=num_kpts.detach(),
                          num_offset_cells=num_cells.detach())
        return {"loss_heatmap": loss_heatmap, "loss_offset": loss_offset}

    # ---- The official recipe (AdelaiDet FCPose; every fact in docs/official_training.md) -----
    @torch.no_grad()
    def select_official_heads(self, dense: DenseOutputs, grid: LocationGrid, fcos: FCOSTargets,
                              kt: OfficialKeypointTargets) -> tuple[Instances, Tensor, Tensor]:
        """The positive locations that get dynamic heads in the official recipe
        (:func:`~fcpose.targets.pose.select_heads_per_person`): every person's positives, cut to its top
        ``max(max_proposals // people, 1)`` by ``sigmoid(cls) * sigmoid(ctr)``; people without labelled keypoints
        included (as officially: they only dilute the normalisers).

        Returns (instances, ``[N]`` global person index, ``[N]`` loss weight ``1 / heads of that person``)."""
        b_idx, l_idx = fcos.positive.nonzero(as_tuple=True)
        # The official positive order: level, then image, then row-major within the level.
        order = torch.argsort(grid.levels[l_idx] * (fcos.positive.shape[0] * fcos.positive.shape[1])
                              + b_idx * fcos.positive.shape[1] + l_idx)
        b_idx, l_idx = b_idx[order], l_idx[order]
        gt = kt.gt_start[b_idx] + fcos.matched_gt[b_idx, l_idx]
        score = _positive_scores(dense, fcos, b_idx, l_idx)
        sel, count = select_heads_per_person(gt, b_idx, score, self.max_proposals)
        b_idx, l_idx, gt = b_idx[sel], l_idx[sel], gt[sel]
        instances = _grid_instances(grid, b_idx, l_idx)
        return instances, gt, 1.0 / count.to(torch.float32)

    def official_keypoint_losses(self, core: FCPose, dense: DenseOutputs, grid: LocationGrid, fcos: FCOSTargets,
                                 kt: OfficialKeypointTargets) -> dict[str, Tensor]:
        """``loss_keypoint`` and ``loss_direction`` of AdelaiDet's ``compute_loss_softmax``.

        For every head n (weight w_n) and labelled keypoint k of its person:

        - keypoint: ``-log softmax`` of the head's stride-8 logits upsampled x4 (bilinear, align_corners False)
          to the batch's stride-2 grid, at the one-hot target cell; summed with weights w, divided by K and by
          the sum of all heads' weights (people without keypoints included);
        - direction: ``sum_cells softmax_8(logits) * (2 sigmoid(d_norm * |p_cell - kpt| / ((w_box + h_box) / 2)) - 1)``
          with ``p_cell`` the cell centre + its predicted offset (pixels); summed with weights w, divided by
          the sum of all weights and by d_norm.

        Both carry the factor ``people here / people over all processes``."""
        instances, gt, weight = self.select_official_heads(dense, grid, fcos, kt)
        k = self.num_keypoints
        # people in this batch, kept on the device (no host read)
        people = (gt.max() + 1).to(torch.float32) if gt.numel() else torch.zeros((), device=weight.device)
        total_people = reduce_sum(people)
        balance = people / total_people.clamp(min=1.0)
        if len(instances) == 0:
            # No positive location in the batch (the official code raises here): run one head anyway so that
            # every parameter stays in the graph, with a zero loss.
            first = torch.zeros(1, dtype=torch.long, device=grid.levels.device)
            dummy = _grid_instances(grid, first, first)
            zero = core.instance_heatmaps(dense, dummy).float().sum() * 0.0 + dense.kpt_offsets.float().sum() * 0.0
            self.stats.update(num_instances=torch.tensor(0), num_keypoints=torch.tensor(0.0))
            return {"loss_keypoint": zero, "loss_direction": zero.clone()}
        logits = core.instance_heatmaps(dense, instances).float()  # [N, K, H3, W3]
        n, _, h3, w3 = logits.shape
        valid = kt.head_valid[gt]  # [N, K]
        sum_w = weight.sum()
        if not bool(valid.any()):
            zero = logits.sum() * 0.0 + dense.kpt_offsets.float().sum() * 0.0
            self.stats.update(num_instances=torch.tensor(n), num_keypoints=torch.tensor(0.0))
            return {"loss_keypoint": zero, "loss_direction": zero.clone()}
        row_w = weight[:, None].expand(n, k)[valid]  # [R]
        # The labelled (head, keypoint) maps are picked before the upsampling (it acts on each map alone), so that
        # only they are upsampled; the fused cross-entropy keeps the 16x larger stride-2 rows to one pass each way.
        rows = F.interpolate(logits[valid][None], scale_factor=4, mode="bilinear", align_corners=False)[0].flatten(1)
        target = kt.head_index[gt][valid]
        ce = F.cross_entropy(rows, target, reduction="none")  # -log softmax at the target cell
        loss_kp = (ce * row_w).sum() / k / sum_w * balance

        prob = torch.softmax(logits.flatten(2), dim=2)[valid]  # [R, H3 W3]
        centres = compute_locations(h3, w3, self.strides[0], device=logits.device)  # [H3 W3, 2]
        offsets = dense.kpt_offsets.float().flatten(2)  # [B, 2K, H3 W3]
        unit = offset_unit_scale(self.offset_unit, self.strides[0])
        if unit != 1.0:  # pixels, as the decoder reads them (the official model predicts pixels: no copy)
            offsets = offsets * unit
        pos = offsets.view(offsets.shape[0], k, 2, h3 * w3).permute(0, 1, 3, 2) + centres  # [B, K, HW, 2]
        kind = torch.arange(k, device=logits.device).expand(n, k)[valid]
        image = instances.batch_index[:, None].expand(n, k)[valid]
        gt_rows = gt[:, None].expand(n, k)[valid]
        dist = (pos[image, kind] - kt.keypoints[gt_rows, kind, None, :2]).square().sum(-1).sqrt()  # [R, HW]
        box = kt.boxes[gt_rows]
        scale = ((box[:, 2] - box[:, 0]) + (box[:, 3] - box[:, 1])) / 2
        squash = (torch.sigmoid(dist / scale[:, None] * self.distance_norm) - 0.5) * 2
        per_row = (squash * prob).sum(dim=1)
        loss_dir = (per_row * row_w / sum_w * balance / self.distance_norm).sum()
        self.stats.update(num_instances=torch.tensor(n), num_keypoints=valid.sum().float())
        return {"loss_keypoint": self.keypoint_weight * loss_kp, "loss_direction": self.direction_weight * loss_dir}

    def auxiliary_losses(self, dense: DenseOutputs, kt: OfficialKeypointTargets) -> dict[str, Tensor]:
        """``loss_p1`` and ``loss_p3``: squared error of the basis module's auxiliary heatmaps (stride 2 and 8)
        against the per-image maximum of the people's Gaussians, each divided by ``max(mean over processes of
        sum(target^2), 1)``, times ``aux_weight``."""
        if not dense.aux_heatmaps:
            raise ValueError("the official recipe needs the basis module's auxiliary heads "
                             "(model.keypoint.aux_heads: true) and a model in training mode")
        out = {}
        for name, target in (("p1", kt.p1), ("p3", kt.p3)):
            pred = dense.aux_heatmaps[name].float()
            norm = reduce_mean((target ** 2).sum()).clamp(min=1.0)
            out[f"loss_{name}"] = self.aux_weight * F.mse_loss(target, pred, reduction="sum") / norm
        return out

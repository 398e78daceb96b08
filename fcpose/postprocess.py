"""Inference decoding: dense outputs -> people with keypoints, in original-image pixels (Sec. 3.4).

1. :func:`select_instances` — per image and level: locations whose class probability exceeds the
   threshold, the ``pre_nms_topk`` best by ``cls * ctr``, their boxes, score ``sqrt(cls * ctr)``; then
   class-agnostic NMS over all levels and the best ``max_detections`` (score ties at the cut are kept).
2. :func:`rescale_boxes` — boxes to the original image, clipped; people with empty boxes are dropped.
3. :func:`decode_keypoints` — the dynamic head of each kept person, the peak of each keypoint heatmap
   refined by the offset read at the peak (:meth:`~fcpose.model.dynamic_head.DynamicKeypointHead.peaks`:
   all people of an image streamed over spatial tiles, no heatmap is stored).

Works for any batch size; the same image gives the same result whatever else is in its batch, as long
as the padded input size is the same (the :class:`~fcpose.Predictor` batches equal-size inputs only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .ops.boxes import clip_boxes, nms, nonempty
from .structures import DenseOutputs, Instances, PoseDetections
from .targets.boxes import decode_ltrb
from .targets.keypoints import decode_offsets, gather_offsets
from .targets.locations import positions_to_locations


@dataclass
class DetectionParams:
    """The test-time knobs (``TestConfig``) as plain values."""

    score_threshold: float = 0.05
    pre_nms_topk: int = 1000
    nms_threshold: float = 0.6
    max_detections: int = 100

    @classmethod
    def from_config(cls, test_cfg) -> DetectionParams:
        return cls(test_cfg.score_threshold, test_cfg.pre_nms_topk, test_cfg.nms_threshold, test_cfg.max_detections)


def _candidates_one_level(cls_logits: Tensor, box_reg: Tensor, centerness: Tensor, stride: int,
                          params: DetectionParams, threshold: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """One image, one level -> (flat cell index ``[n]``, boxes ``[n, 4]`` input pixels, scores ``[n]``).

    ``threshold=False`` skips the score threshold (forced selection for benchmarks)."""
    c, h, w = cls_logits.shape
    prob = torch.sigmoid(cls_logits).reshape(c, h * w).max(dim=0).values  # person probability per cell
    ctr = torch.sigmoid(centerness).reshape(h * w)
    if threshold:
        index = (prob > params.score_threshold).nonzero().squeeze(1)
    else:
        index = torch.arange(h * w, device=prob.device)
    ranking = prob[index] * ctr[index]
    if index.numel() > params.pre_nms_topk:
        top = ranking.topk(params.pre_nms_topk, sorted=False).indices
        index, ranking = index[top], ranking[top]
    row = torch.div(index, w, rounding_mode="floor")
    col = index - row * w
    locations = torch.stack([col * stride + stride // 2, row * stride + stride // 2], dim=1).to(box_reg.dtype)
    ltrb = box_reg.reshape(4, h * w)[:, index].t()
    return index, decode_ltrb(locations, ltrb), torch.sqrt(ranking)


def _forced_keep(box: Tensor, score: Tensor, params: DetectionParams, num: int, candidates_per_person: int) -> Tensor:
    """Exactly ``num`` kept candidates (fewer only if there are fewer), for timing the heads at N people.

    The ``num * candidates_per_person`` best (all if 0) go through the usual NMS, so NMS work grows with N as
    with a trained model (20 per person is an assumption: the FCOS locations around a person that fire); the
    ``num`` best survivors are kept and, if NMS left fewer, the best suppressed candidates fill up to ``num``.
    """
    pool = torch.arange(score.numel(), device=score.device)
    if candidates_per_person > 0 and score.numel() > num * candidates_per_person:
        pool = score.topk(num * candidates_per_person).indices
    keep = pool[nms(box[pool], score[pool], params.nms_threshold)]
    if keep.numel() < num:
        taken = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        taken[keep] = True
        rest = (~taken).nonzero().squeeze(1)
        rest = rest[torch.sort(score[rest], descending=True, stable=True).indices]
        keep = torch.cat([keep, rest[:num - keep.numel()]])
    return keep[:num]


def select_instances(dense: DenseOutputs, params: DetectionParams, force_num: int | None = None,
                     candidates_per_person: int = 20) -> Instances:
    """Threshold, per-level top-k, NMS and top-``max_detections`` for every image -> flat :class:`Instances`
    (grouped by image, decreasing score within an image; boxes in network-input pixels).

    ``force_num=N`` is the benchmark mode: no score threshold and exactly N instances per image (see
    :func:`_forced_keep`), so that time vs number of people can be measured even with random weights.
    """
    device = dense.kpt_feats.device
    widths = torch.tensor([m.shape[-1] for m in dense.cls_logits], device=device)
    parts = []
    for image in range(dense.kpt_feats.shape[0]):
        indices, boxes, scores, levels = [], [], [], []
        for level, stride in enumerate(dense.strides):
            idx, bx, sc = _candidates_one_level(dense.cls_logits[level][image].float(),
                                                dense.box_reg[level][image].float(),
                                                dense.centerness[level][image].float(), stride, params,
                                                threshold=force_num is None)
            indices.append(idx)
            boxes.append(bx)
            scores.append(sc)
            levels.append(torch.full_like(idx, level))
        index, box, score, level = torch.cat(indices), torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        if force_num is not None:
            keep = _forced_keep(box, score, params, force_num, candidates_per_person)
        else:
            keep = nms(box, score, params.nms_threshold)
            if keep.numel() > params.max_detections:
                # Keep every box scoring at least the max_detections-th best score (ties are kept).
                cut = score[keep][params.max_detections - 1]
                keep = keep[score[keep] >= cut]
        index, level = index[keep], level[keep]
        row = torch.div(index, widths[level], rounding_mode="floor")
        col = index - row * widths[level]
        parts.append((torch.full_like(index, image), level, torch.stack([row, col], dim=1), box[keep], score[keep]))
    batch_index, level, positions, boxes, scores = (torch.cat(p) for p in zip(*parts))
    strides = torch.tensor(dense.strides, device=device)[level]
    return Instances(batch_index=batch_index, levels=level, positions=positions,
                     locations=positions_to_locations(positions, strides), boxes=boxes, scores=scores)


def rescale_boxes(instances: Instances, input_sizes: list[tuple[int, int]], output_sizes: list[tuple[int, int]],
                  drop_empty: bool = True) -> tuple[Instances, Tensor]:
    """Scale boxes from network-input to output-image pixels, clip them, drop empty ones (unless told not to).

    input_sizes: per image (h, w) of the resized image the network saw (before padding); output_sizes:
    (h, w) of the images the results refer to. Returns the kept instances (boxes replaced by the output
    boxes) and their ``[N, 2]`` (sx, sy) scale factors.
    """
    device = instances.boxes.device
    scale = torch.tensor([[ow / iw, oh / ih] for (ih, iw), (oh, ow) in zip(input_sizes, output_sizes)],
                         dtype=torch.float32, device=device).reshape(-1, 2)
    limits = torch.tensor([[oh, ow] for oh, ow in output_sizes], dtype=torch.float32, device=device).reshape(-1, 2)
    s = scale[instances.batch_index]
    lim = limits[instances.batch_index]
    boxes = clip_boxes(instances.boxes * s.repeat(1, 2), lim[:, 0], lim[:, 1])
    keep = nonempty(boxes) if drop_empty else torch.ones(boxes.shape[0], dtype=torch.bool, device=device)
    kept = instances.index(keep)
    kept.boxes = boxes[keep]
    return kept, s[keep]


def decode_keypoints(model, dense: DenseOutputs, instances: Instances, tile_bytes: int | None = None) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y in network-input pixels, score) of ``instances``, in float32.

    Per keypoint: the arg-max cell of the instance's heatmap (no upsampling), refined by the shared
    offsets at that cell; the score is the peak's softmax probability (or its raw logit, per the model).
    """
    feats = dense.kpt_feats
    n, k = len(instances), model.num_keypoints
    out = torch.zeros(n, k, 3, device=feats.device)
    if n == 0:
        return out
    width, stride = feats.shape[-1], dense.strides[0]
    params = model.instance_params(dense, instances).float()
    norms = model.rel_coord_norm[instances.levels]
    offsets_map = dense.kpt_offsets.float()
    for image in torch.unique(instances.batch_index).tolist():
        sel = (instances.batch_index == image).nonzero().squeeze(1)
        cell, peak, total = model.dynamic_head.peaks(feats[image], params[sel], instances.locations[sel],
                                                     norms[sel], tile_bytes)
        offsets = gather_offsets(offsets_map, instances.batch_index[sel], cell)
        out[sel, :, :2] = decode_offsets(cell, offsets, width, stride, model.offset_unit)
        out[sel, :, 2] = total.reciprocal() if model.keypoint_score == "softmax" else peak
    return out


def split_per_image(instances: Instances, keypoints: Tensor, output_sizes: list[tuple[int, int]]
                    ) -> list[PoseDetections]:
    """Flat instances (boxes in output pixels) and their ``[N, K, 3]`` keypoints -> one
    :class:`PoseDetections` per image."""
    results = []
    for image, size in enumerate(output_sizes):
        sel = instances.batch_index == image
        results.append(PoseDetections(boxes=instances.boxes[sel], scores=instances.scores[sel],
                                      keypoints=keypoints[sel], image_size=(int(size[0]), int(size[1])),
                                      levels=instances.levels[sel], locations=instances.locations[sel]))
    return results


def detections_from_instances(model, dense: DenseOutputs, instances: Instances, scale: Tensor,
                              output_sizes: list[tuple[int, int]], tile_bytes: int | None = None
                              ) -> list[PoseDetections]:
    """Decode the keypoints of ``instances`` (boxes already in output pixels, ``scale`` their ``[N, 2]``
    input-to-output factors from :func:`rescale_boxes`) -> one :class:`PoseDetections` per image."""
    keypoints = decode_keypoints(model, dense, instances, tile_bytes)
    keypoints[:, :, :2] *= scale[:, None, :]
    return split_per_image(instances, keypoints, output_sizes)


@torch.no_grad()
def postprocess(model, dense: DenseOutputs, input_sizes: list[tuple[int, int]],
                output_sizes: list[tuple[int, int]] | None = None, params: DetectionParams | None = None,
                tile_bytes: int | None = None) -> list[PoseDetections]:
    """Dense outputs of a batch -> one :class:`PoseDetections` per image, in ``output_sizes`` pixels
    (default: the network-input sizes, i.e. no rescaling)."""
    params = params or DetectionParams()
    output_sizes = output_sizes or input_sizes
    instances, scale = rescale_boxes(select_instances(dense, params), input_sizes, output_sizes)
    return detections_from_instances(model, dense, instances, scale, output_sizes, tile_bytes)

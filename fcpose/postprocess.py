"""Inference decoding: dense outputs -> people with keypoints, in original-image pixels (Sec. 3.4).

1. :func:`select_instances` — per image and level: locations whose class probability exceeds the
   threshold, the ``pre_nms_topk`` best by ``cls * ctr``, their boxes, score ``sqrt(cls * ctr)``; then
   class-agnostic NMS over all levels and the best ``max_detections`` (score ties at the cut are kept).
2. :func:`rescale_boxes` — boxes to the original image, clipped; people with empty boxes are dropped.
3. :func:`decode_keypoints` — the dynamic head of each kept person, the peak of each keypoint heatmap
   refined by the offset read at the peak, in chunks of instances so memory stays bounded.

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
from .targets.keypoints import decode_heatmap_peaks, decode_offsets, gather_offsets
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
                          params: DetectionParams) -> tuple[Tensor, Tensor, Tensor]:
    """One image, one level -> (flat cell index ``[n]``, boxes ``[n, 4]`` input pixels, scores ``[n]``)."""
    c, h, w = cls_logits.shape
    prob = torch.sigmoid(cls_logits).reshape(c, h * w).max(dim=0).values  # person probability per cell
    ctr = torch.sigmoid(centerness).reshape(h * w)
    index = (prob > params.score_threshold).nonzero().squeeze(1)
    ranking = prob[index] * ctr[index]
    if index.numel() > params.pre_nms_topk:
        top = ranking.topk(params.pre_nms_topk, sorted=False).indices
        index, ranking = index[top], ranking[top]
    row = torch.div(index, w, rounding_mode="floor")
    col = index - row * w
    locations = torch.stack([col * stride + stride // 2, row * stride + stride // 2], dim=1).to(box_reg.dtype)
    ltrb = box_reg.reshape(4, h * w)[:, index].t()
    return index, decode_ltrb(locations, ltrb), torch.sqrt(ranking)


def select_instances(dense: DenseOutputs, params: DetectionParams) -> Instances:
    """Threshold, per-level top-k, NMS and top-``max_detections`` for every image -> flat :class:`Instances`
    (grouped by image, decreasing score within an image; boxes in network-input pixels)."""
    device = dense.kpt_feats.device
    batch_size = dense.kpt_feats.shape[0]
    parts = []
    for image in range(batch_size):
        indices, boxes, scores, levels = [], [], [], []
        for level, stride in enumerate(dense.strides):
            idx, bx, sc = _candidates_one_level(dense.cls_logits[level][image].float(),
                                                dense.box_reg[level][image].float(),
                                                dense.centerness[level][image].float(), stride, params)
            indices.append(idx)
            boxes.append(bx)
            scores.append(sc)
            levels.append(torch.full_like(idx, level))
        index, box, score, level = torch.cat(indices), torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        keep = nms(box, score, params.nms_threshold)
        if keep.numel() > params.max_detections:
            # Keep every box scoring at least the max_detections-th best score (ties are kept).
            cut = score[keep][params.max_detections - 1]
            keep = keep[score[keep] >= cut]
        widths = torch.tensor([dense.cls_logits[lv].shape[-1] for lv in range(dense.num_levels)], device=device)
        index, level = index[keep], level[keep]
        row = torch.div(index, widths[level], rounding_mode="floor")
        col = index - row * widths[level]
        parts.append((torch.full_like(index, image), level, torch.stack([row, col], dim=1), box[keep], score[keep]))
    if not parts:
        return _empty_instances(device)
    batch_index, level, positions, boxes, scores = (torch.cat(p) for p in zip(*parts))
    strides = torch.tensor(dense.strides, device=device)[level]
    return Instances(batch_index=batch_index, levels=level, positions=positions,
                     locations=positions_to_locations(positions, strides), boxes=boxes, scores=scores)


def _empty_instances(device: torch.device) -> Instances:
    z = torch.zeros(0, dtype=torch.long, device=device)
    return Instances(batch_index=z, levels=z, positions=z.reshape(0, 2), locations=torch.zeros(0, 2, device=device),
                     boxes=torch.zeros(0, 4, device=device), scores=torch.zeros(0, device=device))


def decode_keypoints(model, dense: DenseOutputs, instances: Instances, chunk_size: int = 32) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y in network-input pixels, score) of ``instances``.

    Per keypoint: the arg-max cell of the instance's heatmap (no upsampling), refined by the shared
    offsets at that cell; the score is the peak's softmax probability (or its raw logit, per the model).
    Instances go through the dynamic heads ``chunk_size`` at a time.
    """
    n = len(instances)
    k = model.num_keypoints
    out = dense.kpt_feats.new_zeros(n, k, 3, dtype=torch.float32)
    _, _, _, width = dense.kpt_feats.shape
    stride = dense.strides[0]
    for start in range(0, n, chunk_size):
        part = instances.index(slice(start, start + chunk_size))
        heatmaps = model.instance_heatmaps(dense, part).float()
        peak, score = decode_heatmap_peaks(heatmaps, model.keypoint_score)
        offsets = gather_offsets(dense.kpt_offsets.float(), part.batch_index, peak)
        out[start:start + chunk_size, :, :2] = decode_offsets(peak, offsets, width, stride, model.offset_unit)
        out[start:start + chunk_size, :, 2] = score
    return out


def rescale_boxes(instances: Instances, input_sizes: list[tuple[int, int]],
                  output_sizes: list[tuple[int, int]]) -> tuple[Instances, Tensor]:
    """Scale boxes from network-input to output-image pixels, clip them, drop empty ones.

    input_sizes: per image (h, w) of the resized image the network saw (before padding); output_sizes:
    (h, w) of the images the results refer to. Returns the kept instances (boxes replaced by the output
    boxes) and their ``[N, 2]`` (sx, sy) scale factors.
    """
    device = instances.boxes.device
    scale = torch.tensor([[ow / iw, oh / ih] for (ih, iw), (oh, ow) in zip(input_sizes, output_sizes)],
                         dtype=torch.float32, device=device).reshape(-1, 2)
    limits = torch.tensor([[oh, ow] for oh, ow in output_sizes], dtype=torch.float32, device=device).reshape(-1, 2)
    s = scale[instances.batch_index]
    boxes = instances.boxes * s.repeat(1, 2)
    lim = limits[instances.batch_index]
    boxes = clip_boxes(boxes, lim[:, 0], lim[:, 1])
    keep = nonempty(boxes)
    kept = instances.index(keep)
    kept.boxes = boxes[keep]
    return kept, s[keep]


@torch.no_grad()
def postprocess(model, dense: DenseOutputs, input_sizes: list[tuple[int, int]],
                output_sizes: list[tuple[int, int]] | None = None, params: DetectionParams | None = None,
                chunk_size: int = 32) -> list[PoseDetections]:
    """Dense outputs of a batch -> one :class:`PoseDetections` per image, in ``output_sizes`` pixels
    (default: the network-input sizes, i.e. no rescaling)."""
    params = params or DetectionParams()
    output_sizes = output_sizes or input_sizes
    instances = select_instances(dense, params)
    instances, scale = rescale_boxes(instances, input_sizes, output_sizes)
    keypoints = decode_keypoints(model, dense, instances, chunk_size)
    keypoints[:, :, :2] *= scale[:, None, :]
    results = []
    for image, size in enumerate(output_sizes):
        sel = instances.batch_index == image
        results.append(PoseDetections(boxes=instances.boxes[sel], scores=instances.scores[sel],
                                      keypoints=keypoints[sel], image_size=(int(size[0]), int(size[1])),
                                      levels=instances.levels[sel], locations=instances.locations[sel]))
    return results

"""Inference decoding: dense outputs -> people with keypoints, in original-image pixels (Sec. 3.4).

:class:`PostProcessor` is the one home of that decision. It owns the test-time parameters
(:class:`~fcpose.config.TestConfig`), the strides, the relative-coordinate divisors, the offset unit and
the keypoint score type, and exposes the stages that every consumer composes — the
:class:`~fcpose.Predictor` and its runner, ``fcpose eval``, ``fcpose bench``, the ONNX/OpenVINO export and
their predictors:

1. :meth:`PostProcessor.select` — per image and level: locations whose class probability exceeds the
   threshold, the ``pre_nms_topk`` best by ``cls * ctr``, their boxes, score ``sqrt(cls * ctr)``; then
   class-agnostic NMS over all levels and the best ``max_detections`` (score ties at the cut are kept).
2. :meth:`PostProcessor.keypoints` — given theta of the selected people (the model's
   :meth:`~fcpose.model.fcpose.FCPose.instance_params`), the peak of each keypoint heatmap refined by the
   offset read at the peak (:meth:`~fcpose.model.dynamic_head.DynamicKeypointHead.peaks`: all people of an
   image streamed over spatial tiles, no heatmap is stored).
3. :meth:`PostProcessor.rescale` — boxes and keypoints to the original image, boxes clipped; people with
   empty boxes are dropped. :meth:`PostProcessor.split` — one :class:`PoseDetections` per image.

:meth:`PostProcessor.people` (1 + 2) and ``__call__`` (1 + 2 + 3) are the only compositions.
``traceable=True`` selects the static-shape form of 1 and 2 that ``torch.export`` can trace (batch 1,
the score threshold a tensor, NMS as one operator exported as ONNX ``NonMaxSuppression``, one tile):
the same computation, except that boxes tied with the ``max_detections``-th score are not all kept.

Works for any batch size; the same image gives the same result whatever else is in its batch, as long
as the padded input size is the same (the :class:`~fcpose.Predictor` batches equal-size inputs only).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .config import FCPoseConfig, TestConfig
from .model.dynamic_head import DynamicKeypointHead
from .model.fcpose import FCPose, build_dynamic_head
from .ops.boxes import clip_boxes, nms, nonempty, traceable_nms
from .structures import DenseOutputs, Instances, PoseDetections
from .targets.boxes import decode_ltrb
from .targets.keypoints import decode_offsets, gather_offsets
from .targets.locations import flat_to_locations, positions_to_locations

__all__ = ["PostProcessor", "build_postprocessor", "TRACE_SCORE_FLOOR"]

Size = tuple[int, int]
StageHook = Callable[[str], None]
TRACE_SCORE_FLOOR = -0.5  # traceable selection: candidates below the threshold score -1 and NMS drops them


class PostProcessor:
    """Dense outputs -> people (see the module docstring). Parameter-free apart from its settings.

    ``dynamic_head``: the (parameter-free) evaluator of the keypoint heads; ``strides``: of the pyramid
    levels; ``rel_coord_norm``: the divisor of the relative coordinates per level; ``offset_unit``:
    "stride" or "pixel"; ``keypoint_score``: "softmax" (peak probability) or "logit" (official).
    """

    def __init__(self, dynamic_head: DynamicKeypointHead, *, strides: Sequence[int], rel_coord_norm: Sequence[float],
                 offset_unit: str = "stride", keypoint_score: str = "softmax", params: TestConfig | None = None,
                 tile_bytes: int | None = None):
        self.dynamic_head = dynamic_head
        self.strides = [int(s) for s in strides]
        self.rel_coord_norm = [float(v) for v in rel_coord_norm]
        self.offset_unit = offset_unit
        self.keypoint_score = keypoint_score
        self.params = params or TestConfig()
        self.tile_bytes = tile_bytes

    @classmethod
    def from_model(cls, model: FCPose, params: TestConfig | None = None) -> PostProcessor:
        """The post-processor matching ``model``'s heads and conventions (``params`` default: the model's
        config's ``test`` section, else :class:`TestConfig` defaults)."""
        if params is None:
            params = dataclasses.replace(model.cfg.test) if model.cfg is not None else TestConfig()
        return cls(model.dynamic_head, strides=model.strides, rel_coord_norm=model.rel_coord_norm.tolist(),
                   offset_unit=model.offset_unit, keypoint_score=model.keypoint_score, params=params)

    @classmethod
    def from_config(cls, cfg: FCPoseConfig) -> PostProcessor:
        m = cfg.model
        return cls(build_dynamic_head(cfg), strides=m.strides, rel_coord_norm=m.rel_coord_norm,
                   offset_unit=m.keypoint.offset_unit, keypoint_score=m.keypoint.score,
                   params=dataclasses.replace(cfg.test))

    @property
    def num_keypoints(self) -> int:
        return self.dynamic_head.num_keypoints

    def with_params(self, **changes) -> PostProcessor:
        """A copy with some test-time parameters changed (e.g. ``score_threshold=0.3``)."""
        out = copy.copy(self)
        out.params = dataclasses.replace(self.params, **changes)
        return out

    # ------------------------------------------------------------------------------------------
    # The compositions
    # ------------------------------------------------------------------------------------------
    def people(self, model: FCPose, dense: DenseOutputs, *, score_threshold: float | Tensor | None = None,
               force_num: int | None = None, candidates_per_person: int = 20, traceable: bool = False,
               on_stage: StageHook | None = None) -> tuple[Instances, Tensor]:
        """Selected people and their ``[N, K, 3]`` keypoints, both in network-input pixels.

        ``on_stage(name)`` is called after "select" and after "keypoints" (the benchmark times the stages).
        """
        instances = self.select(dense, score_threshold=score_threshold, force_num=force_num,
                                candidates_per_person=candidates_per_person, traceable=traceable)
        if on_stage is not None:
            on_stage("select")
        keypoints = self.keypoints(dense, instances, model.instance_params(dense, instances), traceable=traceable)
        if on_stage is not None:
            on_stage("keypoints")
        return instances, keypoints

    @torch.no_grad()
    def __call__(self, model: FCPose, dense: DenseOutputs, input_sizes: Sequence[Size],
                 output_sizes: Sequence[Size] | None = None, *, force_num: int | None = None,
                 candidates_per_person: int = 20, on_stage: StageHook | None = None) -> list[PoseDetections]:
        """Dense outputs of a batch -> one :class:`PoseDetections` per image, in ``output_sizes`` pixels
        (default: the network-input sizes, i.e. no rescaling). ``input_sizes``: per image (h, w) of the
        resized image the network saw (before padding)."""
        output_sizes = list(output_sizes or input_sizes)
        instances, keypoints = self.people(model, dense, force_num=force_num,
                                           candidates_per_person=candidates_per_person, on_stage=on_stage)
        instances, keypoints = self.rescale(instances, keypoints, input_sizes, output_sizes,
                                            drop_empty=force_num is None)
        return self.split(instances, keypoints, output_sizes)

    # ------------------------------------------------------------------------------------------
    # Stage 1: selection
    # ------------------------------------------------------------------------------------------
    def select(self, dense: DenseOutputs, *, score_threshold: float | Tensor | None = None,
               force_num: int | None = None, candidates_per_person: int = 20, traceable: bool = False) -> Instances:
        """Threshold, per-level top-k, NMS and top-``max_detections`` for every image -> flat :class:`Instances`
        (grouped by image, decreasing score within an image; boxes in network-input pixels).

        ``force_num=N`` is the benchmark mode: no score threshold and exactly N instances per image (see
        :func:`_forced_keep`), so that time vs number of people can be measured even with random weights.
        ``traceable=True``: the export form (batch 1, ``score_threshold`` may be a 0-d tensor).
        """
        thr = self.params.score_threshold if score_threshold is None else score_threshold
        if traceable:
            return self._select_traceable(dense, thr)
        device = dense.kpt_feats.device
        widths = torch.tensor([m.shape[-1] for m in dense.cls_logits], device=device)
        parts = []
        for image in range(dense.kpt_feats.shape[0]):
            indices, boxes, scores, levels = [], [], [], []
            for level in range(len(dense.strides)):
                prob, ctr = self._probabilities(dense, level, image)
                if force_num is None:
                    index = (prob > thr).nonzero().squeeze(1)
                else:
                    index = torch.arange(prob.numel(), device=prob.device)
                ranking = prob[index] * ctr[index]
                if index.numel() > self.params.pre_nms_topk:
                    top = ranking.topk(self.params.pre_nms_topk, sorted=False).indices
                    index, ranking = index[top], ranking[top]
                boxes.append(self._boxes(dense, level, image, index))
                indices.append(index)
                scores.append(torch.sqrt(ranking))
                levels.append(torch.full_like(index, level))
            index, box, score, level = torch.cat(indices), torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            if force_num is not None:
                keep = _forced_keep(box, score, self.params.nms_threshold, force_num, candidates_per_person)
            else:
                keep = nms(box, score, self.params.nms_threshold)
                if keep.numel() > self.params.max_detections:
                    # Keep every box scoring at least the max_detections-th best score (ties are kept).
                    cut = score[keep][self.params.max_detections - 1]
                    keep = keep[score[keep] >= cut]
            index, level = index[keep], level[keep]
            row = torch.div(index, widths[level], rounding_mode="floor")
            col = index - row * widths[level]
            parts.append((torch.full_like(index, image), level, torch.stack([row, col], dim=1), box[keep], score[keep]))
        batch_index, level, positions, boxes, scores = (torch.cat(p) for p in zip(*parts))
        strides = torch.tensor(dense.strides, device=device)[level]
        return Instances(batch_index=batch_index, levels=level, positions=positions,
                         locations=positions_to_locations(positions, strides), boxes=boxes, scores=scores)

    def _select_traceable(self, dense: DenseOutputs, threshold: float | Tensor) -> Instances:
        """:meth:`select` for one image with static shapes: below-threshold candidates get score -1 instead
        of being removed, each level keeps ``min(pre_nms_topk, H * W)``, NMS is :func:`traceable_nms`."""
        boxes, scores, cells, levels, widths = [], [], [], [], []
        for level in range(len(dense.strides)):
            prob, ctr = self._probabilities(dense, level, 0)
            rank = torch.where(prob > threshold, prob * ctr, torch.full_like(prob, -1.0))
            top, index = rank.topk(min(self.params.pre_nms_topk, rank.shape[0]))
            boxes.append(self._boxes(dense, level, 0, index))
            scores.append(torch.where(top >= 0, torch.sqrt(top.clamp(min=0)), torch.full_like(top, -1.0)))
            cells.append(index)
            levels.append(torch.full_like(index, level))
            widths.append(torch.full_like(index, dense.cls_logits[level].shape[-1]))
        box, score, cell, level, width = (torch.cat(v) for v in (boxes, scores, cells, levels, widths))
        keep = traceable_nms(box, score, self.params.nms_threshold, TRACE_SCORE_FLOOR, self.params.max_detections)
        cell, level, width = cell[keep], level[keep], width[keep]
        row = torch.div(cell, width, rounding_mode="floor")
        positions = torch.stack([row, cell - row * width], dim=1)
        strides = torch.tensor(dense.strides, device=cell.device)[level]
        return Instances(batch_index=torch.zeros_like(cell), levels=level, positions=positions,
                         locations=positions_to_locations(positions, strides), boxes=box[keep], scores=score[keep])

    @staticmethod
    def _probabilities(dense: DenseOutputs, level: int, image: int) -> tuple[Tensor, Tensor]:
        """Person probability (max over classes) and centre-ness of every cell of one level, flat, float32."""
        cls = dense.cls_logits[level][image].float()
        prob = torch.sigmoid(cls).reshape(cls.shape[0], -1).max(dim=0).values
        return prob, torch.sigmoid(dense.centerness[level][image].float()).reshape(-1)

    @staticmethod
    def _boxes(dense: DenseOutputs, level: int, image: int, index: Tensor) -> Tensor:
        """Boxes (input pixels) predicted at flat cells ``index`` of one level."""
        reg = dense.box_reg[level][image].float()
        centres = flat_to_locations(index, reg.shape[-1], dense.strides[level])
        return decode_ltrb(centres, reg.reshape(4, -1)[:, index].t())

    # ------------------------------------------------------------------------------------------
    # Stage 2: keypoints
    # ------------------------------------------------------------------------------------------
    def keypoints(self, dense: DenseOutputs, instances: Instances, theta: Tensor, *, traceable: bool = False,
                  tile_bytes: int | None = None) -> Tensor:
        """Keypoints ``[N, K, 3]`` (x, y in network-input pixels, score) of ``instances``, float32.

        ``theta``: their dynamic-head parameters ``[N, P]``. Per keypoint: the arg-max cell of the heatmap
        (no upsampling), refined by the shared offsets at that cell; the score is the peak's softmax
        probability or its raw logit (``keypoint_score``).
        """
        feats = dense.kpt_feats
        width, stride = feats.shape[-1], dense.strides[0]
        norms = torch.tensor(self.rel_coord_norm, device=feats.device)[instances.levels]
        theta = theta.float()
        offsets_map = dense.kpt_offsets.float()
        if traceable:
            cell, peak, total = self.dynamic_head.peaks(feats[0], theta, instances.locations, norms, traceable=True)
            return self._decode(cell, peak, total, offsets_map, instances.batch_index, width, stride)
        n = len(instances)
        out = torch.zeros(n, self.num_keypoints, 3, device=feats.device)
        if n == 0:
            return out
        for image in torch.unique(instances.batch_index).tolist():
            sel = (instances.batch_index == image).nonzero().squeeze(1)
            cell, peak, total = self.dynamic_head.peaks(feats[image], theta[sel], instances.locations[sel],
                                                        norms[sel], tile_bytes or self.tile_bytes)
            out[sel] = self._decode(cell, peak, total, offsets_map, instances.batch_index[sel], width, stride)
        return out

    def _decode(self, cell: Tensor, peak: Tensor, total: Tensor, offsets_map: Tensor, batch_index: Tensor,
                width: int, stride: int) -> Tensor:
        """Peak cells ``[n, K]`` + offsets there -> ``[n, K, 3]`` (x, y, score)."""
        offsets = gather_offsets(offsets_map, batch_index, cell)
        xy = decode_offsets(cell, offsets, width, stride, self.offset_unit)
        score = total.reciprocal() if self.keypoint_score == "softmax" else peak
        return torch.cat([xy, score[:, :, None]], dim=2)

    # ------------------------------------------------------------------------------------------
    # Stage 3: to the images
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def rescale(instances: Instances, keypoints: Tensor, input_sizes: Sequence[Size], output_sizes: Sequence[Size],
                drop_empty: bool = True) -> tuple[Instances, Tensor]:
        """Boxes and keypoints from network-input to output-image pixels, boxes clipped, people with empty
        boxes dropped (unless told not to).

        input_sizes: per image (h, w) of the resized image the network saw (before padding); output_sizes:
        (h, w) of the images the results refer to.
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
        keypoints = keypoints[keep]  # a new tensor (boolean indexing copies): scaled in place below
        keypoints[:, :, :2] *= s[keep][:, None, :]
        return kept, keypoints

    @staticmethod
    def split(instances: Instances, keypoints: Tensor, output_sizes: Sequence[Size]) -> list[PoseDetections]:
        """Flat instances (boxes in output pixels) and their ``[N, K, 3]`` keypoints -> one
        :class:`PoseDetections` per image."""
        results = []
        for image, size in enumerate(output_sizes):
            sel = instances.batch_index == image
            results.append(PoseDetections(boxes=instances.boxes[sel], scores=instances.scores[sel],
                                          keypoints=keypoints[sel], image_size=(int(size[0]), int(size[1])),
                                          levels=instances.levels[sel], locations=instances.locations[sel]))
        return results


def _forced_keep(box: Tensor, score: Tensor, nms_threshold: float, num: int, candidates_per_person: int) -> Tensor:
    """Exactly ``num`` kept candidates (fewer only if there are fewer), for timing the heads at N people.

    The ``num * candidates_per_person`` best (all if 0) go through the usual NMS, so NMS work grows with N as
    with a trained model (20 per person is an assumption: the FCOS locations around a person that fire); the
    ``num`` best survivors are kept and, if NMS left fewer, the best suppressed candidates fill up to ``num``.
    """
    pool = torch.arange(score.numel(), device=score.device)
    if candidates_per_person > 0 and score.numel() > num * candidates_per_person:
        pool = score.topk(num * candidates_per_person).indices
    keep = pool[nms(box[pool], score[pool], nms_threshold)]
    if keep.numel() < num:
        taken = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        taken[keep] = True
        rest = (~taken).nonzero().squeeze(1)
        rest = rest[torch.sort(score[rest], descending=True, stable=True).indices]
        keep = torch.cat([keep, rest[:num - keep.numel()]])
    return keep[:num]


def build_postprocessor(config: FCPoseConfig) -> PostProcessor:
    """The post-processor of a config (the sibling of :func:`~fcpose.model.fcpose.build_model` and
    :meth:`~fcpose.loss.FCPoseCriterion.from_config`)."""
    return PostProcessor.from_config(config)

"""Inference decoding: dense outputs -> people with keypoints, in original-image pixels (Sec. 3.4).

:class:`PostProcessor` owns the test-time parameters, strides, relative-coordinate divisors, offset unit and
keypoint score type, and the stages every consumer (Predictor and runner, eval, bench, the exports) composes:

1. :meth:`~PostProcessor.select` — per image and level, locations above the class threshold, the
   ``pre_nms_topk`` best by ``cls * ctr``, their boxes, score ``sqrt(cls * ctr)``; then class-agnostic NMS over
   all levels and the best ``max_detections`` (score ties at the cut kept). Hooks: ``candidates``, ``keep``.
2. :meth:`~PostProcessor.keypoints` — each keypoint's heatmap peak (streamed over tiles, no heatmap stored)
   refined by the offset read there, from the selected people's theta (``FCPose.instance_params``).
3. :meth:`~PostProcessor.rescale` (to the original image, boxes clipped, empty ones dropped) and ``split``.

``people`` (1 + 2) and ``__call__`` (1 + 2 + 3, shaped like DETR's ``PostProcess.forward``) compose them.
Two static-shape forms of 1 and 2 share :meth:`~PostProcessor.fixed_candidates`: ``traceable=True`` (what the
ONNX/OpenVINO export traces: batch 1, NMS as one operator; boxes tied with the ``max_detections``-th score are
not all kept) and :meth:`~PostProcessor.fixed` (the GPU's sync-free, CUDA-graph-capturable form: shapes fixed
by the input, :class:`~fcpose.structures.PeopleSlots`, :func:`~fcpose.ops.boxes.nms_fixed`), whose slots
:meth:`~PostProcessor.finish` turns into the same detections as ``__call__`` when they are ``exact``.

An image gives the same result whatever else is in its batch, as long as the padded size is the same."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .config import FCPoseConfig, TestConfig
from .model.dynamic_head import DynamicKeypointHead
from .model.fcpose import FCPose, build_dynamic_head
from .ops.boxes import NMS_ROUNDS, clip_boxes, nms, nms_fixed, nonempty, traceable_nms
from .structures import DenseOutputs, Instances, PeopleSlots, PoseDetections
from .targets.boxes import decode_ltrb
from .targets.keypoints import decode_offsets, gather_offsets
from .targets.locations import flat_to_locations, flat_to_positions, positions_to_locations

__all__ = ["PostProcessor", "TRACE_SCORE_FLOOR"]

Size = tuple[int, int]
StageHook = Callable[[str], None]
TRACE_SCORE_FLOOR = -0.5  # traceable selection: candidates below the threshold score -1 and NMS drops them


class PostProcessor:
    """Dense outputs -> people (see the module docstring). Parameter-free apart from its settings.

    ``dynamic_head``: the (parameter-free) evaluator of the keypoint heads; ``strides``: of the pyramid
    levels; ``rel_coord_norm``: the divisor of the relative coordinates per level; ``offset_unit``:
    "stride" or "pixel"; ``keypoint_score``: "softmax" (peak probability) or "logit" (official);
    ``nms_rounds``: the rounds of :func:`~fcpose.ops.boxes.nms_fixed` in :meth:`fixed`.

    Args:
        dynamic_head: The evaluator of the dynamic keypoint heads.
        strides: The stride of each pyramid level.
        rel_coord_norm: The divisor of the relative coordinates, per level.
        offset_unit: The unit of the refinement offsets, ``"stride"`` or ``"pixel"``.
        keypoint_score: ``"softmax"`` (peak probability) or ``"logit"`` (official).
        params: The test-time parameters (score threshold, top-k, NMS, detections per image); default ``TestConfig()``.
        tile_bytes: The memory budget of one tile of dynamic-head evaluation; default: the head's own.
        nms_rounds: The rounds of the fixed-shape NMS in ``fixed``.
    """

    drop_empty = True  # rescale drops people whose box is empty once clipped to the image

    def __init__(self, dynamic_head: DynamicKeypointHead, *, strides: Sequence[int], rel_coord_norm: Sequence[float],
                 offset_unit: str = "stride", keypoint_score: str = "softmax", params: TestConfig | None = None,
                 tile_bytes: int | None = None, nms_rounds: int = NMS_ROUNDS):
        self.dynamic_head = dynamic_head
        self.strides = [int(s) for s in strides]
        self.rel_coord_norm = [float(v) for v in rel_coord_norm]
        self.offset_unit = offset_unit
        self.keypoint_score = keypoint_score
        self.params = params or TestConfig()
        self.tile_bytes = tile_bytes
        self.nms_rounds = int(nms_rounds)
        self._constants: dict[tuple[str, torch.device], Tensor] = {}

    @classmethod
    def from_model(cls, model: FCPose, params: TestConfig | None = None) -> PostProcessor:
        """The post-processor matching ``model``'s heads and conventions (``params`` default: the model's
        config's ``test`` section, else :class:`TestConfig` defaults).

        Args:
            model: The network whose outputs to decode.
            params: The test-time parameters; default: the model's config's ``test`` section.

        Returns:
            The post-processor.
        """
        if params is None:
            params = dataclasses.replace(model.cfg.test) if model.cfg is not None else TestConfig()
        return cls(model.dynamic_head, strides=model.strides, rel_coord_norm=model.rel_coord_norm.tolist(),
                   offset_unit=model.offset_unit, keypoint_score=model.keypoint_score, params=params)

    @classmethod
    def from_config(cls, cfg: FCPoseConfig) -> PostProcessor:
        """The post-processor of the model ``cfg`` describes, with the config's test-time parameters.

        Args:
            cfg: The model's config.

        Returns:
            The post-processor.
        """
        m = cfg.model
        return cls(build_dynamic_head(cfg), strides=m.strides, rel_coord_norm=m.rel_coord_norm,
                   offset_unit=m.keypoint.offset_unit, keypoint_score=m.keypoint.score,
                   params=dataclasses.replace(cfg.test))

    @property
    def num_keypoints(self) -> int:
        return self.dynamic_head.num_keypoints

    def with_params(self, **changes) -> PostProcessor:
        """A copy with some test-time parameters changed (e.g. ``score_threshold=0.3``).

        Args:
            **changes: ``TestConfig`` fields and their new values.

        Returns:
            The copy (this one is unchanged).
        """
        out = copy.copy(self)
        out.params = dataclasses.replace(self.params, **changes)
        return out

    def _constant(self, name: str, device: torch.device, traceable: bool = False) -> Tensor:
        """The strides (long) or relative-coordinate divisors (float32) as a tensor on ``device``, made once
        per device: a copy from host memory cannot happen inside a CUDA graph capture (the warm-up before
        the capture makes them). ``traceable``: a fresh tensor (a constant of the exported graph)."""
        key = (name, torch.device(device))
        found = None if traceable else self._constants.get(key)
        if found is None:
            if name == "strides":
                found = torch.tensor(self.strides, dtype=torch.long, device=device)
            else:
                found = torch.tensor(self.rel_coord_norm, dtype=torch.float32, device=device)
            if not traceable:
                self._constants[key] = found
        return found

    # ---- The compositions --------------------------------------------------------------------
    def people(self, model: FCPose, dense: DenseOutputs, *, score_threshold: float | Tensor | None = None,
               traceable: bool = False, on_stage: StageHook | None = None) -> tuple[Instances, Tensor]:
        """Selected people and their ``[N, K, 3]`` keypoints, both in network-input pixels. ``on_stage(name)`` is called
        after "select" and after "keypoints" (the benchmark times the stages).

        Args:
            model: The network that produced ``dense`` (its controller makes the heads' parameters).
            dense: The network's outputs for a batch.
            score_threshold: Overrides ``params.score_threshold`` (a 0-d tensor when ``traceable``).
            traceable: The export form (batch 1, static shapes).
            on_stage: Called with each finished stage's name, or ``None``.

        Returns:
            The selected instances and their keypoints.
        """
        instances = self.select(dense, score_threshold=score_threshold, traceable=traceable)
        if on_stage is not None:
            on_stage("select")
        keypoints = self.keypoints(dense, instances, model.instance_params(dense, instances), traceable=traceable)
        if on_stage is not None:
            on_stage("keypoints")
        return instances, keypoints

    @torch.no_grad()
    def __call__(self, model: FCPose, dense: DenseOutputs, input_sizes: Sequence[Size],
                 output_sizes: Sequence[Size] | None = None, *, on_stage: StageHook | None = None
                 ) -> list[PoseDetections]:
        """Dense outputs of a batch -> one :class:`PoseDetections` per image, in ``output_sizes`` pixels
        (default: the network-input sizes, i.e. no rescaling). ``input_sizes``: per image (h, w) of the
        resized image the network saw (before padding).

        Args:
            model: The network that produced ``dense``.
            dense: The network's outputs for a batch.
            input_sizes: Per image, (h, w) the network saw before padding.
            output_sizes: Per image, (h, w) the results refer to; default ``input_sizes``.
            on_stage: Called with each finished stage's name, or ``None``.

        Returns:
            The detections of each image.
        """
        output_sizes = list(output_sizes or input_sizes)
        instances, keypoints = self.people(model, dense, on_stage=on_stage)
        instances, keypoints = self.rescale(instances, keypoints, input_sizes, output_sizes, drop_empty=self.drop_empty)
        return self.split(instances, keypoints, output_sizes)

    @torch.no_grad()
    def fixed(self, model: FCPose, dense: DenseOutputs, *, on_stage: StageHook | None = None) -> PeopleSlots:
        """Stages 1 and 2 in the sync-free, fixed-shape form -> :class:`PeopleSlots` on the device
        (network-input pixels; see the module docstring). No operation here waits for the device, so the
        caller's one copy of the slots to the host is the only synchronisation.

        Args:
            model: The network that produced ``dense``.
            dense: The network's outputs for a batch.
            on_stage: Called with each finished stage's name, or ``None``.

        Returns:
            The people of the batch in fixed-shape slots.
        """
        instances, valid, exact = self.select_fixed(dense)
        if on_stage is not None:
            on_stage("select")
        keypoints = self.keypoints(dense, instances, model.instance_params(dense, instances), per_image=valid.shape[1])
        if on_stage is not None:
            on_stage("keypoints")
        b, s = valid.shape
        return PeopleSlots(boxes=instances.boxes.reshape(b, s, 4), scores=instances.scores.reshape(b, s),
                           keypoints=keypoints.reshape(b, s, *keypoints.shape[1:]),
                           levels=instances.levels.reshape(b, s), positions=instances.positions.reshape(b, s, 2),
                           locations=instances.locations.reshape(b, s, 2), valid=valid, exact=exact)

    def finish(self, slots: PeopleSlots, input_sizes: Sequence[Size], output_sizes: Sequence[Size] | None = None
               ) -> list[PoseDetections]:
        """Stage 3 on the slots of :meth:`fixed` (best on the CPU, after the one copy): the valid people,
        rescaled and split exactly as ``__call__`` does. Only images ``slots.exact`` vouches for are
        guaranteed to equal ``__call__``'s result.

        Args:
            slots: The slots of ``fixed``.
            input_sizes: Per image, (h, w) the network saw before padding.
            output_sizes: Per image, (h, w) the results refer to; default ``input_sizes``.

        Returns:
            The detections of each image.
        """
        output_sizes = list(output_sizes or input_sizes)
        b, s = slots.valid.shape
        valid = slots.valid.reshape(-1)
        batch_index = torch.arange(b, device=valid.device)[:, None].expand(b, s).reshape(-1)
        instances = Instances(batch_index=batch_index[valid], levels=slots.levels.reshape(-1)[valid],
                              positions=slots.positions.reshape(-1, 2)[valid],
                              locations=slots.locations.reshape(-1, 2)[valid],
                              boxes=slots.boxes.reshape(-1, 4)[valid], scores=slots.scores.reshape(-1)[valid])
        keypoints = slots.keypoints.reshape(b * s, *slots.keypoints.shape[2:])[valid]
        instances, keypoints = self.rescale(instances, keypoints, input_sizes, output_sizes, drop_empty=self.drop_empty)
        return self.split(instances, keypoints, output_sizes)

    # ---- Stage 1: selection ------------------------------------------------------------------
    def select(self, dense: DenseOutputs, *, score_threshold: float | Tensor | None = None,
               traceable: bool = False) -> Instances:
        """Threshold, per-level top-k, NMS and top-``max_detections`` for every image -> flat :class:`Instances`
        (grouped by image, decreasing score within an image; boxes in network-input pixels).

        Per image: :meth:`candidates` then :meth:`keep`. ``traceable=True``: the export form (batch 1,
        ``score_threshold`` may be a 0-d tensor).

        Args:
            dense: The network's outputs for a batch.
            score_threshold: Overrides ``params.score_threshold``.
            traceable: The export form.

        Returns:
            The selected instances of every image.
        """
        thr = self.params.score_threshold if score_threshold is None else score_threshold
        if traceable:
            return self._select_traceable(dense, thr)
        device = dense.kpt_feats.device
        widths = torch.tensor([m.shape[-1] for m in dense.cls_logits], device=device)
        probabilities = [self._probabilities(dense, level) for level in range(len(dense.strides))]
        parts = []
        for image in range(dense.kpt_feats.shape[0]):
            index, box, score, level = self.candidates(dense, image, thr, probabilities)
            keep = self.keep(box, score)
            index, level = index[keep], level[keep]
            parts.append((torch.full_like(index, image), level, flat_to_positions(index, widths[level]), box[keep],
                          score[keep]))
        batch_index, level, positions, boxes, scores = (torch.cat(p) for p in zip(*parts))
        strides = self._constant("strides", device)[level]
        return Instances(batch_index=batch_index, levels=level, positions=positions,
                         locations=positions_to_locations(positions, strides), boxes=boxes, scores=scores)

    def candidates(self, dense: DenseOutputs, image: int, threshold: float | Tensor,
                   probabilities: Sequence[tuple[Tensor, Tensor]] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The pre-NMS candidates of one image, level after level: flat cell ``index`` on its level's grid,
        ``box`` (input pixels), ``score`` = ``sqrt(cls * ctr)`` and ``level``. Per level: the cells whose class
        probability exceeds ``threshold`` (in cell order), at most the ``pre_nms_topk`` best by ``cls * ctr``.
        ``probabilities``: :meth:`_probabilities` of every level, if the caller has them.

        Args:
            dense: The network's outputs for a batch.
            image: The image's index in the batch.
            threshold: The class probability a cell must exceed.
            probabilities: The class probabilities and centre-ness of every level, if already computed.

        Returns:
            ``index``, ``box``, ``score`` and ``level`` of the candidates.
        """
        indices, boxes, scores, levels = [], [], [], []
        for level in range(len(dense.strides)):
            prob, ctr = (probabilities[level] if probabilities is not None else self._probabilities(dense, level))
            prob, ctr = prob[image], ctr[image]
            index = (prob > threshold).nonzero().squeeze(1)
            ranking = prob[index] * ctr[index]
            if index.numel() > self.params.pre_nms_topk:
                top = ranking.topk(self.params.pre_nms_topk, sorted=False).indices
                index, ranking = index[top], ranking[top]
            boxes.append(self._boxes(dense, level, index, image))
            indices.append(index)
            scores.append(torch.sqrt(ranking))
            levels.append(torch.full_like(index, level))
        return torch.cat(indices), torch.cat(boxes), torch.cat(scores), torch.cat(levels)

    def keep(self, boxes: Tensor, scores: Tensor) -> Tensor:
        """Which candidates of one image survive: indices, best first — class-agnostic NMS, then every box
        scoring at least the ``max_detections``-th best score (ties at the cut are kept).

        Args:
            boxes: ``[M, 4]`` candidate boxes.
            scores: ``[M]`` their scores.

        Returns:
            The indices of the kept candidates, best first.
        """
        keep = nms(boxes, scores, self.params.nms_threshold)
        if keep.numel() > self.params.max_detections:
            cut = scores[keep][self.params.max_detections - 1]
            keep = keep[scores[keep] >= cut]
        return keep

    def fixed_candidates(self, dense: DenseOutputs, threshold: float | Tensor, *, cell_order: bool = False
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """:meth:`candidates` with static shapes, for every image of the batch at once: each level gives
        ``min(pre_nms_topk, H * W)`` candidates, and those at or below the threshold score -1 instead of being
        removed. Returns ``box [B, M, 4]``, ``score [B, M]``, flat ``cell [B, M]``, ``level [B, M]`` and the
        level's grid ``width [B, M]``.

        ``cell_order``: within a level in cell order (as :meth:`candidates`, so that NMS breaks score ties
        the same way); otherwise in decreasing score (the exported graph).

        Args:
            dense: The network's outputs for a batch.
            threshold: The class probability a cell must exceed.
            cell_order: Order the candidates of a level by cell rather than by score.

        Returns:
            ``box``, ``score``, ``cell``, ``level`` and ``width``, each ``[B, M, ...]``.
        """
        boxes, scores, cells, levels, widths = [], [], [], [], []
        for level in range(len(dense.strides)):
            prob, ctr = self._probabilities(dense, level)
            rank = torch.where(prob > threshold, prob * ctr, torch.full_like(prob, -1.0))
            top, index = rank.topk(min(self.params.pre_nms_topk, rank.shape[1]), dim=1)
            if cell_order:
                index, order = index.sort(dim=1)
                top = top.gather(1, order)
            boxes.append(self._boxes(dense, level, index))
            scores.append(torch.where(top >= 0, torch.sqrt(top.clamp(min=0)), torch.full_like(top, -1.0)))
            cells.append(index)
            levels.append(torch.full_like(index, level))
            widths.append(torch.full_like(index, dense.cls_logits[level].shape[-1]))
        return tuple(torch.cat(v, dim=1) for v in (boxes, scores, cells, levels, widths))  # type: ignore[return-value]

    def _select_traceable(self, dense: DenseOutputs, threshold: float | Tensor) -> Instances:
        """:meth:`select` for one image with static shapes: :meth:`fixed_candidates`, then NMS as one operator
        (:func:`traceable_nms`)."""
        box, score, cell, level, width = (t[0] for t in self.fixed_candidates(dense, threshold))
        keep = traceable_nms(box, score, self.params.nms_threshold, TRACE_SCORE_FLOOR, self.params.max_detections)
        cell, level, width = cell[keep], level[keep], width[keep]
        positions = flat_to_positions(cell, width)
        strides = self._constant("strides", cell.device, traceable=True)[level]
        return Instances(batch_index=torch.zeros_like(cell), levels=level, positions=positions,
                         locations=positions_to_locations(positions, strides), boxes=box[keep], scores=score[keep])

    def select_fixed(self, dense: DenseOutputs) -> tuple[Instances, Tensor, Tensor]:
        """:meth:`select` in the sync-free form: ``B * S`` instances (image after image, S slots each),
        ``valid [B, S]`` and ``exact [B]`` (see :class:`PeopleSlots`): :meth:`fixed_candidates` in cell order,
        then :meth:`keep_fixed`, both over the whole batch in the same operations.

        Args:
            dense: The network's outputs for a batch.

        Returns:
            The instances, ``valid`` and ``exact``.
        """
        box, score, cell, level, width = self.fixed_candidates(dense, self.params.score_threshold, cell_order=True)
        take, valid, exact = self.keep_fixed(box, score, score >= 0)
        b, s = valid.shape
        cell, level, width = cell.gather(1, take), level.gather(1, take), width.gather(1, take)
        levels, positions = level.reshape(-1), flat_to_positions(cell, width).reshape(-1, 2)
        strides = self._constant("strides", levels.device)[levels]
        batch_index = torch.arange(b, device=levels.device)[:, None].expand(b, s).reshape(-1)
        instances = Instances(batch_index=batch_index, levels=levels, positions=positions,
                              locations=positions_to_locations(positions, strides),
                              boxes=box.gather(1, take[:, :, None].expand(b, s, 4)).reshape(-1, 4),
                              scores=score.gather(1, take).reshape(-1))
        return instances, valid, exact

    def keep_fixed(self, boxes: Tensor, scores: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`keep` with static shapes, for a batch (``boxes [B, M, 4]``, ``scores``/``valid [B, M]``):
        ``take [B, S]`` candidate indices (``S = min(max_detections, M)``), the kept ones first and best first,
        ``valid [B, S]`` (the slot holds a kept one) and ``exact [B]``. :func:`~fcpose.ops.boxes.nms_fixed` decides a
        prefix of the candidates (best first); the result is exact when that prefix already holds ``max_detections``
        kept boxes and the next candidate scores below the cut (so no later box ties with it), or when every candidate
        is decided — and when no more people tie at the cut than there are slots.

        Args:
            boxes: ``[B, M, 4]`` candidate boxes.
            scores: ``[B, M]`` their scores.
            valid: ``[B, M]`` which candidates take part.

        Returns:
            ``take``, ``valid`` and ``exact``.
        """
        order, kept, decided = nms_fixed(boxes, scores, self.params.nms_threshold, valid, self.nms_rounds)
        ranked = scores.gather(1, order)
        m, limit = int(scores.shape[1]), self.params.max_detections
        prefix = kept & (torch.arange(m, device=scores.device) < decided[:, None])
        at_limit = prefix & (prefix.cumsum(1) == limit)
        cut = torch.where(at_limit, ranked, torch.full_like(ranked, -float("inf"))).amax(dim=1)
        final = prefix & (ranked >= cut[:, None])
        slots = min(limit, m)
        first = torch.sort((~final).to(torch.uint8), dim=1, stable=True).indices[:, :slots]  # kept first, in order
        count = final.sum(dim=1)
        valid_slots = torch.arange(slots, device=scores.device) < count[:, None]
        after = ranked.gather(1, decided.clamp(max=m - 1)[:, None])[:, 0]  # the best undecided one, if any
        exact = ((decided == m) | (at_limit.any(dim=1) & (after < cut))) & (count <= slots)
        return order.gather(1, first), valid_slots, exact

    @staticmethod
    def _probabilities(dense: DenseOutputs, level: int) -> tuple[Tensor, Tensor]:
        """Person probability (max over classes) and centre-ness of every cell of one level, ``[B, H * W]``
        float32. Computed for the whole batch at once by every path (CPU element-wise functions may round the
        last bit differently for different tensor sizes; the paths must agree exactly)."""
        prob = torch.sigmoid(dense.cls_logits[level].float()).flatten(2).max(dim=1).values
        return prob, torch.sigmoid(dense.centerness[level].float()).flatten(1)

    @staticmethod
    def _boxes(dense: DenseOutputs, level: int, index: Tensor, image: int | None = None) -> Tensor:
        """Boxes (input pixels) predicted at flat cells ``index`` of one level: ``[n]`` cells of one image ->
        ``[n, 4]``, or ``[B, n]`` cells of every image (``image=None``) -> ``[B, n, 4]``."""
        reg = dense.box_reg[level]
        reg = (reg if image is None else reg[image:image + 1]).float().flatten(2)  # [b, 4, H * W]
        cells = index if image is None else index[None]
        ltrb = reg.gather(2, cells[:, None, :].expand(-1, 4, -1)).transpose(1, 2)
        boxes = decode_ltrb(flat_to_locations(cells, dense.box_reg[level].shape[-1], dense.strides[level]), ltrb)
        return boxes if image is None else boxes[0]

    # ---- Stage 2: keypoints ------------------------------------------------------------------
    def keypoints(self, dense: DenseOutputs, instances: Instances, theta: Tensor, *, traceable: bool = False,
                  tile_bytes: int | None = None, per_image: int | None = None) -> Tensor:
        """Keypoints ``[N, K, 3]`` (x, y in network-input pixels, score) of ``instances``, float32.

        ``theta``: their dynamic-head parameters ``[N, P]``. Per keypoint: the arg-max cell of the heatmap
        (no upsampling), refined by the shared offsets at that cell; the score is the peak's softmax
        probability or its raw logit (``keypoint_score``). ``per_image=S``: the instances are S per image,
        image after image (:meth:`fixed`), so no data decides which image runs which heads.

        Args:
            dense: The network's outputs for a batch.
            instances: The people whose keypoints to decode.
            theta: ``[N, P]`` their dynamic-head parameters.
            traceable: The export form (batch 1).
            tile_bytes: The memory budget of one tile of head evaluation; default ``self.tile_bytes``.
            per_image: S when the instances are S slots per image (``fixed``).

        Returns:
            ``[N, K, 3]`` keypoints.
        """
        feats = dense.kpt_feats
        width, stride = feats.shape[-1], dense.strides[0]
        norms = self._constant("rel_coord_norm", feats.device, traceable)[instances.levels]
        theta = theta.float()
        offsets_map = dense.kpt_offsets.float()
        if traceable:
            cell, peak, total = self.dynamic_head.peaks(feats[0], theta, instances.locations, norms, traceable=True)
            return self._decode(cell, peak, total, offsets_map, instances.batch_index, width, stride)
        if per_image is not None:  # every image's S slots in the same operations
            cell, peak, total = self.dynamic_head.peaks(feats, theta, instances.locations, norms,
                                                        tile_bytes or self.tile_bytes)
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

    # ---- Stage 3: to the images --------------------------------------------------------------
    @staticmethod
    def rescale(instances: Instances, keypoints: Tensor, input_sizes: Sequence[Size], output_sizes: Sequence[Size],
                drop_empty: bool = True) -> tuple[Instances, Tensor]:
        """Boxes and keypoints from network-input to output-image pixels, boxes clipped, people with empty
        boxes dropped (unless told not to).

        input_sizes: per image (h, w) of the resized image the network saw (before padding); output_sizes:
        (h, w) of the images the results refer to.

        Args:
            instances: Flat instances, boxes in network-input pixels.
            keypoints: Their ``[N, K, 3]`` keypoints.
            input_sizes: Per image, (h, w) the network saw before padding.
            output_sizes: Per image, (h, w) the results refer to.
            drop_empty: Drop people whose clipped box is empty.

        Returns:
            The kept instances and keypoints, in output pixels.
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
        :class:`PoseDetections` per image.

        Args:
            instances: Flat instances, boxes in output pixels.
            keypoints: Their ``[N, K, 3]`` keypoints.
            output_sizes: Per image, (h, w) the results refer to.

        Returns:
            The detections of each image.
        """
        results = []
        for image, size in enumerate(output_sizes):
            sel = instances.batch_index == image
            results.append(PoseDetections(boxes=instances.boxes[sel], scores=instances.scores[sel],
                                          keypoints=keypoints[sel], image_size=(int(size[0]), int(size[1])),
                                          levels=instances.levels[sel], locations=instances.locations[sel]))
        return results

"""Typed containers passed between the model, the targets, the loss and the post-processing.

Field names are the same in training and inference. Shapes use B = images in the batch, L = pyramid
levels, K = keypoints, F = channels of the keypoint feature map, N = instances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .config import COCO_SIGMAS
from .ops.oks import pose_nms

# What the command line counts and draws as people (``fcpose predict --draw-threshold / --draw-nms``):
# score >= PEOPLE_SCORE_THRESHOLD, and no second detection whose keypoints have OKS > PEOPLE_OKS_THRESHOLD
# with a better-scored person (see PoseDetections.people).
PEOPLE_SCORE_THRESHOLD = 0.3
PEOPLE_OKS_THRESHOLD = 0.5


@dataclass
class DenseOutputs:
    """Raw per-location outputs of :meth:`fcpose.model.FCPose.forward`. Every spatial map is on the padded input grid of
    its level; level l has stride ``strides[l]``.

    Args:
        cls_logits: Per level ``[B, C, H_l, W_l]`` classification logits (C = 1: person).
        box_reg: Per level ``[B, 4, H_l, W_l]`` (left, top, right, bottom) distances in input pixels.
        centerness: Per level ``[B, 1, H_l, W_l]`` centre-ness logits.
        ctrl_feats: Per level ``[B, C_t, H_l, W_l]`` box-tower features the controller reads.
        kpt_feats: ``[B, F, H_3, W_3]`` the shared keypoint feature map (stride ``strides[0]``).
        kpt_offsets: ``[B, 2K, H_3, W_3]`` keypoint refinement offsets, (dx, dy) interleaved.
        strides: The stride of each level.
        aux_heatmaps: Training only, the official branch's auxiliary heatmap logits by name; empty otherwise.
    """

    cls_logits: list[Tensor]  # L x [B, C, H_l, W_l] classification logits (C = 1: person)
    box_reg: list[Tensor]  # L x [B, 4, H_l, W_l] (left, top, right, bottom) distances, input pixels, >= 0
    centerness: list[Tensor]  # L x [B, 1, H_l, W_l] centre-ness logits
    ctrl_feats: list[Tensor]  # L x [B, C_t, H_l, W_l] box-tower features the controller reads
    kpt_feats: Tensor  # [B, F, H_3, W_3] the shared keypoint feature map F (stride strides[0])
    kpt_offsets: Tensor  # [B, 2K, H_3, W_3] refinement offsets (dx_k, dy_k) interleaved, raw
    strides: list[int] = field(default_factory=list)
    # Training only, official basis module with aux_heads: {"p3": [B, K, H_3, W_3], "p1": [B, K, 4 H_3, 4 W_3]}
    # auxiliary heatmap logits (stride 8 and stride 2); empty otherwise.
    aux_heatmaps: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        return len(self.cls_logits)

    def float(self) -> DenseOutputs:
        """The same outputs in float32 (tensors already in float32 are not copied): what the losses, the controller
        and the dynamic heads compute in when the network ran under bf16/fp16 autocast.

        Returns:
            The outputs in float32.
        """
        return DenseOutputs(cls_logits=[t.float() for t in self.cls_logits], box_reg=[t.float() for t in self.box_reg],
                            centerness=[t.float() for t in self.centerness],
                            ctrl_feats=[t.float() for t in self.ctrl_feats], kpt_feats=self.kpt_feats.float(),
                            kpt_offsets=self.kpt_offsets.float(), strides=list(self.strides),
                            aux_heatmaps={k: v.float() for k, v in self.aux_heatmaps.items()})


@dataclass
class Instances:
    """Instances that generate dynamic keypoint heads, flattened over the batch. Used at inference (detections after
    NMS) and in training (sampled positive locations).

    Args:
        batch_index: ``[N]`` the image of each instance.
        levels: ``[N]`` the pyramid level of its location (0 = P3).
        positions: ``[N, 2]`` (row, col) of its location on that level's grid.
        locations: ``[N, 2]`` (x, y) of that location in input pixels.
        boxes: ``[N, 4]`` xyxy boxes in input pixels (inference).
        scores: ``[N]`` detection scores (inference).
    """

    batch_index: Tensor  # [N] long: image of each instance
    levels: Tensor  # [N] long: pyramid level index (0 = P3)
    positions: Tensor  # [N, 2] long: (row, col) of the generating location on its level's grid
    locations: Tensor  # [N, 2] float: (x, y) of that location in input pixels
    boxes: Tensor | None = None  # [N, 4] xyxy in input pixels (inference)
    scores: Tensor | None = None  # [N] detection scores (inference)

    def __len__(self) -> int:
        """The number of instances, N.

        Returns:
            N.
        """
        return int(self.batch_index.shape[0])

    def index(self, idx: Tensor) -> Instances:
        """The instances selected by ``idx``.

        Args:
            idx: Indices or a boolean mask over the N.

        Returns:
            The selected instances, in that order.
        """
        return Instances(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                            for f in fields(self)})


@dataclass
class PeopleSlots:
    """The people of a batch in fixed-shape form (the sync-free post-processing,
    :meth:`fcpose.postprocess.PostProcessor.fixed`): S slots per image, the valid ones first, best first. Everything is
    in network-input pixels. The shapes depend only on the batch's shape, never on the data, so the computation that
    fills them needs no host synchronisation and can be captured in a CUDA graph."""

    boxes: Tensor  # [B, S, 4] xyxy
    scores: Tensor  # [B, S] detection scores
    keypoints: Tensor  # [B, S, K, 3] (x, y, score), float32
    levels: Tensor  # [B, S] long: pyramid level of the generating location
    positions: Tensor  # [B, S, 2] long: (row, col) of that location on its level's grid
    locations: Tensor  # [B, S, 2] (x, y) of that location
    valid: Tensor  # [B, S] bool: the slot holds a person
    # [B] bool: False where the fixed-shape form cannot vouch for the result (NMS did not converge within its
    # rounds, or more people tie at the max_detections cut than there are slots): recompute that batch
    exact: Tensor

    def tensors(self) -> list[Tensor]:
        """The fields in declaration order (for copying into preallocated buffers)."""
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def from_tensors(cls, tensors: list[Tensor]) -> PeopleSlots:
        return cls(*tensors)


@dataclass
class PoseDetections:
    """Detected people of one image: torch tensors (on the CPU for :class:`~fcpose.Predictor` outputs;
    :meth:`numpy` gives numpy arrays, as :meth:`~fcpose.Predictor.track` yields).

    Coordinates are continuous pixel coordinates of the image named by ``image_size`` (the original
    image for :class:`~fcpose.Predictor` outputs): pixel ``i`` spans ``[i, i + 1)``. COCO results files
    use pixel indices, i.e. keypoint x/y minus 0.5 (see :meth:`to_coco`).

    A predictor returns every detection above the model's score threshold (0.05 by default, up to 100 per
    image), as COCO evaluation needs them, so low-scored candidates and a few duplicates of one person are
    among them; :meth:`people` gives the people ``fcpose predict`` counts and draws.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` detection scores in [0, 1].
        keypoints: ``[N, K, 3]`` (x, y, score) per keypoint.
        image_size: (height, width) of the image the coordinates refer to.
        levels: ``[N]`` the pyramid level of each generating location (0 = P3), when known.
        locations: ``[N, 2]`` each generating location (x, y) in network-input pixels, when known.
    """

    boxes: Tensor  # [N, 4] xyxy
    scores: Tensor  # [N] detection score in [0, 1]
    keypoints: Tensor  # [N, K, 3] (x, y, score)
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the image the coordinates refer to
    levels: Tensor | None = None  # [N] pyramid level of the generating location (0 = P3)
    locations: Tensor | None = None  # [N, 2] generating location (x, y) in network-input pixels

    def __len__(self) -> int:
        """The number of detections, N.

        Returns:
            N.
        """
        return int(self.scores.shape[0])

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[1])

    def to(self, device: str | torch.device) -> PoseDetections:
        """The same detections with their tensors on ``device``.

        Args:
            device: The target device.

        Returns:
            A new ``PoseDetections``.
        """
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, Tensor):
                moved[k] = v.to(device)
        return PoseDetections(**moved)

    def index(self, idx: Tensor | Sequence[int]) -> PoseDetections:
        """The detections selected by ``idx`` (indices, or a boolean mask over the N), in that order.

        Args:
            idx: Indices or a boolean mask over the N.

        Returns:
            A new ``PoseDetections``.
        """
        idx = torch.as_tensor(idx, device=self.scores.device)
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in picked.items():
            if isinstance(v, Tensor):
                picked[k] = v[idx]
        return PoseDetections(**picked)

    def people(self, threshold: float = PEOPLE_SCORE_THRESHOLD, nms: float = PEOPLE_OKS_THRESHOLD,
               sigmas: Sequence[float] | None = None) -> PoseDetections:
        """The people ``fcpose predict`` counts and draws, best score first: detections scoring ``>= threshold``
        (``--draw-threshold``) without second detections of one person — keypoints with COCO OKS ``> nms``
        (``--draw-nms``; 1 keeps them) to a better-scored person, whose box area is the scale
        (:func:`fcpose.ops.oks.pose_nms`). ``sigmas``: the keypoint set's OKS sigmas
        (``predictor.cfg.keypoints.sigmas``); default COCO's, which needs K = 17.

        Args:
            threshold: The lowest score kept.
            nms: The OKS above which a lower-scored detection counts as the same person; 1 keeps all.
            sigmas: The keypoint set's OKS sigmas; default COCO's (K = 17).

        Returns:
            The people, best score first.

        Raises:
            ValueError: The detections do not have 17 keypoints and no ``sigmas`` are given (with ``nms < 1``).
        """
        return self.index(self.people_indices(threshold, nms, sigmas))

    def people_indices(self, threshold: float = PEOPLE_SCORE_THRESHOLD, nms: float = PEOPLE_OKS_THRESHOLD,
                       sigmas: Sequence[float] | None = None) -> Tensor:
        """``[M]`` long indices of :meth:`people` into these detections, best first.

        Args:
            threshold: The lowest score kept.
            nms: The OKS above which a lower-scored detection counts as the same person; 1 keeps all.
            sigmas: The keypoint set's OKS sigmas; default COCO's (K = 17).

        Returns:
            The indices, best first.

        Raises:
            ValueError: The detections do not have 17 keypoints and no ``sigmas`` are given (with ``nms < 1``).
        """
        keep = (self.scores >= threshold).nonzero().squeeze(1)
        if sigmas is None:
            if keep.numel() > 1 and nms < 1.0 and self.num_keypoints != len(COCO_SIGMAS):
                raise ValueError(f"people(): give the OKS sigmas of these {self.num_keypoints} keypoints "
                                 f"(sigmas=predictor.cfg.keypoints.sigmas); the default is COCO's 17")
            sigmas = COCO_SIGMAS
        cpu = keep.cpu()
        order = pose_nms(self.boxes.detach().cpu()[cpu].numpy(), self.scores.detach().cpu()[cpu].numpy(),
                         self.keypoints.detach().cpu()[cpu].numpy(), sigmas, nms)
        return keep[torch.from_numpy(order).to(keep.device)]

    def numpy(self) -> dict[str, np.ndarray]:
        """``{"boxes", "scores", "keypoints"}`` as numpy arrays (``[N, 4]``, ``[N]``, ``[N, K, 3]``, float32).

        Returns:
            The three arrays, on the CPU.
        """
        out = {"boxes": self.boxes, "scores": self.scores, "keypoints": self.keypoints}
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    def to_coco(self, image_id: int | None = None, file_name: str | None = None, category_id: int = 1) -> list[dict]:
        """COCO results entries (``keypoints`` as 3K floats in pixel-index convention, bbox xywh).

        Args:
            image_id: The COCO image id to record, if any.
            file_name: The image's file name to record, if any.
            category_id: The COCO category of the detections.

        Returns:
            One entry per detection.
        """
        d = self.numpy()
        results = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in d["boxes"][i])
            kpts = d["keypoints"][i].astype(np.float64).copy()
            kpts[:, :2] -= 0.5
            entry: dict = {}
            if image_id is not None:
                entry["image_id"] = int(image_id)
            if file_name is not None:
                entry["file_name"] = file_name
            entry.update(category_id=int(category_id), keypoints=[round(float(v), 3) for v in kpts.reshape(-1)],
                         score=round(float(d["scores"][i]), 6),
                         bbox=[round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)])
            results.append(entry)
        return results

    @staticmethod
    def empty(num_keypoints: int, image_size: tuple[int, int] = (0, 0),
              device: str | torch.device = "cpu") -> PoseDetections:
        """No detections (N = 0) of ``num_keypoints`` keypoints.

        Args:
            num_keypoints: K.
            image_size: (height, width) of the image.
            device: Where the empty tensors live.

        Returns:
            An empty ``PoseDetections``.
        """
        return PoseDetections(boxes=torch.zeros(0, 4, device=device), scores=torch.zeros(0, device=device),
                              keypoints=torch.zeros(0, num_keypoints, 3, device=device), image_size=image_size,
                              levels=torch.zeros(0, dtype=torch.long, device=device),
                              locations=torch.zeros(0, 2, device=device))


class PosePredictor(Protocol):
    """What ``predict``, ``eval``, ``track``, ``bench`` and ``serve`` need of a predictor, whatever runs it
    (:class:`~fcpose.Predictor`, :class:`~fcpose.export.onnx_predictor.OnnxPredictor`,
    :class:`~fcpose.export.openvino_predictor.OpenVinoPredictor`): images (paths or RGB ``uint8`` arrays) in,
    :class:`PoseDetections` in those images' pixels out."""

    cfg: Any  # the FCPoseConfig the weights were built with (None for a torch model built from parts)
    min_size: int
    max_size: int
    trained_on: str | None

    def predict(self, images: list[Any]) -> list[PoseDetections]: ...

    def __call__(self, image: Any) -> PoseDetections: ...

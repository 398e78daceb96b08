"""Box operations in plain PyTorch: areas, IoU, GIoU, clipping and non-maximum suppression.

Boxes are ``[N, 4]`` (x1, y1, x2, y2) in continuous pixel coordinates; areas are ``(x2 - x1) * (y2 - y1)``
without the legacy "+1"."""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """``[..., N, 4]`` xyxy -> ``[..., N]`` areas (negative widths count as 0)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``[..., N, 4]`` and ``[..., M, 4]`` xyxy boxes -> ``[..., N, M]`` (0 where the union is
    empty; leading dimensions are batches)."""
    area_a = box_area(a)
    area_b = box_area(b)
    # one coordinate at a time: [..., N, M] temporaries only (a batch of NMS overlap matrices is large)
    inter = None
    for lo, hi in ((0, 2), (1, 3)):
        side = (torch.minimum(a[..., :, None, hi], b[..., None, :, hi])
                - torch.maximum(a[..., :, None, lo], b[..., None, :, lo])).clamp(min=0)
        inter = side if inter is None else inter * side
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def clip_boxes(boxes: Tensor, height: float | Tensor, width: float | Tensor) -> Tensor:
    """Clip xyxy boxes to ``[0, width] x [0, height]``; height/width are numbers or ``[N]`` per-box limits."""
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    x1 = boxes[:, 0].clamp(min=0).minimum(width)
    y1 = boxes[:, 1].clamp(min=0).minimum(height)
    x2 = boxes[:, 2].clamp(min=0).minimum(width)
    y2 = boxes[:, 3].clamp(min=0).minimum(height)
    return torch.stack([x1, y1, x2, y2], dim=1)


def nonempty(boxes: Tensor, threshold: float = 0.0) -> Tensor:
    """``[N]`` bool: width and height both greater than ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, block_size: int = 128) -> Tensor:
    """Greedy non-maximum suppression, vectorised.

    Returns the indices of the kept boxes in decreasing score order (ties: lower index first). A box is
    suppressed when its IoU with a higher-scoring *kept* box is greater than ``iou_threshold`` — exactly
    the classic greedy algorithm (and torchvision's ``nms``).

    Boxes are taken in score order, ``block_size`` at a time: a block is first suppressed by every box already kept,
    then resolved internally by iterating the fixed point ``keep_i = not any_{j < i} (keep_j and IoU_ji > t)`` on its
    small IoU matrix, which reaches the greedy result after at most ``block_size`` rounds (usually 2-4). Work is
    ``O(N * kept)`` IoUs with no Python loop over boxes."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ordered = boxes[order].float()
    n = ordered.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = ordered[start:stop]
        alive = keep[start:stop]
        if start > 0:
            kept_before = ordered[:start][keep[:start]]
            if kept_before.shape[0]:
                alive = alive & ~(box_iou(kept_before, block) > iou_threshold).any(dim=0)
        over = torch.triu(box_iou(block, block) > iou_threshold, diagonal=1)
        current = alive
        while True:
            updated = alive & ~(over & current[:, None]).any(dim=0)
            if torch.equal(updated, current):
                break
            current = updated
        keep[start:stop] = current
    return order[keep]


NMS_ROUNDS = 32  # rounds of nms_fixed: the golden model's best 100 of ~2,500 candidates need 13-26


def nms_fixed(boxes: Tensor, scores: Tensor, iou_threshold: float, valid: Tensor, rounds: int = NMS_ROUNDS
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy NMS with static shapes and no host synchronisation (capturable in a CUDA graph).

    ``boxes [M, 4]``, ``scores [M]``, ``valid [M]`` bool (invalid boxes are never kept and suppress
    nothing) -> ``order [M]`` (indices by decreasing score, ties: lower index first, as :func:`nms`),
    ``keep [M]`` bool in that order, and ``decided`` (0-d long): ``keep[:decided]`` is exactly the greedy
    result for the ``decided`` best boxes (``decided == M``: for all of them — then ``keep`` is
    :func:`nms`'s result). A batch (``boxes [B, M, 4]``, ``scores``/``valid [B, M]``) runs every image's
    NMS in the same operations (``decided [B]``): the kernels launched do not grow with B.

    Each box is undecided, kept or suppressed. Every round decides in parallel what is already certain: an undecided box
    none of whose better overlapping (IoU > t) boxes is still alive (undecided or kept) is kept; one overlapped by a
    better kept box is suppressed. Nothing decided is ever revised, so every round's state is a correct partial greedy
    result, and each round extends the decided prefix by at least one box (the first undecided one); independent groups
    of boxes are decided side by side, so the best hundred of a few thousand candidates usually take a few rounds.
    Callers that need the best D kept boxes check that the prefix holds them. Each round is one ``[2, M] x [M, M]``
    product over the overlap matrix and five element-wise operations on the ``[2, M]`` state (``O(M^2)`` memory and
    work: meant for a GPU and the few thousand pre-NMS candidates of a detector)."""
    if boxes.dim() == 2:
        order, kept, decided = nms_fixed(boxes[None], scores[None], iou_threshold, valid[None], rounds)
        return order[0], kept[0], decided[0]
    b, m = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    if m == 0:
        return order, torch.zeros(b, 0, dtype=torch.bool, device=scores.device), torch.zeros(
            b, dtype=torch.long, device=scores.device)
    ordered = boxes.gather(1, order[:, :, None].expand(b, m, 4)).float()
    # over[j, i]: box j comes before box i and they overlap; 0/1 in a dtype the product counts in exactly
    # enough for "> 0" (half on a GPU: half the bytes to read per round)
    dtype = torch.float16 if ordered.device.type == "cuda" else torch.float32
    over = torch.triu(box_iou(ordered, ordered) > iou_threshold, diagonal=1).to(dtype)
    # state [B, 2, M]: row 0 "alive" (undecided or kept), row 1 "kept"; undecided = alive - kept
    state = torch.stack([valid.gather(1, order), torch.zeros_like(valid)], dim=1).to(dtype)
    rise = torch.tensor([[0.0], [1.0]], dtype=dtype, device=state.device)
    for _ in range(rounds):
        # some[:, 0]: a better alive box overlaps (1) or none does (0: keep it if undecided); some[:, 1]: a
        # better kept box overlaps (suppress it if undecided)
        some = torch.bmm(state, over).clamp_(max=1)
        # undecided boxes (alive - kept): alive += 0 - some[:, 1], kept += 1 - some[:, 0]
        state = state.addcmul(state[:, 0:1] - state[:, 1:2], rise - some.flip(1))
    kept = state[:, 1] > 0
    undecided = state[:, 0] > state[:, 1]
    first = undecided.to(torch.uint8).argmax(dim=1)
    decided = torch.where(undecided.any(dim=1), first, torch.full_like(first, m))
    return order, kept, decided


@torch.library.custom_op("fcpose::nms", mutates_args=())
def traceable_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
                  max_output: int) -> Tensor:
    """:func:`nms` as one traceable operator: kept indices, best first, of the boxes scoring above
    ``score_threshold``, at most ``max_output``. ``fcpose.export.onnx`` exports it as ONNX
    ``NonMaxSuppression``; in PyTorch it runs :func:`nms`."""
    valid = (scores > score_threshold).nonzero().squeeze(1)
    return valid[nms(boxes[valid], scores[valid], iou_threshold)][:max_output]


@traceable_nms.register_fake
def _traceable_nms_fake(boxes, scores, iou_threshold, score_threshold, max_output):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


def ltrb_giou(pred: Tensor, target: Tensor, smooth: float = 0.0) -> Tensor:
    """GIoU of ``[N, 4]`` (left, top, right, bottom) distance pairs seen from the same location. With ``smooth = 0``
    this is the GIoU of the two boxes (the location lies inside both, so they intersect). The official FCOS/FCPose code
    uses ``IoU = (I + 1) / (U + 1)`` on distances in stride units (``smooth = 1``): ``GIoU = IoU - (C - U) / C`` with C
    the enclosing box's area."""
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    inter = (torch.min(pl, tl) + torch.min(pr, tr)) * (torch.min(pb, tb) + torch.min(pt, tt))
    enclose = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pb, tb) + torch.max(pt, tt))
    union = target_area + pred_area - inter
    iou = (inter + smooth) / (union + smooth).clamp(min=1e-12)
    return iou - (enclose - union) / enclose.clamp(min=1e-12)

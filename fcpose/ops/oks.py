"""Object keypoint similarity (OKS) between two sets of poses, with the dataset's per-keypoint sigmas.

The formula is COCO's (``pycocotools.cocoeval.COCOeval.computeOks``)::

    OKS = mean over the valid keypoints k of exp(-d_k^2 / (2 * s^2 * (2 * sigma_k)^2))

with ``d_k`` the distance between the two keypoints and ``s^2`` the object's area. COCO evaluation
itself goes through pycocotools (:mod:`fcpose.engine.evaluation`); this is the pairwise matrix form
that online code (the tracker) needs, on plain numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def oks_matrix(kpts_a: np.ndarray, kpts_b: np.ndarray, areas: np.ndarray, sigmas: Sequence[float],
               *, threshold: float | None = None) -> np.ndarray:
    """Pairwise OKS of ``[N, K, 2|3]`` and ``[M, K, 2|3]`` poses -> ``[N, M]`` in [0, 1]. ``areas`` (``[N]``) is the
    scale ``s^2`` of each pose in ``kpts_a`` (the reference, as the ground truth is in COCO). With ``threshold`` and a
    third (score) column, a keypoint counts only where its score is ``> threshold`` in *both* poses; pairs with no such
    keypoint get 0. Without scores every keypoint counts."""
    a = np.asarray(kpts_a, dtype=np.float64)
    b = np.asarray(kpts_b, dtype=np.float64)
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m))
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if a.shape[1] != sig.shape[0] or b.shape[1] != sig.shape[0]:
        raise ValueError(f"oks_matrix: {sig.shape[0]} sigmas for poses with {a.shape[1]} and {b.shape[1]} keypoints")
    var = (2.0 * sig) ** 2  # [K]
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # [N, M, K]
    area = np.maximum(np.asarray(areas, dtype=np.float64).reshape(n), np.finfo(np.float64).eps)
    e = d2 / var[None, None, :] / area[:, None, None] / 2.0
    sim = np.exp(-e)
    if threshold is not None and a.shape[2] > 2 and b.shape[2] > 2:
        valid = (a[:, None, :, 2] > threshold) & (b[None, :, :, 2] > threshold)
    else:
        valid = np.ones_like(sim, dtype=bool)
    count = valid.sum(-1)
    total = np.where(valid, sim, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def pose_nms(boxes, scores, keypoints, sigmas: Sequence[float], threshold: float) -> np.ndarray:
    """Greedy suppression of duplicate poses -> indices of the people kept (int64), best score first. ``boxes``
    ``[N, 4]`` xyxy, ``scores`` ``[N]``, ``keypoints`` ``[N, K, 2|3]`` in the same pixels (numpy arrays or CPU tensors).
    A person whose keypoints have OKS > ``threshold`` (:func:`oks_matrix`, every keypoint counting, the scale being the
    box area of the better-scored kept person) with a kept person is dropped; ``threshold >= 1`` keeps everyone. Two
    locations on one person give near-identical keypoints (OKS 0.7-0.9) even when their boxes overlap less than a box
    NMS threshold; two different people side by side have OKS near 0. Equal scores keep their input order."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if order.size < 2 or threshold >= 1.0:
        return order
    kps = np.asarray(keypoints, dtype=np.float64)[order, :, :2]
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order]
    area = np.maximum(box[:, 2] - box[:, 0], 1.0) * np.maximum(box[:, 3] - box[:, 1], 1.0)
    oks = oks_matrix(kps, kps, area, sigmas)  # row i: the scale of person i
    keep: list[int] = []
    for j in range(order.size):
        if not keep or bool((oks[keep, j] <= threshold).all()):
            keep.append(j)
    return order[np.asarray(keep, dtype=np.int64)]

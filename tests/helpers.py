"""Helpers that only the tests use (reference encoders and decoders, ground truth as results, a server on a thread).

Imported as ``from helpers import ...`` (pytest puts this folder on the path, as for ``conftest``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcpose.config import FCPoseConfig, to_dict
from fcpose.ops.boxes import box_area
from fcpose.targets.boxes import decode_ltrb
from fcpose.targets.keypoints import decode_offsets, gather_offsets, offset_unit_scale
from fcpose.targets.locations import flat_to_locations


def diff_from_defaults(cfg: FCPoseConfig) -> dict:
    """The nested dict of values that differ from the dataclass defaults (what a preset holds)."""

    def walk(a: dict, b: dict) -> dict:
        out = {}
        for k, v in a.items():
            if isinstance(v, dict):
                sub = walk(v, b[k])
                if sub:
                    out[k] = sub
            elif v != b[k]:
                out[k] = v
        return out

    return walk(to_dict(cfg), to_dict(FCPoseConfig()))


def generalized_box_iou_pairs(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Element-wise GIoU of two ``[N, 4]`` xyxy box sets -> ``[N]`` in [-1, 1]."""
    area_a = box_area(a)
    area_b = box_area(b)
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    iou = inter / (union + eps)
    lt_c = torch.minimum(a[:, :2], b[:, :2])
    rb_c = torch.maximum(a[:, 2:], b[:, 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    enclose = wh_c[:, 0] * wh_c[:, 1]
    return iou - (enclose - union) / (enclose + eps)


def decode_heatmap_peaks(heatmaps: Tensor, score: str = "softmax") -> tuple[Tensor, Tensor]:
    """``[N, K, H, W]`` heatmap logits -> (``[N, K]`` flat index of each peak, ``[N, K]`` peak score).

    ``score="softmax"``: the softmax probability of the peak over the H*W cells (what the
    cross-entropy training makes it); ``"logit"``: the raw maximum logit (official AdelaiDet).
    """
    flat = heatmaps.flatten(2)
    peak, index = flat.max(dim=2)
    if score == "softmax":
        value = torch.exp(peak - torch.logsumexp(flat, dim=2))
    elif score == "logit":
        value = peak
    else:
        raise ValueError(f"unknown keypoint score {score!r}")
    return index, value


def decode_target_boxes(targets, locations: Tensor) -> Tensor:
    """``[B, L, 4]`` xyxy boxes (input pixels) of the matched gt of :class:`~fcpose.targets.fcos.FCOSTargets`,
    from ``[L, 2]`` locations (positives only are meaningful)."""
    return decode_ltrb(locations[None].expand_as(targets.box_targets[..., :2]), targets.box_targets)


def encode_offsets(xy: Tensor, index: Tensor, width: int, stride: int, unit: str = "stride") -> Tensor:
    """Offset ``[..., 2]`` from cell ``index`` (flat, ``[...]``) to keypoint ``xy`` (``[..., 2]``), in ``unit``:
    the inverse of :func:`~fcpose.targets.keypoints.decode_offsets`."""
    return (xy - flat_to_locations(index, width, stride)) / offset_unit_scale(unit, stride)


def decode_keypoint_targets(targets, stride: int, offset_unit: str = "stride") -> Tensor:
    """Inverse of :func:`~fcpose.targets.pose.assign_keypoint_targets`: ``[G_total, K, 3]`` (x, y, valid) from
    each keypoint's heatmap cell refined by the offset *target* at that cell (exact for a keypoint whose cell
    is supervised by it, i.e. no nearer keypoint of the same type)."""
    width = targets.offset_targets.shape[-1]
    offsets = gather_offsets(targets.offset_targets, targets.gt_image, targets.heatmap_index)
    xy = decode_offsets(targets.heatmap_index, offsets, width, stride, offset_unit)
    return torch.cat([xy, targets.heatmap_valid[..., None].to(xy.dtype)], dim=-1)


def empty_target(num_keypoints: int) -> dict[str, np.ndarray]:
    """A training target with no people and no crowd regions."""
    return {"boxes": np.zeros((0, 4), np.float32), "keypoints": np.zeros((0, num_keypoints, 3), np.float32),
            "ignore_boxes": np.zeros((0, 4), np.float32)}


def gt_to_results(gt: Any, *, min_keypoints: int = 1) -> list[dict]:
    """Ground truth as results (score 1.0): one per non-crowd annotation with at least
    ``min_keypoints`` labelled keypoints (``num_keypoints``). Keypoint scores are 1 for labelled
    keypoints and 0 otherwise; boxes are copied. Evaluating them gives keypoint AP = 1. Box AP is
    1 only if every non-crowd box is included: COCO also has persons without keypoints, which
    ``min_keypoints=0`` keeps (they then count as false positives in the keypoint evaluation).
    """
    from fcpose.engine.evaluation import load_gt

    coco = load_gt(gt)
    out = []
    for ann in coco.dataset.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        kps = ann.get("keypoints") or []
        num = ann.get("num_keypoints", sum(1 for v in kps[2::3] if v > 0))
        if num < min_keypoints:
            continue
        res_kps = []
        for i in range(0, len(kps), 3):
            res_kps += [float(kps[i]), float(kps[i + 1]), 1.0 if kps[i + 2] > 0 else 0.0]
        r = {
            "image_id": ann["image_id"],
            "category_id": ann.get("category_id", 1),
            "keypoints": res_kps,
            "score": 1.0,
        }
        if "bbox" in ann:
            r["bbox"] = [float(v) for v in ann["bbox"]]
        out.append(r)
    return out


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    timeout: float = 30.0):
    """Run an ASGI ``app`` (e.g. :func:`~fcpose.serve.app.create_app`) under uvicorn on a background thread:
    yields the base URL (``port=0``: a free port) once it accepts connections, and stops it gracefully on exit
    (requests in flight are answered). Signals stay with the caller. Needs the [serve] extra."""
    import uvicorn

    from fcpose.errors import FCPoseError
    from fcpose.serve.command import GRACEFUL_SECONDS, _url, bind_socket

    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=GRACEFUL_SECONDS))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fcpose-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise FCPoseError(f"the server on {host}:{sock.getsockname()[1]} did not start")
            time.sleep(0.01)
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()

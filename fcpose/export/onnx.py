"""ONNX export of the whole FCPose pipeline: network, selection, NMS, dynamic keypoint heads, decoding.

The exported graph (opset 18, exported with ``torch.onnx.export(dynamo=True)``) has

* inputs ``image`` — ``float32 [1, 3, H, W]``: the **normalised and zero-padded** image, exactly what
  ``FCPose.forward`` takes (RGB/BGR order, mean and std of the model's config, H and W multiples of the
  size divisibility, 32); and ``score_threshold`` — ``float32 []``, the minimum class probability;
* outputs, for the N detected people (N is dynamic, 0 included), in **network-input pixels**:
  ``boxes [N, 4]`` xyxy, ``scores [N]``, ``keypoints [N, K, 3]`` (x, y, score), ``levels [N]`` int64
  (pyramid level of the generating location) and ``locations [N, 2]`` (that location, x, y).

**NMS is inside the graph**, as the ONNX ``NonMaxSuppression`` operator (class-agnostic, IoU >
``nms_threshold`` suppresses, at most ``max_detections`` kept — fixed at export from the config).
Unlike the PyTorch post-processing, boxes tied with the ``max_detections``-th score are not all kept.
The steps before it follow :func:`fcpose.postprocess.select_instances`: per level, locations whose class
probability exceeds ``score_threshold``, the ``pre_nms_topk`` best by ``cls * ctr``, score
``sqrt(cls * ctr)``. The dynamic heads run for the N kept people only, folded as in
:meth:`fcpose.model.dynamic_head.DynamicKeypointHead.fold` (layer 0 and the coordinates in one product) but
on the whole map; each keypoint is the arg-max cell plus the shared offset there, scored with its softmax
probability (or its logit, per the model).

Rescaling to the original image, clipping and dropping empty boxes happen outside, in
:class:`fcpose.export.onnx_predictor.OnnxPredictor`, with the same code as the PyTorch
:class:`~fcpose.Predictor`. The model's config and these conventions are stored in the ONNX metadata
(``fcpose_config``, ``fcpose_export``), so the file is self-describing.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import to_dict
from ..errors import FCPoseError
from ..fileio import atomic_file, check_output_file
from ..ops.boxes import nms
from ..postprocess import DetectionParams
from ..targets.boxes import decode_ltrb
from ..targets.keypoints import offset_unit_scale

__all__ = ["OnnxPipeline", "export_onnx", "EXPORT_FORMAT", "INPUT_NAMES", "OUTPUT_NAMES", "OPSET"]

EXPORT_FORMAT = "fcpose-onnx-1"
OPSET = 18
INPUT_NAMES = ["image", "score_threshold"]
OUTPUT_NAMES = ["boxes", "scores", "keypoints", "levels", "locations"]
NMS_SCORE_FLOOR = -0.5  # candidates below the class threshold get score -1 and NMS drops them


@torch.library.custom_op("fcpose::nms", mutates_args=())
def nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, max_output: int) -> Tensor:
    """Kept box indices, best first: boxes scoring above ``score_threshold``, greedy NMS, the first
    ``max_output``. Exported as ONNX ``NonMaxSuppression``; runs :func:`fcpose.ops.boxes.nms` in PyTorch."""
    valid = (scores > score_threshold).nonzero().squeeze(1)
    return valid[nms(boxes[valid], scores[valid], iou_threshold)][:max_output]


@nms_op.register_fake
def _nms_fake(boxes, scores, iou_threshold, score_threshold, max_output):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


def _nms_to_onnx(boxes, scores, iou_threshold: float, score_threshold: float, max_output: int):
    from onnxscript import opset18 as op

    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]), op.Unsqueeze(scores, [0, 1]), op.Constant(value_ints=[max_output]),
        op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]))
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])  # [n, 3] (batch, class, box) -> box indices


def _grid(height, width, stride: int, device) -> Tensor:
    """``[H * W, 2]`` (x, y) cell centres, row-major (as ``compute_locations``, with symbolic sizes)."""
    ys = torch.arange(height, device=device).float() * stride + stride // 2
    xs = torch.arange(width, device=device).float() * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class OnnxPipeline(nn.Module):
    """The exported computation: image -> people (see the module docstring). Batch size 1."""

    def __init__(self, model: nn.Module, params: DetectionParams):
        super().__init__()
        self.model = model
        self.pre_nms_topk = int(params.pre_nms_topk)
        self.nms_threshold = float(params.nms_threshold)
        self.max_detections = int(params.max_detections)
        self.kernel = model.head.controller.kernel_size[0]

    def _controller_inputs(self, tower: Tensor, cells: Tensor) -> Tensor:
        """``[C, h, w]`` box-tower map, ``[k]`` flat cells -> ``[k, C * kk]`` (zero beyond the map, channel-major)."""
        c, h, w = tower.shape
        if self.kernel == 1:
            return tower.reshape(c, h * w)[:, cells].t()
        pad = self.kernel // 2
        padded = nn.functional.pad(tower, (pad, pad, pad, pad)).reshape(c, -1)
        row = torch.div(cells, w, rounding_mode="floor")
        col = cells - row * w
        dy, dx = torch.meshgrid(torch.arange(self.kernel, device=cells.device),
                                torch.arange(self.kernel, device=cells.device), indexing="ij")
        flat = (row[:, None] + dy.reshape(1, -1)) * (w + 2 * pad) + col[:, None] + dx.reshape(1, -1)  # [k, kk]
        patch = padded[:, flat.reshape(-1)].reshape(c, -1, self.kernel * self.kernel)  # [C, k, kk]
        return patch.permute(1, 0, 2).reshape(cells.shape[0], -1)

    def forward(self, image: Tensor, score_threshold: Tensor):
        model = self.model
        dense = model(image)
        device = image.device
        boxes, scores, inputs, locations, levels = [], [], [], [], []
        for level, stride in enumerate(dense.strides):
            cls = dense.cls_logits[level][0]
            _, h, w = cls.shape
            prob = torch.sigmoid(cls).amax(dim=0).reshape(-1)
            rank = prob * torch.sigmoid(dense.centerness[level][0, 0]).reshape(-1)
            masked = torch.where(prob > score_threshold, rank, torch.full_like(rank, -1.0))
            top, cells = masked.topk(min(self.pre_nms_topk, h * w))
            loc = _grid(h, w, stride, device)[cells]
            ltrb = dense.box_reg[level][0].reshape(4, -1)[:, cells].t()
            boxes.append(decode_ltrb(loc, ltrb))
            scores.append(torch.where(top >= 0, torch.sqrt(top.clamp(min=0)), torch.full_like(top, -1.0)))
            inputs.append(self._controller_inputs(dense.ctrl_feats[level][0], cells))
            locations.append(loc)
            levels.append(torch.full_like(cells, level))
        boxes, scores, inputs = torch.cat(boxes), torch.cat(scores), torch.cat(inputs)
        locations, levels = torch.cat(locations), torch.cat(levels)
        keep = nms_op(boxes, scores, self.nms_threshold, NMS_SCORE_FLOOR, self.max_detections)
        boxes, scores, inputs = boxes[keep], scores[keep], inputs[keep]
        locations, levels = locations[keep], levels[keep]

        weight = model.head.controller.weight
        params = nn.functional.linear(inputs.float(), weight.reshape(weight.shape[0], -1), model.head.controller.bias)
        heads = model.dynamic_head.fold(params, locations, model.rel_coord_norm[levels])
        feats = dense.kpt_feats[0]
        f, h3, w3 = feats.shape
        stride = dense.strides[0]
        grid = _grid(h3, w3, stride, device)  # [HW, 2]
        rows = torch.cat([feats.reshape(f, -1), grid.t(), torch.ones_like(grid[:, :1]).t()], dim=0)
        x = heads.first @ rows  # [n * c0, HW]
        if heads.last is not None:
            x = torch.relu(x).reshape(-1, heads.widths[0], h3 * w3)
            for m in heads.mids:
                x = torch.relu(torch.bmm(m, x))
            x = torch.bmm(heads.last, x)
        logits = x.reshape(-1, heads.num_keypoints, h3 * w3)  # [n, K, HW]
        peak, cell = logits.max(dim=2)
        if model.keypoint_score == "softmax":
            kscore = 1.0 / torch.exp(logits - peak[:, :, None]).sum(dim=2)
        else:
            kscore = peak
        k = heads.num_keypoints
        channel = torch.arange(2 * k, device=device).reshape(1, k, 2)  # dx_k, dy_k interleaved
        offsets = dense.kpt_offsets[0].reshape(-1)[channel * (h3 * w3) + cell[:, :, None]]  # [n, K, 2]
        xy = grid[cell] + offsets.float() * offset_unit_scale(model.offset_unit, stride)
        keypoints = torch.cat([xy, kscore[:, :, None]], dim=2)
        return boxes, scores, keypoints, levels, locations


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FCPoseError(f"--size expects HxW, e.g. 800x1344, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise FCPoseError(f"--size must be positive, got {text!r}")
    return h, w


def export_onnx(model: nn.Module, out: str | Path, *, size: tuple[int, int] | None = None, dynamic: bool = True,
                params: DetectionParams | None = None, verify: bool = True, report: dict | None = None) -> Path:
    """Export ``model`` (an FCPose; not modified: a folded copy is exported) to ``out``.

    ``dynamic=True``: any H and W that are multiples of the size divisibility (traced at ``size`` or a
    small default). ``dynamic=False``: the graph only accepts ``size`` = (H, W) (each rounded up to the
    size divisibility). ``verify`` checks the file with ``onnx.checker`` and, when onnxruntime is installed,
    compares its outputs with PyTorch's on a sample input (:func:`compare_with_onnxruntime`); the file is
    written atomically, and only if it passes. A dict passed as ``report`` receives
    the comparison's summary (left empty when onnxruntime is absent).
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise FCPoseError(f"ONNX export needs the 'export' extras (pip install fcpose[export]): {exc}") from None
    from ..data.transforms import padded_size
    from ..inference.optimize import optimize_for_inference

    cfg = model.cfg
    params = params or DetectionParams.from_config(cfg.test)
    div = max(1, int(model.size_divisibility))
    if size is None:
        size = (8 * div, 12 * div) if dynamic else (cfg.input.min_size_test, cfg.input.max_size_test)
    h, w = padded_size(size[0], size[1], div)
    net = optimize_for_inference(model.to("cpu"), channels_last=False)
    pipeline = OnnxPipeline(net, params).eval()
    example = (torch.zeros(1, 3, h, w), torch.tensor(params.score_threshold, dtype=torch.float32))
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = {"image": {2: div * torch.export.Dim("h32", min=1, max=4096 // div),
                                    3: div * torch.export.Dim("w32", min=1, max=4096 // div)},
                          "score_threshold": None}
    out = Path(out)
    check_output_file(out, "ONNX file")
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation/future warnings are not for our users
            program = torch.onnx.export(pipeline, example, dynamo=True, opset_version=OPSET,
                                        input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                                        dynamic_shapes=dynamic_shapes,
                                        custom_translation_table={torch.ops.fcpose.nms.default: _nms_to_onnx},
                                        external_data=False, verbose=False)
    finally:
        logger.setLevel(level)
    meta = {"format": EXPORT_FORMAT, "inputs": "image: float32 [1, 3, H, W] normalised, zero-padded; "
            "score_threshold: float32 []", "outputs": "boxes, scores, keypoints, levels, locations (input pixels)",
            "nms": "in graph (ONNX NonMaxSuppression)", "dynamic": bool(dynamic),
            "size": None if dynamic else [h, w], "size_divisibility": div, "detection_params": vars(params)}
    program.model.metadata_props.update({"fcpose_export": json.dumps(meta), "fcpose_config": json.dumps(to_dict(cfg))})

    def write(tmp: str) -> None:
        program.save(tmp)
        if verify:
            import onnx

            onnx.checker.check_model(tmp)
            compared = compare_with_onnxruntime(pipeline, tmp, (h, w), params.score_threshold)
            if compared is not None and report is not None:
                report.update(compared)

    atomic_file(out, write, "ONNX file")  # the file appears only once it is complete and verified
    return out


def compare_with_onnxruntime(pipeline: nn.Module, path: str | Path, size: tuple[int, int],
                             score_threshold: float) -> dict | None:
    """Run the exported file with onnxruntime and the PyTorch pipeline on the same sample input (a fixed
    pseudo-random normalised image of ``size``) and compare their outputs; :class:`FCPoseError` when they
    differ (same people at the same locations, scores within 1e-3, boxes within 0.05 px, keypoints within
    0.5 px). The model's threshold is used, or 0 if it finds nobody on the sample, so that the dynamic heads
    are compared too. Returns a summary, or None when onnxruntime is not installed (nothing compared)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.randn(1, 3, size[0] // 8, size[1] // 8, generator=gen),
                                            size=size, mode="bilinear", align_corners=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for thr in (score_threshold, 0.0):
        with torch.no_grad():
            ref = [t.numpy() for t in pipeline(image, torch.tensor(thr, dtype=torch.float32))]
        if ref[1].shape[0] > 0 or thr == 0.0:
            break
    got = session.run(None, {"image": image.numpy(), "score_threshold": np.asarray(thr, dtype=np.float32)})
    named = dict(zip(OUTPUT_NAMES, zip(ref, got)))
    n_ref, n_got = named["scores"][0].shape[0], named["scores"][1].shape[0]
    problem = None
    if n_ref != n_got:
        problem = f"{n_got} people from onnxruntime, {n_ref} from PyTorch"
    elif not np.array_equal(*named["locations"]):
        problem = "the people come from different locations"
    diffs = {}
    if problem is None and n_ref:
        diffs = {"scores": float(np.abs(named["scores"][0] - named["scores"][1]).max()),
                 "boxes_px": float(np.abs(named["boxes"][0] - named["boxes"][1]).max()),
                 "keypoints_px": float(np.abs(named["keypoints"][0][..., :2] - named["keypoints"][1][..., :2]).max())}
        limits = {"scores": 1e-3, "boxes_px": 0.05, "keypoints_px": 0.5}
        over = [f"{k} differ by {v:.3g} (limit {limits[k]:g})" for k, v in diffs.items() if not v <= limits[k]]
        problem = "; ".join(over) or None
    if problem is not None:
        raise FCPoseError(f"the exported model does not match PyTorch on a sample {size[0]}x{size[1]} input: "
                          f"{problem}; nothing was written")
    return {"size": list(size), "score_threshold": float(thr), "people": int(n_ref), **diffs}

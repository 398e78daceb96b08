"""ONNX export of the whole FCPose pipeline: network, selection, NMS, dynamic keypoint heads, decoding.

The exported graph (opset 18, exported with ``torch.onnx.export(dynamo=True)``) has

* inputs ``image`` — ``float32 [1, 3, H, W]``: the **normalised and zero-padded** image, exactly what
  ``FCPose.forward`` takes (RGB/BGR order, mean and std of the model's config, H and W multiples of the
  size divisibility, 32); and ``score_threshold`` — ``float32 []``, the minimum class probability;
* outputs, for the N detected people (N is dynamic, 0 included), in **network-input pixels**:
  ``boxes [N, 4]`` xyxy, ``scores [N]``, ``keypoints [N, K, 3]`` (x, y, score), ``levels [N]`` int64
  (pyramid level of the generating location) and ``locations [N, 2]`` (that location, x, y).

**NMS is inside the graph**, as the ONNX ``NonMaxSuppression`` operator (class-agnostic, IoU > ``nms_threshold``
suppresses, at most ``max_detections`` kept — fixed at export from the config). The graph is the model followed by the
traceable form of :meth:`fcpose.postprocess.PostProcessor.people` — the same selection, controller, dynamic-head fast
path and decoding as PyTorch inference, with static shapes (unlike the PyTorch post-processing, boxes tied with the
``max_detections``-th score are not all kept).

Rescaling to the original image, clipping and dropping empty boxes happen outside, in
:class:`fcpose.export.onnx_predictor.OnnxPredictor`, with the same code as the PyTorch
:class:`~fcpose.Predictor`. The model's config and these conventions are stored in the ONNX metadata
(``fcpose_config``, ``fcpose_export``), so the file is self-describing."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import TestConfig, to_dict
from ..errors import FCPoseError
from ..fileio import atomic_file, check_output_file
from ..model.fcpose import FCPose
from ..ops.boxes import traceable_nms  # noqa: F401  (registers torch.ops.fcpose.nms)
from ..postprocess import PostProcessor

__all__ = ["OnnxPipeline", "export_onnx", "EXPORT_FORMAT", "INPUT_NAMES", "OUTPUT_NAMES", "OPSET"]

EXPORT_FORMAT = "fcpose-onnx-1"
OPSET = 18
INPUT_NAMES = ["image", "score_threshold"]
OUTPUT_NAMES = ["boxes", "scores", "keypoints", "levels", "locations"]


def _nms_to_onnx(boxes, scores, iou_threshold: float, score_threshold: float, max_output: int):
    """ONNX ``NonMaxSuppression`` for :func:`fcpose.ops.boxes.traceable_nms`."""
    from onnxscript import opset18 as op

    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]), op.Unsqueeze(scores, [0, 1]), op.Constant(value_ints=[max_output]),
        op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]))
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])  # [n, 3] (batch, class, box) -> box indices


class OnnxPipeline(nn.Module):
    """The exported computation, batch size 1: the model, then the post-processor's traceable
    :meth:`~fcpose.postprocess.PostProcessor.people` (selection, NMS, controller, dynamic heads, decoding).

    Args:
        model: The network (a folded copy, as ``export_onnx`` passes it).
        postprocessor: Its post-processor.
    """

    def __init__(self, model: FCPose, postprocessor: PostProcessor):
        super().__init__()
        self.model = model
        self.postprocessor = postprocessor

    def forward(self, image: Tensor, score_threshold: Tensor):
        """The network and the traceable people selection and decoding of one image.

        Args:
            image: ``[1, 3, H, W]`` normalised, zero-padded image.
            score_threshold: 0-d float32 tensor, the lowest detection score kept.

        Returns:
            (tuple[Tensor, ...]): ``boxes``, ``scores``, ``keypoints``, ``levels`` and ``locations``, in input pixels.
        """
        dense = self.model(image)
        people, keypoints = self.postprocessor.people(self.model, dense, score_threshold=score_threshold,
                                                      traceable=True)
        return people.boxes, people.scores, keypoints, people.levels, people.locations


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FCPoseError(f"--size expects HxW, e.g. 800x1344, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise FCPoseError(f"--size must be positive, got {text!r}")
    return h, w


def export_onnx(model: FCPose, out: str | Path, *, size: tuple[int, int] | None = None, dynamic: bool = True,
                params: TestConfig | None = None, verify: bool = True, report: dict | None = None) -> Path:
    """Export ``model`` (an FCPose; not modified: a folded copy is exported) to ``out``, written atomically and
    only once it passes ``verify``.

    Args:
        model: The model to export, with its config (``build_model``, ``load_model``).
        out: The ``.onnx`` file to write.
        size: (H, W) to trace at, or with ``dynamic=False`` the only size the graph accepts (rounded up to the size
            divisibility); default: a small size, or with ``dynamic=False`` the config's test sizes.
        dynamic: The graph accepts any H and W that are multiples of the size divisibility.
        params: The test-time parameters fixed in the graph; default: the config's.
        verify: Check the file with ``onnx.checker`` and, when onnxruntime is installed, compare its outputs with
            PyTorch's on a sample input (:func:`compare_with_onnxruntime`).
        report: A dict that receives the comparison's summary (left empty when onnxruntime is absent).

    Returns:
        ``out``.

    Raises:
        FCPoseError: The export extras are missing, the model has no config, or the file differs from PyTorch.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise FCPoseError(f"ONNX export needs the 'export' extras (pip install fcpose[export]): {exc}") from None
    from ..data.transforms import padded_size
    from ..model.deploy import optimize_for_inference

    cfg = model.cfg
    if cfg is None:
        raise FCPoseError("ONNX export needs a model with its config (build_model or load_model): the file stores it")
    post = PostProcessor.from_model(model, params)
    params = post.params
    div = max(1, int(model.size_divisibility))
    if size is None:
        size = (8 * div, 12 * div) if dynamic else (cfg.input.min_size_test, cfg.input.max_size_test)
    h, w = padded_size(size[0], size[1], div)
    net = optimize_for_inference(model.to("cpu"), channels_last=False)
    pipeline = OnnxPipeline(net, post).eval()
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

"""``fcpose export``: a checkpoint -> an ONNX file or an OpenVINO IR (fp32 or int8) of the whole pipeline."""

from __future__ import annotations

import sys

from ..errors import FCPoseError
from ..fileio import check_output_file
from ..weights.checkpoint import load_model
from .onnx import export_onnx, parse_size


def run_export(weights: str, out: str, *, format: str = "onnx", size: str | None = None,
               overrides: list[str] | None = None, int8: bool = False, calibration: str | None = None,
               calib_images: int = 300, fast_bias_correction: bool = True, int8_heads: bool = False) -> int:
    """Export ``weights`` to ``out``; returns the exit status. ``size``: "HxW", the only padded input size
    the graph accepts (default: any size). The int8 options are for ``format="openvino"``. Wrong option
    combinations, a bad ``size`` or ``out`` fail before the model loads."""
    hw = parse_size(size) if size else None
    if format != "openvino" and (int8 or calibration or int8_heads):
        raise FCPoseError("--int8, --calibration and --int8-heads are for --format openvino")
    if calibration and not int8:
        raise FCPoseError("--calibration is for --int8")
    shape = "dynamic" if hw is None else "x".join(map(str, hw))
    if format == "openvino":
        from .openvino import export_openvino, require_openvino

        require_openvino("--format openvino")  # before loading the model: fail fast
        check_output_file(out, "OpenVINO IR")  # before the slow part
        model = load_model(weights, device="cpu", overrides=overrides)
        path = export_openvino(model, out, size=hw, dynamic=hw is None, int8=int8, calibration=calibration,
                               calib_images=calib_images, keep_heads_fp32=not int8_heads,
                               fast_bias_correction=fast_bias_correction,
                               log=lambda msg: print(f"[export] {msg}", file=sys.stderr))
        print(f"wrote {path}{' int8' if int8 else ''} ({shape} input size)", file=sys.stderr)
        return 0
    check_output_file(out, "ONNX file")  # before the slow part
    model = load_model(weights, device="cpu", overrides=overrides)
    report: dict = {}
    path = export_onnx(model, out, size=hw, dynamic=hw is None, report=report)
    print(f"wrote {path} ({shape} input size); {_check_note(report)}", file=sys.stderr)
    return 0


def _check_note(report: dict) -> str:
    """What was checked after an ONNX export: the onnxruntime comparison of ``report``, else the graph check."""
    if not report:
        return "graph checked with onnx.checker; install onnxruntime to also compare outputs with PyTorch"
    people = report["people"]
    diffs = (f": scores within {report['scores']:.1e}, boxes {report['boxes_px']:.3f} px, keypoints "
             f"{report['keypoints_px']:.3f} px" if people else "")
    return (f"outputs checked against onnxruntime on a sample {report['size'][0]}x{report['size'][1]} input "
            f"({people} people at threshold {report['score_threshold']:g}{diffs})")

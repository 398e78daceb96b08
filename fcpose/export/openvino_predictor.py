"""Run an ``fcpose export --format openvino`` IR (fp32 or int8) with OpenVINO, like :class:`~fcpose.Predictor`.

The IR is the ONNX export's graph, so this is :class:`~fcpose.export.onnx_predictor.OnnxPredictor` with an
OpenVINO compiled model as its session: the same preprocessing, the same rescaling of boxes and keypoints
to the image and the same :class:`~fcpose.structures.PoseDetections` (no second copy of selection, heads or
decoding). ``fcpose predict|eval|bench --backend openvino --weights MODEL.xml``.

The CPU plugin runs the layers that are not int8 in fp32 (``INFERENCE_PRECISION_HINT=f32``): its default on
CPUs with bf16 instructions is bf16, which moves scores by ~1e-3 and keypoints by pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cpu import cpu_info, instruction_set, onednn_cap_below_cpu
from ..errors import CheckpointError, FCPoseError, first_line
from .onnx_predictor import OnnxPredictor

__all__ = ["OpenVinoPredictor", "require_openvino", "read_ir_metadata"]

RT_EXPORT = ["fcpose", "export"]  # where the IR keeps the export's metadata (rt_info)
RT_CONFIG = ["fcpose", "config"]
_OV_PREAMBLE = ("Exception from", "Check ")  # OpenVINO's errors start with these lines; the message comes after


def require_openvino(what: str = "OpenVINO"):
    """``import openvino``, or one clear line saying what to install or which setting would crash it.

    Args:
        what: What needs it, for the message.

    Returns:
        The ``openvino`` module.

    Raises:
        FCPoseError: OpenVINO is not installed, or ``ONEDNN_MAX_CPU_ISA`` would crash it.
    """
    try:
        import openvino
    except ImportError:
        raise FCPoseError(f"{what} needs the openvino package (pip install 'fcpose[openvino]')") from None
    cap = onednn_cap_below_cpu()
    if cap:
        raise FCPoseError(f"{what}: ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below this CPU's "
                          f"{instruction_set(cpu_info()[1])}, which crashes OpenVINO's CPU plugin: unset it")
    return openvino


def read_ir_metadata(ov_model, path: Path) -> dict[str, str]:
    """``{"fcpose_export": ..., "fcpose_config": ...}`` JSON strings of an IR, or :class:`CheckpointError`.

    Args:
        ov_model: The IR, as OpenVINO read it.
        path: Its file, for the message.

    Returns:
        The two JSON strings by name.

    Raises:
        CheckpointError: The IR has no fcpose metadata.
    """
    if not (ov_model.has_rt_info(RT_EXPORT) and ov_model.has_rt_info(RT_CONFIG)):
        raise CheckpointError(f"{path} is not an fcpose OpenVINO export (no fcpose metadata)")
    return {"fcpose_export": ov_model.get_rt_info(RT_EXPORT).astype(str),
            "fcpose_config": ov_model.get_rt_info(RT_CONFIG).astype(str)}


class OpenVinoPredictor(OnnxPredictor):
    """``predictor(image)`` / ``predictor.predict(images)`` -> :class:`PoseDetections` in image pixels, from an
    OpenVINO IR. ``threads`` sets OpenVINO's inference threads (default: all cores); CPU only."""

    model_kind = "OpenVINO model"

    def _open_session(self, path: Path, device: str, threads: int | None):
        ov = require_openvino("--backend openvino")
        if str(device).lower() != "cpu":
            raise FCPoseError(f"--backend openvino runs on the CPU here (--device cpu), not {device}")
        if not path.is_file():
            raise CheckpointError(f"OpenVINO model not found: {path}")
        if not path.with_suffix(".bin").is_file():
            raise CheckpointError(f"OpenVINO model {path}: its weights file {path.with_suffix('.bin').name} is missing")
        with open(path, "rb") as f:
            head = f.read(4096)
        if b"<net" not in head:  # not an IR: OpenVINO would try its other frontends, which log to stderr
            raise CheckpointError(f"cannot load OpenVINO model {path}: not an OpenVINO IR .xml (no <net> element)")
        core = ov.Core()
        try:
            self.ov_model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages for unreadable IRs
            why = first_line(exc, 200, skip=_OV_PREAMBLE)
            raise CheckpointError(f"cannot load OpenVINO model {path}: {why}") from None
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            session = core.compile_model(self.ov_model, "CPU", config)
        except Exception as exc:
            why = first_line(exc, 200, skip=_OV_PREAMBLE)
            raise CheckpointError(f"cannot compile OpenVINO model {path}: {why}") from None
        self._request = session.create_infer_request()
        self._output_names = [o.get_any_name() for o in session.outputs]
        return session

    def _metadata(self, path: Path) -> dict[str, str]:
        return read_ir_metadata(self.ov_model, path)

    @property
    def precision(self) -> str:
        """``fp32`` or ``int8`` (from the export's metadata)."""
        return self.export_info.get("openvino", {}).get("precision", "fp32")

    def _io_shapes(self) -> tuple[dict[str, list], dict[str, list]]:
        dims = lambda port: [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        return ({i.get_any_name(): dims(i) for i in self.ov_model.inputs},
                {o.get_any_name(): dims(o) for o in self.ov_model.outputs})

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(feeds)
        return {name: np.array(result[port]) for name, port in zip(self._output_names, self.session.outputs)}

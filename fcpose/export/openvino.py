"""OpenVINO IR export (``fcpose export --format openvino``), fp32 or int8 (NNCF post-training quantisation).

The IR is the ONNX export (:mod:`fcpose.export.onnx`) read by OpenVINO's ONNX frontend: the same graph — network,
selection, NMS, dynamic keypoint heads, decoding — with the same inputs and outputs, so
:class:`fcpose.export.openvino_predictor.OpenVinoPredictor` is the onnxruntime predictor on another runtime. The IR
carries the ONNX metadata (``fcpose_export``, ``fcpose_config``) as ``rt_info`` ``fcpose/export`` and ``fcpose/config``;
``fcpose_export["openvino"]`` adds the precision and, for int8, how it was calibrated.

**int8**: ``nncf.quantize`` on real calibration images (a folder or a COCO annotation file's images), each preprocessed
exactly as at inference (resize rule, normalisation, zero padding; see
:meth:`~fcpose.export.onnx_predictor.OnnxPredictor.prepare`). Convolutions are quantised (8-bit weights and
activations); by default every ``MatMul`` is left in fp32 — these are the controller (the dynamic-head parameters) and
the dynamic keypoint heads, a few MFLOP per person, where 8-bit activations would move the arg-max cell of the heatmaps
(``keep_heads_fp32=False`` quantises them too; see the README's measurement). ``fast_bias_correction`` (NNCF's default)
is the quick bias correction; ``False`` runs NNCF's full BiasCorrection, slower and sometimes more accurate."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..config import TestConfig
from ..errors import CheckpointError, FCPoseError, InputError
from ..fileio import undo_new_dirs
from ..model.fcpose import FCPose
from .openvino_predictor import RT_CONFIG, RT_EXPORT, OpenVinoPredictor, require_openvino

__all__ = ["export_openvino", "onnx_to_openvino", "calibration_images", "require_openvino", "IR_PRECISIONS"]

IR_PRECISIONS = ("fp32", "int8")


def _require_nncf():
    try:
        import nncf
    except ImportError:
        raise FCPoseError("int8 export needs the nncf package (pip install 'fcpose[openvino]')") from None
    return nncf


def calibration_images(source: str | Path, limit: int | None = None) -> list[Path]:
    """Image files for calibration: a folder's images (sorted, not recursive), or the images of a COCO
    annotation JSON (``file_name`` relative to the JSON's folder or its ``images/`` subfolder), in id order.

    Args:
        source: A folder of images or a COCO annotation JSON.
        limit: The most images returned; ``None``: all.

    Returns:
        The image files.

    Raises:
        InputError: ``source`` does not exist, is neither, names images that are missing, or holds none.
    """
    from ..data.images import IMAGE_EXTENSIONS

    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and
                       not p.name.startswith("."))
    elif source.is_file():
        try:
            data = json.loads(source.read_text())
            names = [im["file_name"] for im in sorted(data["images"], key=lambda im: im["id"])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--calibration {source}: not a folder of images nor a COCO annotation file ({exc})") \
                from None
        paths = []
        for name in names:
            found = [c for c in (source.parent / name, source.parent / "images" / name) if c.is_file()]
            if not found:
                raise InputError(f"--calibration {source}: image {name} not found next to it (nor in images/)")
            paths.append(found[0])
    else:
        raise InputError(f"--calibration {source}: no such folder or annotation file")
    if not paths:
        raise InputError(f"--calibration {source}: no images")
    return paths[:limit] if limit else paths


def _save_ir(ov_model, out: Path) -> Path:
    """``out`` (.xml) and its .bin, complete or absent: saved in a temporary folder next to it, then moved
    (the .bin first, so an .xml never refers to a partial .bin)."""
    ov = require_openvino("OpenVINO export")

    with undo_new_dirs(out.parent):  # a failed save leaves no empty folder it made
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as tmp:
            tmp_xml = Path(tmp) / "model.xml"
            ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
            os.replace(tmp_xml.with_suffix(".bin"), out.with_suffix(".bin"))
            os.replace(tmp_xml, out)
    for path in (out, out.with_suffix(".bin")):
        path.chmod(0o644)  # the temporary folder's files are private
    return out


def export_openvino(model: FCPose, out: str | Path, *, size: tuple[int, int] | None = None, dynamic: bool = True,
                    params: TestConfig | None = None, log=None, **options) -> Path:
    """Export ``model`` (an FCPose) to the OpenVINO IR ``out`` (.xml, with its .bin beside it).
    ``size``/``dynamic``/``params`` as :func:`fcpose.export.onnx.export_onnx`; ``options`` (``int8``, ``calibration``,
    ...) as :func:`onnx_to_openvino`.

    Args:
        model: The model to export, with its config.
        out: The ``.xml`` file to write.
        size: As ``export_onnx``.
        dynamic: As ``export_onnx``.
        params: As ``export_onnx``.
        log: Called with a line per step, or ``None``.
        **options: ``int8``, ``calibration``, ``calib_images``, ... as ``onnx_to_openvino``.

    Returns:
        ``out``.

    Raises:
        FCPoseError: OpenVINO (or NNCF for int8) is not installed.
        InputError: ``out`` is not an ``.xml`` file, or int8 lacks usable calibration images.
    """
    from .onnx import export_onnx

    _check_options(Path(out), **options)  # before the (slow) ONNX export
    say = log or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="fcpose_ov_") as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", size=size, dynamic=dynamic, params=params,
                                verify=False)
        say("ONNX graph exported")
        return onnx_to_openvino(onnx_path, out, log=log, **options)


def _check_options(out: Path, int8: bool = False, calibration=None, calib_images: int = 300, **_) -> None:
    require_openvino("OpenVINO export")
    if int8:
        _require_nncf()
    if out.suffix.lower() != ".xml":
        raise InputError(f"--out {out}: an OpenVINO IR is an .xml file (with its .bin beside it)")
    if int8:
        if calibration is None:
            raise InputError("--int8 needs --calibration DIR_OR_ANN.json (>= 100 images of your own domain)")
        if calib_images < 1:
            raise InputError("--calib-images must be >= 1")
        if str(calibration) != "random":
            calibration_images(calibration, calib_images)


def onnx_to_openvino(onnx_path: str | Path, out: str | Path, *, int8: bool = False,
                     calibration: str | Path | None = None, calib_images: int = 300, keep_heads_fp32: bool = True,
                     fast_bias_correction: bool = True, seed: int = 0, min_size: int | None = None,
                     max_size: int | None = None, log=None) -> Path:
    """An ``fcpose export`` ONNX file -> the OpenVINO IR ``out``, fp32 or (``int8=True``) quantised with NNCF on
    up to ``calib_images`` images of ``calibration`` (a folder or a COCO annotation JSON; ``"random"``: uniform
    noise images, only for speed measurements of random weights), resized as at inference with
    ``min_size``/``max_size`` (default: the config's test sizes).

    Args:
        onnx_path: An ``fcpose export`` ``.onnx`` file.
        out: The ``.xml`` file to write.
        int8: Quantise the weights and activations to int8 with NNCF.
        calibration: A folder of images, a COCO annotation JSON, or ``"random"``.
        calib_images: The most calibration images used.
        keep_heads_fp32: Keep the controller's and the dynamic heads' matrix products in float32.
        fast_bias_correction: NNCF's fast bias correction (else its slower, full one).
        seed: The seed of the ``"random"`` images.
        min_size: The short side calibration images are resized to; default: the config's test size.
        max_size: The longest their long side may get; default: the config's test size.
        log: Called with a line per step, or ``None``.

    Returns:
        ``out``.

    Raises:
        FCPoseError: OpenVINO (or NNCF for int8) is not installed.
        CheckpointError: ``onnx_path`` is not an fcpose export.
        InputError: ``out`` is not an ``.xml`` file, or int8 lacks usable calibration images.
    """
    out = Path(out)
    _check_options(out, int8=int8, calibration=calibration, calib_images=calib_images)
    ov = require_openvino("OpenVINO export")

    say = log or (lambda msg: None)
    ov_model = ov.convert_model(str(onnx_path))
    try:
        meta = {key: ov_model.get_rt_info(["framework", key]).astype(str) for key in ("fcpose_export", "fcpose_config")}
    except RuntimeError:
        raise CheckpointError(f"{onnx_path} is not an fcpose ONNX export (no fcpose metadata)") from None
    export = json.loads(meta["fcpose_export"])
    export["openvino"] = {"precision": "fp32", "version": ov.get_version()}
    if not int8:
        return _save_ir(_with_meta(ov_model, export, meta["fcpose_config"]), out)
    import nncf

    from ..data.images import as_rgb_array

    say("quantising to int8 (NNCF)")
    with tempfile.TemporaryDirectory(prefix="fcpose_ov_") as tmp:
        fp32_xml = _save_ir(_with_meta(ov_model, export, meta["fcpose_config"]), Path(tmp) / "fp32.xml")
        # the inference preprocessing, for the calibration inputs
        pre = OpenVinoPredictor(fp32_xml, min_size=min_size, max_size=max_size)
    if str(calibration) == "random":
        rng = np.random.default_rng(seed)
        h, w = pre.static_size or (pre.min_size, pre.max_size)
        items = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(calib_images)]
        source = "random uniform noise images"
    else:
        items, source = calibration_images(calibration, calib_images), str(calibration)

    def transform(item):
        tensor, _ = pre.prepare(as_rgb_array(item))  # a path or an RGB array
        return {"image": pre.pad_input(tensor).numpy(),
                "score_threshold": np.asarray(pre.params.score_threshold, dtype=np.float32)}

    nncf.set_log_level(logging.WARNING)  # not its per-node INFO lines; the progress bars stay
    kwargs = {"ignored_scope": nncf.IgnoredScope(types=["MatMul"])} if keep_heads_fp32 else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow in NNCF's statistics of huge activations
        ov_model = nncf.quantize(ov_model, nncf.Dataset(items, transform), subset_size=len(items),
                                 fast_bias_correction=fast_bias_correction, **kwargs)
    export["openvino"].update({"precision": "int8", "calibration": source, "calibration_images": len(items),
                               "nncf": nncf.__version__, "fast_bias_correction": bool(fast_bias_correction),
                               "fp32_ops": "MatMul (controller, dynamic heads)" if keep_heads_fp32 else "none"})
    return _save_ir(_with_meta(ov_model, export, meta["fcpose_config"]), out)


def _with_meta(ov_model, export: dict, config_json: str):
    ov_model.set_rt_info(json.dumps(export), RT_EXPORT)
    ov_model.set_rt_info(config_json, RT_CONFIG)
    return ov_model

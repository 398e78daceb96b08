"""Official AdelaiDet FCPose checkpoints (detectron2 layout) -> fcpose checkpoints (docs/official_checkpoints.md).

:func:`convert_official` renames every entry of a bare or ``{"model": ...}`` detectron2 state dict, upcasts
half-precision tensors, reshapes the controller, moves ``sizes_of_interest`` into the config and returns an
fcpose checkpoint dict for ``fcpose_r50_official`` or ``fcpose_r101_official`` (told apart by the res4 blocks);
an unknown entry, a missing one or a wrong shape is a :class:`~fcpose.errors.CheckpointError` naming them.

Name mapping (official -> fcpose)::

    backbone.bottom_up.stem.conv1[.norm]          -> backbone.conv1 / backbone.bn1
    backbone.bottom_up.res{2..5}.j.convN[.norm]   -> backbone.layer{1..4}.j.convN / .bnN
    backbone.bottom_up.res{2..5}.j.shortcut[.norm]-> backbone.layer{1..4}.j.downsample.0 / .1
    backbone.fpn_lateral{3,4,5} / fpn_output{3,4,5} -> fpn.lateral.{0,1,2} / fpn.output.{0,1,2}
    backbone.top_block.p6 / p7                    -> fpn.p6 / fpn.p7
    proposal_generator.fcos.fcos_head.*           -> head.* (ctrness -> centerness)
    proposal_generator.fcpose_head.atten_producer -> head.controller ([2737, 2304] -> [2737, 256, 3, 3]:
                                                     F.unfold is channel-major, c * 9 + ky * 3 + kx)
    proposal_generator.basis_module.refine / tower -> keypoint_branch.refine / tower
    proposal_generator.fcpose_head.sizes_of_interest -> config model.keypoint.rel_coord_norm (and
                                                     model.fcos.sizes_of_interest, input.max_size_train)

The basis module's training-only auxiliary heads are kept (``model.keypoint.aux_heads: true``, for the official
training recipe) unless ``keep_aux=False``; ``num_batches_tracked`` counters of frozen backbone norms are dropped."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from ..config import FCPoseConfig, load_config
from ..errors import CheckpointError
from .files import StateDictReport, checkpoint_dict

OFFICIAL_MARKER = "proposal_generator.fcpose_head."
PRESET_BY_DEPTH = {50: "fcpose_r50_official", 101: "fcpose_r101_official"}
RES4_BLOCKS = {6: 50, 23: 101}
AUX_PREFIXES = tuple(f"proposal_generator.basis_module.{name}." for name in
                     ("seg_head", "p3_logits", "upsampler", "p1_logits"))
SIZES_KEY = "proposal_generator.fcpose_head.sizes_of_interest"

_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"backbone\.bottom_up\.stem\.conv1\.weight"), lambda m: "backbone.conv1.weight"),
    (re.compile(r"backbone\.bottom_up\.stem\.conv1\.norm\.(weight|bias|running_mean|running_var)"),
     lambda m: f"backbone.bn1.{m[1]}"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.weight"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.(weight|bias|running_mean|running_var)"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.weight"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.norm\.(weight|bias|running_mean|running_var)"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"backbone\.fpn_(lateral|output)([3-5])\.(weight|bias)"),
     lambda m: f"fpn.{m[1]}.{int(m[2]) - 3}.{m[3]}"),
    (re.compile(r"backbone\.top_block\.(p6|p7)\.(weight|bias)"), lambda m: f"fpn.{m[1]}.{m[2]}"),
    (re.compile(r"proposal_generator\.fcos\.fcos_head\.((?:cls|bbox)_tower\.\d+\.(?:weight|bias))"),
     lambda m: f"head.{m[1]}"),
    (re.compile(r"proposal_generator\.fcos\.fcos_head\.(cls_logits|bbox_pred)\.(weight|bias)"),
     lambda m: f"head.{m[1]}.{m[2]}"),
    (re.compile(r"proposal_generator\.fcos\.fcos_head\.ctrness\.(weight|bias)"), lambda m: f"head.centerness.{m[1]}"),
    (re.compile(r"proposal_generator\.fcos\.fcos_head\.scales\.(\d+)\.scale"), lambda m: f"head.scales.{m[1]}.scale"),
    (re.compile(r"proposal_generator\.fcpose_head\.atten_producer\.(weight|bias)"),
     lambda m: f"head.controller.{m[1]}"),
    (re.compile(r"proposal_generator\.basis_module\.((?:refine|tower|seg_head|p3_logits|upsampler|p1_logits)\.\S+)"),
     lambda m: f"keypoint_branch.{m[1]}"),
]
# Frozen (detectron2 FrozenBatchNorm2d) backbone norms have no step counter; drop one if a file has it.
_FROZEN_COUNTER = re.compile(r"backbone\.bottom_up\.(stem|res[2-5]\.\d+)\.(conv[1-3]|shortcut)?\.?norm\."
                             r"num_batches_tracked")


def official_state_dict(obj: Any) -> dict | None:
    """The detectron2 state dict inside an official file (``{"model": sd, ...}`` or a bare sd), else None."""
    sd = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if isinstance(sd, dict) and any(isinstance(k, str) and k.startswith(OFFICIAL_MARKER) for k in sd):
        return sd
    return None


def is_official_checkpoint(obj: Any) -> bool:
    return official_state_dict(obj) is not None


def official_key_to_fcpose(key: str) -> str | None:
    """The fcpose name of an official state-dict entry, or None if it has no counterpart."""
    for pattern, target in _RULES:
        m = pattern.fullmatch(key)
        if m:
            return target(m)
    return None


def detect_depth(sd: dict, source: str = "checkpoint") -> int:
    """ResNet depth of an official state dict from its number of res4 blocks (6: R-50, 23: R-101)."""
    blocks = {int(m[1]) for k in sd if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", str(k)))}
    if not blocks:
        raise CheckpointError(f"{source}: official FCPose checkpoint without backbone.bottom_up.res4.* entries "
                              f"(only ResNet-50/101 FCPose checkpoints can be converted)")
    if len(blocks) not in RES4_BLOCKS:
        raise CheckpointError(f"{source}: the backbone has {len(blocks)} res4 blocks; only ResNet-50 (6) and "
                              f"ResNet-101 (23) FCPose checkpoints can be converted")
    return RES4_BLOCKS[len(blocks)]


def _as_tensor(key: str, value: Any, source: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{source}: entry {key} is a {type(value).__name__}, not a tensor")
    return value


def _expected_state(cfg: FCPoseConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the state dict of the model ``cfg`` describes (built without memory)."""
    from ..model.fcpose import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def convert_official(obj: Any, source: str = "checkpoint", keep_aux: bool | None = None) -> dict:
    """An official AdelaiDet FCPose checkpoint (loaded dict) -> an fcpose checkpoint dict.

    ``keep_aux``: keep the basis module's auxiliary training heads (``model.keypoint.aux_heads``: needed to
    train or fine-tune with the official recipe, unused at inference). Default: keep them when the file has
    them, so that a converted release can be fine-tuned exactly like the official trainer would.

    The result is what :func:`fcpose.weights.checkpoint.save_checkpoint` writes
    (:func:`~fcpose.weights.files.checkpoint_dict`), plus a ``conversion`` report: the source, the preset used, the
    dropped entries and the number of tensors upcast to float32. Entries that do not fit are one
    :class:`~fcpose.weights.files.StateDictReport` (in the official names) raised as a :class:`CheckpointError`."""
    sd = official_state_dict(obj)
    if sd is None:
        raise CheckpointError(f"{source} is not an official AdelaiDet FCPose checkpoint (no {OFFICIAL_MARKER}* "
                              f"entries)")
    depth = detect_depth(sd, source)
    preset = PRESET_BY_DEPTH[depth]
    sizes = _sizes_of_interest(sd, source)
    if keep_aux is None:
        keep_aux = any(str(k).startswith(AUX_PREFIXES) for k in sd)
    cfg = _official_config(preset, sizes, keep_aux)
    fit = StateDictReport(source=source, kind="official",
                          headline=f"{source} does not match the official FCPose R-{depth} layout")
    out, dropped, upcast = _convert_entries(sd, _expected_state(cfg), keep_aux, fit, source)
    report = {"source": source, "preset": preset, "depth": depth, "sizes_of_interest": [int(v) for v in sizes],
              "entries": len(sd), "converted": len(out), "upcast_to_float32": upcast, "dropped": dropped,
              "auxiliary_heads": bool(keep_aux),
              "note": ("kept the training-only auxiliary heads (seg_head, p3_logits, upsampler, p1_logits) for "
                       "training/fine-tuning; no inference output depends on them") if keep_aux else
                      ("dropped: training-only auxiliary heads of the basis module (seg_head, p3_logits, "
                       "upsampler, p1_logits); no inference output depends on them")}
    cfg.name = preset
    return checkpoint_dict(out, cfg, conversion=report, trained_on="COCO train2017 (official AdelaiDet weights)")


def _sizes_of_interest(sd: dict, source: str) -> list[float]:
    """The five ``sizes_of_interest`` of an official state dict (the FCOS level bounds and the max train size)."""
    if SIZES_KEY not in sd:
        raise CheckpointError(f"{source}: missing keys: {SIZES_KEY}")
    sizes = _as_tensor(SIZES_KEY, sd[SIZES_KEY], source).reshape(-1).tolist()
    if len(sizes) != 5 or any(v <= 0 for v in sizes):
        raise CheckpointError(f"{source}: {SIZES_KEY} should hold 5 positive values, got {sizes}")
    return sizes


def _official_config(preset: str, sizes: list[float], keep_aux: bool) -> FCPoseConfig:
    """The config of a converted file: ``preset`` with the file's ``sizes_of_interest`` moved into it."""
    overrides = {"model": {"fcos": {"sizes_of_interest": [int(v) for v in sizes[:4]]},
                           "keypoint": {"rel_coord_norm": [float(v) for v in sizes], "aux_heads": bool(keep_aux)}},
                 "input": {"max_size_train": int(sizes[4])}}
    if not keep_aux:  # inference only: the official training recipe needs the auxiliary heads
        overrides["loss"] = {"recipe": "paper"}
    return load_config(preset, overrides)


def _convert_entries(sd: dict, expected: dict, keep_aux: bool, fit: StateDictReport,
                     source: str) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """Every entry of ``sd`` renamed and fitted to ``expected`` (name -> (shape, dtype)); what does not fit
    goes into ``fit`` (raised as a :class:`CheckpointError`). Returns (state dict, dropped entries, number of
    tensors upcast to float32)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    dropped: list[str] = []
    upcast = 0
    for key, value in sd.items():
        key = str(key)
        if key == SIZES_KEY:
            continue
        if (key.startswith(AUX_PREFIXES) and not keep_aux) or _FROZEN_COUNTER.fullmatch(key):
            dropped.append(key)
            continue
        name = official_key_to_fcpose(key)
        if name is None or name not in expected or name in seen:
            fit.unexpected.append(key)
            continue
        seen.add(name)
        tensor = _as_tensor(key, value, source).detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            upcast += 1
        tensor = _fitted(key, name, tensor, *expected[name], fit)
        if tensor is not None:
            out[name] = tensor
            fit.loaded.append(key)
    fit.missing = [fcpose_key_to_official(k) for k in expected if k not in seen]
    if not fit.fits:
        raise CheckpointError(fit.summary())
    return out, dropped, upcast


def _fitted(key: str, name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
            fit: StateDictReport) -> torch.Tensor | None:
    """Official entry ``key`` as fcpose entry ``name`` of ``shape`` and ``dtype``: floating point upcast to
    float32, the 2-D controller reshaped to its conv weight; None (noted in ``fit``) when it does not fit."""
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    elif dtype.is_floating_point or tensor.dtype == torch.bool:
        fit.shape_mismatch.append(key)
        fit.notes[key] = f"has dtype {tensor.dtype}"
        return None
    else:
        tensor = tensor.to(dtype)
    if name == "head.controller.weight" and tensor.dim() == 2:
        flat = (shape[0], int(np.prod(shape[1:])))
        if tuple(tensor.shape) != flat:
            fit.shape_mismatch.append(key)
            fit.notes[key] = f"{tuple(tensor.shape)} vs {flat}"
            return None
        tensor = tensor.reshape(shape)
    if tuple(tensor.shape) != shape:
        fit.shape_mismatch.append(key)
        fit.notes[key] = f"{tuple(tensor.shape)} vs {shape}"
        return None
    return tensor.contiguous()


_INVERSE_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"backbone\.conv1\.weight"), lambda m: "backbone.bottom_up.stem.conv1.weight"),
    (re.compile(r"backbone\.bn1\.(\w+)"), lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
    (re.compile(r"backbone\.layer(\d)\.(\d+)\.conv(\d)\.weight"),
     lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"backbone\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)"),
     lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"backbone\.layer(\d)\.(\d+)\.downsample\.0\.weight"),
     lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (re.compile(r"backbone\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)"),
     lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
    (re.compile(r"fpn\.(lateral|output)\.(\d)\.(\w+)"), lambda m: f"backbone.fpn_{m[1]}{int(m[2]) + 3}.{m[3]}"),
    (re.compile(r"fpn\.(p6|p7)\.(\w+)"), lambda m: f"backbone.top_block.{m[1]}.{m[2]}"),
    (re.compile(r"head\.centerness\.(\w+)"), lambda m: f"proposal_generator.fcos.fcos_head.ctrness.{m[1]}"),
    (re.compile(r"head\.controller\.(\w+)"), lambda m: f"proposal_generator.fcpose_head.atten_producer.{m[1]}"),
    (re.compile(r"head\.(\S+)"), lambda m: f"proposal_generator.fcos.fcos_head.{m[1]}"),
    (re.compile(r"keypoint_branch\.(\S+)"), lambda m: f"proposal_generator.basis_module.{m[1]}"),
]


def fcpose_key_to_official(name: str) -> str:
    """Inverse of :func:`official_key_to_fcpose` (used to name missing entries as the official file would)."""
    for pattern, target in _INVERSE_RULES:
        m = pattern.fullmatch(name)
        if m:
            return target(m)
    return name

"""Self-describing checkpoints: the config, the weights and (for training) the loop state in one file, whose
layout, one reader and one mismatch report are in :mod:`fcpose.weights.files`. Files are written atomically
(temporary file + rename), so an interrupted save never leaves a broken checkpoint behind. ``fcpose predict``
warns when a model with ``trained_on: "synthetic"`` meets real (non-synthetic) images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import FCPoseConfig, KeypointSetConfig, from_dict
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_save
from .files import VERSION, StateDictReport, checkpoint_dict, is_fcpose_checkpoint, match_state_dict, safe_load
from .keypoint_map import map_keypoint_channels


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(model: nn.Module, path: str | Path, *, cfg: FCPoseConfig | None = None, step: int | None = None,
                    metrics: dict | None = None, half: bool = False, **state: Any) -> Path:
    """Save ``model`` with its config (``model.cfg`` unless ``cfg`` is given) and optional loop ``state``
    (``optimizer=...``, ``scheduler=...``, ``scaler=...`` state dicts, or other plain values, e.g.
    ``trained_on="synthetic"`` to record what the weights were trained on). ``half=True`` stores floating-point weights
    as float16 (half the size, for distribution); they are upcast to the model's dtype when loaded. Values beyond
    float16's range are kept in float32.

    Args:
        model: The model to save (a DDP or compiled wrapper is unwrapped).
        path: The file to write (atomically).
        cfg: The config to store; default ``model.cfg``.
        step: The training iteration, if any.
        metrics: Evaluation results to store with the weights, if any.
        half: Store floating-point weights as float16.
        **state: Further entries: loop state dicts or plain values.

    Returns:
        The path written.

    Raises:
        ValueError: Neither ``cfg`` nor ``model.cfg`` gives a config.
    """
    bare = unwrap_model(model)
    cfg = cfg or getattr(bare, "cfg", None)
    if cfg is None:
        raise ValueError("save_checkpoint needs a config: the model has no .cfg and none was given")
    weights = {k: v.detach().cpu() for k, v in bare.state_dict().items()}
    if half:
        limit = torch.finfo(torch.float16).max
        weights = {k: (v.half() if v.is_floating_point() and bool(v.abs().max() < limit) else v) if v.numel() else v
                   for k, v in weights.items()}
    return atomic_save(checkpoint_dict(weights, cfg, step=step, metrics=metrics, **state), path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint; an official AdelaiDet file is converted on the fly. ``path`` may also be a
    model-zoo name (``fcpose_r50_official``, see :mod:`fcpose.weights.zoo`): its file is downloaded to the cache on
    first use."""
    from .zoo import resolve_weights

    path = resolve_weights(path)
    obj = safe_load(path)
    if is_fcpose_checkpoint(obj):
        if not isinstance(obj.get("model"), dict) or not isinstance(obj.get("config"), dict):
            raise CheckpointError(f"checkpoint {path} is incomplete: it lacks its 'model' or 'config' entry")
        if int(obj.get("version", 0)) > VERSION:
            raise CheckpointError(f"checkpoint {path} has format version {obj['version']}; this fcpose reads up "
                                  f"to version {VERSION} (upgrade fcpose)")
        return obj
    from .official import convert_official, is_official_checkpoint

    if is_official_checkpoint(obj):
        return convert_official(obj, source=str(path))
    raise CheckpointError(f"{path} is not an fcpose checkpoint (expected a file written by fcpose "
                          f"save_checkpoint/train/convert, or an official AdelaiDet FCPose .pth)")


def config_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> FCPoseConfig:
    try:
        cfg = from_dict(ckpt["config"])
        cfg.model.backbone.weights = ""  # the checkpoint holds all weights; never reload ImageNet ones
        return cfg.validate()
    except ConfigError as exc:
        raise CheckpointError(f"{source}: its config is not valid for this fcpose version: {exc}") from None


# How a state dict fits a model: one report for every loader
def load_state(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Strict ``load_state_dict`` whose mismatches become one clear :class:`CheckpointError`."""
    report, _ = match_state_dict(model.state_dict(), state_dict, source=source)
    if not report.fits:
        raise CheckpointError(report.summary())
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] | dict | None = None):
    """Rebuild the model a checkpoint describes and load its weights (eval mode).

    Args:
        path: An fcpose checkpoint, an official AdelaiDet ``.pth`` or a model-zoo name (downloaded on first use).
        device: Where to put the model.
        overrides: ``["a.b=c", ...]`` strings or a nested dict applied to the checkpoint's config.

    Returns:
        (FCPose): The model, in eval mode on ``device``.

    Raises:
        CheckpointError: The file is missing, unreadable, not a checkpoint, or its weights do not fit its config.
    """
    from ..config import apply_overrides
    from ..model.fcpose import build_model

    ckpt = read_checkpoint(path)
    cfg = config_from_checkpoint(ckpt, str(path))
    if overrides:
        cfg = apply_overrides(cfg, overrides).validate()
    model = build_model(cfg)
    load_state(model, ckpt["model"], str(path))
    trained_on = ckpt.get("trained_on")
    model.trained_on = str(trained_on) if trained_on is not None else None  # read by Predictor
    return model.to(device).eval()


def init_from_checkpoint(model: nn.Module, weights: str | Path) -> StateDictReport:
    """Fine-tuning start: copy every tensor of a checkpoint (fcpose ``.pt``, official ``.pth`` — also a full detectron2
    training checkpoint — or a model-zoo name) whose name and shape fit ``model``. When the file's keypoint set is not
    the model's, the channels of every keypoint both name are copied by name and the model's other keypoints keep
    their fresh initialisation (:func:`~fcpose.weights.keypoint_map.map_keypoint_channels`; ``report.keypoints`` says
    which). Tensors the model has but the file lacks or holds with another shape (another width) keep their fresh
    initialisation and are listed (``report.reinitialized``); the file's optimiser and schedule state are ignored (the
    optimiser starts fresh).

    Raises:
        CheckpointError: The file is unreadable or nothing in it fits the model.
    """
    ckpt = read_checkpoint(weights)
    source = str(weights)
    bare = unwrap_model(model)
    own = bare.state_dict()
    state, match = ckpt["model"], None
    target = getattr(getattr(bare, "cfg", None), "keypoints", None)
    names = (ckpt["config"].get("keypoints") or {}).get("names") or KeypointSetConfig().names  # absent: the default
    if target is not None and list(names) != list(target.names) and hasattr(bare, "keypoint_channels"):
        state, match = map_keypoint_channels(state, own, bare.keypoint_channels, [str(n) for n in names],
                                             list(target.names))
    report, fit = match_state_dict(own, state, source=source, kind="init")
    report.keypoints = match
    if not fit:
        raise CheckpointError(f"{source} has no tensor that fits this model (is it a checkpoint of another "
                              f"architecture? e.g. the paper variant vs the official one)")
    with torch.no_grad():
        for name, value in fit.items():
            own[name].copy_(value.to(dtype=own[name].dtype))
    return report

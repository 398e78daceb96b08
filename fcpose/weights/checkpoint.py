"""Self-describing checkpoints: the config, the weights and (for training) the loop state in one file.

Layout (a plain dict, loadable with PyTorch's ``weights_only=True`` unpickler, i.e. without executing any
pickled code)::

    {"format": "fcpose", "version": 1, "config": {...nested config...}, "model": state_dict,
     "step": int | None, "metrics": {...}, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "trained_on": "synthetic" | "COCO train2017" | ...}   # optional: what the weights were trained on

``fcpose predict`` warns when a model with ``trained_on: "synthetic"`` meets real (non-synthetic) images.

Files are written atomically (temporary file + rename), so an interrupted save never leaves a broken
checkpoint behind. :func:`checkpoint_dict` is the one place the layout is written; :func:`safe_load` is the
one place a PyTorch file is read; :class:`StateDictReport` is how every loader says what did not fit.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import FCPoseConfig, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_save

FORMAT = "fcpose"
VERSION = 1


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
    ``trained_on="synthetic"`` to record what the weights were trained on).

    ``half=True`` stores floating-point weights as float16 (half the size, for distribution); they are
    upcast to the model's dtype when loaded. Values beyond float16's range are kept in float32.
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


def checkpoint_dict(state_dict: dict, cfg: FCPoseConfig, *, step: int | None = None, metrics: dict | None = None,
                    **meta: Any) -> dict:
    """The fcpose checkpoint layout (see the module docstring) around ``state_dict`` and ``cfg``: what
    :func:`save_checkpoint` writes and :func:`~fcpose.weights.official.convert_official` returns. ``meta``:
    further entries (loop state, ``trained_on``, a ``conversion`` report...)."""
    return {"format": FORMAT, "version": VERSION, "config": to_dict(cfg), "model": state_dict, "step": step,
            "metrics": dict(metrics or {}), **meta}


def _numpy_safe_globals() -> list:
    """The globals a pickled numpy array or scalar needs, under numpy 1.x and 2.x module names.

    Rebuilding an array or scalar of a plain dtype runs no user code; an object array would still need
    its elements' globals, which stay forbidden. detectron2-style checkpoints may hold numpy arrays.
    """
    multiarray = getattr(np, "_core", None) or np.core
    reconstruct, scalar = multiarray.multiarray._reconstruct, multiarray.multiarray.scalar
    out: list = [np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles a dtype's class too
    for name in getattr(dtypes, "__all__", []):
        cls = getattr(dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype) and issubclass(cls.type, (np.number, np.bool_)):
            out.append(cls)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    return out


def safe_load(path: str | Path) -> Any:
    """The one reader of PyTorch files in fcpose: weights only (``weights_only=True``) and one-line errors for
    missing/corrupt/unsafe files.

    Besides tensors and plain containers, numpy arrays and scalars are allowed (see
    :func:`_numpy_safe_globals`); nothing else that a pickle could name is.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(_not_found(path))
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX model, not a PyTorch checkpoint: run it with "
                              f"`fcpose predict --backend onnxruntime --weights {path}`")
    if path.suffix.lower() in (".yaml", ".yml"):
        raise CheckpointError(f"{path} is a config file, not weights: train it with `fcpose train --config {path} "
                              f"...` and pass the model_final.pt it writes")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"refusing to load {path}: it names the Python object {found.group(1)}, and "
                                  f"loading it would run code; only tensors and plain containers are loaded") from None
        raise CheckpointError(_corrupt(path)) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, ImportError, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, PermissionError):
            raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from None
        raise CheckpointError(_corrupt(path)) from None


def _corrupt(path: Path) -> str:
    return (f"cannot read checkpoint {path}: it is not a readable PyTorch checkpoint (the file is truncated, "
            f"corrupt or of another format); download or save it again")


def _not_found(path: Path) -> str:
    from ..config import list_presets
    from .zoo import MODEL_ZOO

    zoo = ", ".join(sorted(MODEL_ZOO))
    if str(path) in list_presets():
        return (f"'{path}' is a preset (a model architecture), not weights: train it with `fcpose train --config "
                f"{path} ...` and pass OUT/model_final.pt, or use released weights ({zoo})")
    return f"checkpoint not found: {path} (give an fcpose .pt, an official .pth or a model-zoo name: {zoo})"


def is_fcpose_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint; an official AdelaiDet file is converted on the fly.

    ``path`` may also be a model-zoo name (``fcpose_r50_official``, see :mod:`fcpose.weights.zoo`): its file is
    downloaded to the cache on first use.
    """
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
_WORDING = {  # kind -> (first sentence, labels of the missing / unexpected / shape-mismatched keys)
    "strict": ("{source} does not fit the model it describes",
               ("missing keys", "unexpected keys", "shape mismatches")),
    "partial": ("backbone weights {source}: loaded {loaded} tensors",
                ("missing ({n})", "unexpected ({n})", "shape mismatch ({n})")),
    "init": ("initialised from {source}: {loaded} tensors loaded",
             ("{n} re-initialised (absent from the file)", "{n} unused", "{n} re-initialised (another shape)")),
    "official": ("{source} does not match the official FCPose layout",
                 ("missing keys", "unknown keys", "wrong shapes/dtypes")),
}


@dataclass
class StateDictReport:
    """How a file's state dict fits a model, as lists of keys — what every loader reports.

    ``loaded``: copied into the model. ``missing``: model keys the file lacks (left as they were).
    ``unexpected``: file keys the model does not have (e.g. an ImageNet classifier's ``fc.*``).
    ``shape_mismatch``: keys of both whose shapes (or dtypes) differ (not loaded); ``notes`` holds the
    detail shown after such a key (``"(7,) vs (64,)"``: the file's shape, then the model's).

    ``kind`` words :meth:`summary` for its loader: ``"strict"`` (:func:`load_state`: the file must fit
    exactly, anything else is an error), ``"partial"`` (ImageNet backbone weights: what fits is loaded),
    ``"init"`` (:func:`init_from_checkpoint`: what does not fit keeps its fresh initialisation) or
    ``"official"`` (:func:`~fcpose.weights.official.convert_official`; keys in the official names).
    ``headline``, if set, replaces the kind's first sentence.
    """

    source: str = "checkpoint"
    kind: str = "strict"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    headline: str = ""

    @property
    def fits(self) -> bool:
        """Nothing missing, unexpected or of another shape."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    @property
    def reinitialized(self) -> list[str]:
        """Fine-tuning's view: the model's tensors that kept their fresh initialisation."""
        return self.missing + self.shape_mismatch

    @property
    def unused(self) -> list[str]:
        """Fine-tuning's view: the file's tensors the model has no place for."""
        return self.unexpected

    def summary(self, limit: int = 8) -> str:
        """One line: the kind's first sentence, then each non-empty list (its first ``limit`` keys)."""
        headline, labels = _WORDING[self.kind]
        parts = [self.headline or headline.format(source=self.source, loaded=len(self.loaded))]
        for label, keys in zip(labels, (self.missing, self.unexpected, self.shape_mismatch)):
            if keys:
                shown = ", ".join(f"{k} {self.notes[k]}" if k in self.notes else k for k in keys[:limit])
                shown += f", ... ({len(keys)} in all)" if len(keys) > limit else ""
                parts.append(f"{label.format(n=len(keys))}: {shown}")
        return "; ".join(parts)


def match_state_dict(own: dict, state: dict, *, source: str = "checkpoint", kind: str = "strict",
                     quiet=None) -> tuple[StateDictReport, dict[str, torch.Tensor]]:
    """Compare a file's ``state`` with a model's ``own`` state dict: the report and the tensors that fit
    (same name and shape), to be loaded. ``quiet(key)``: keys that load when they fit but are listed
    nowhere (e.g. ``num_batches_tracked`` counters)."""
    quiet = quiet or (lambda key: False)
    report = StateDictReport(source=source, kind=kind)
    fit: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = own.get(key)
        if target is not None and isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(target.shape):
            fit[key] = value
            if not quiet(key):
                report.loaded.append(key)
        elif quiet(key):
            continue
        elif target is None:
            report.unexpected.append(key)
        else:
            report.shape_mismatch.append(key)
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
            report.notes[key] = f"{found} vs {tuple(target.shape)}"
    report.missing = [k for k in own if k not in state and not quiet(k)]
    return report, fit


def load_state(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Strict ``load_state_dict`` whose mismatches become one clear :class:`CheckpointError`."""
    report, _ = match_state_dict(model.state_dict(), state_dict, source=source)
    if not report.fits:
        raise CheckpointError(report.summary())
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] | dict | None = None):
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
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
    """Fine-tuning start: copy every tensor of a checkpoint (fcpose ``.pt``, official ``.pth`` — also a full
    detectron2 training checkpoint — or a model-zoo name) whose name and shape fit ``model``.

    Tensors the model has but the file lacks or holds with another shape (another keypoint count: the
    controller, the offsets, the auxiliary heads; another width) keep their fresh initialisation and are
    listed (``report.reinitialized``); the file's optimiser and schedule state are ignored (the optimiser
    starts fresh).
    """
    ckpt = read_checkpoint(weights)
    source = str(weights)
    own = unwrap_model(model).state_dict()
    report, fit = match_state_dict(own, ckpt["model"], source=source, kind="init")
    if not fit:
        raise CheckpointError(f"{source} has no tensor that fits this model (is it a checkpoint of another "
                              f"architecture? e.g. the paper variant vs the official one)")
    with torch.no_grad():
        for name, value in fit.items():
            own[name].copy_(value.to(dtype=own[name].dtype))
    return report

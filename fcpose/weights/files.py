"""The fcpose checkpoint file at its lowest level, shared by every reader and writer in :mod:`fcpose.weights`:
the layout (:func:`checkpoint_dict`), the one PyTorch-file reader (:func:`safe_load`, ``weights_only=True``:
no pickled code runs) and the one report of what did not fit a model (:class:`StateDictReport`).

Layout (a plain dict)::

    {"format": "fcpose", "version": 1, "config": {...nested config...}, "model": state_dict,
     "step": int | None, "metrics": {...}, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "trained_on": "synthetic" | "COCO train2017" | ...}   # optional: what the weights were trained on"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..config import FCPoseConfig, to_dict
from ..errors import CheckpointError

if TYPE_CHECKING:
    from .keypoint_map import KeypointMatch

FORMAT = "fcpose"
VERSION = 1


def checkpoint_dict(state_dict: dict, cfg: FCPoseConfig, *, step: int | None = None, metrics: dict | None = None,
                    **meta: Any) -> dict:
    """The fcpose checkpoint layout (see the module docstring) around ``state_dict`` and ``cfg``: what
    :func:`save_checkpoint` writes and :func:`~fcpose.weights.official.convert_official` returns. ``meta``:
    further entries (loop state, ``trained_on``, a ``conversion`` report...)."""
    return {"format": FORMAT, "version": VERSION, "config": to_dict(cfg), "model": state_dict, "step": step,
            "metrics": dict(metrics or {}), **meta}


def _numpy_safe_globals() -> list:
    """The globals a pickled numpy array or scalar needs, under numpy 1.x and 2.x module names. Rebuilding an array or
    scalar of a plain dtype runs no user code; an object array would still need its elements' globals, which stay
    forbidden. detectron2-style checkpoints may hold numpy arrays."""
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
    missing/corrupt/unsafe files. Besides tensors and plain containers, numpy arrays and scalars are allowed (see
    :func:`_numpy_safe_globals`); nothing else that a pickle could name is."""
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
    ``headline``, if set, replaces the kind's first sentence. ``keypoints``: for fine-tuning to another keypoint
    set, which keypoints were copied by name and which are new (see :meth:`lines`)."""

    source: str = "checkpoint"
    kind: str = "strict"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    headline: str = ""
    keypoints: KeypointMatch | None = None

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

    def lines(self) -> list[str]:
        """What a loader prints: :meth:`summary`, then the keypoint lines, if any."""
        return [self.summary()] + (self.keypoints.lines() if self.keypoints else [])


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

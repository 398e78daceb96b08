"""ImageNet classification checkpoints loaded into a backbone (``model.backbone.weights``).

The backbones (:mod:`fcpose.model.backbone`) use the parameter names of the public files — torchvision's
``resnet*-*.pth`` for ResNet, the ucbdrive/dla release's ``dla34-ba72cf86.pth`` for DLA-34 — so they load key
for key; this module reads the file (with the one safe reader, :func:`~fcpose.weights.files.safe_load`)
and reports what fit (:class:`~fcpose.weights.files.StateDictReport`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from .files import StateDictReport, match_state_dict, safe_load

__all__ = ["load_imagenet_weights", "read_state_dict"]


def read_state_dict(path: str | os.PathLike) -> dict[str, object]:
    """The state dict of a classification checkpoint: a plain state dict, or one wrapped under
    ``"state_dict"`` or ``"model"``; a leading ``"module."`` (DataParallel) is stripped."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"backbone weights not found: {path} (model.backbone.weights: an ImageNet "
                              f"classification checkpoint such as torchvision's resnet50-0676ba61.pth)")
    data = safe_load(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
            break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict (got {type(data).__name__})")
    out = {}
    for key, value in data.items():
        key = str(key)
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def load_imagenet_weights(backbone: nn.Module, path: str | os.PathLike) -> StateDictReport:
    """Load an ImageNet classification checkpoint into ``backbone`` as far as the names match.

    The file is read by :func:`~fcpose.weights.files.safe_load` (layouts: :func:`read_state_dict`). Tensors
    whose name and shape match are copied; the rest is reported, not loaded (``fc.*`` in ``unexpected``).
    Silently skipped: ``num_batches_tracked`` (loaded into ``BatchNorm2d``, ignored by FrozenBN) and keys the
    backbone declares vestigial (``is_vestigial_checkpoint_key``: the original DLA-34's dead
    ``level3.project.*``/``level4.project.*``). :class:`~fcpose.errors.CheckpointError` for a missing,
    unreadable or non-dict file."""
    state = read_state_dict(path)
    is_vestigial = getattr(backbone, "is_vestigial_checkpoint_key", lambda key: False)
    report, fit = match_state_dict(backbone.state_dict(), state, source=str(path), kind="partial",
                                   quiet=lambda key: key.endswith("num_batches_tracked") or is_vestigial(key))
    backbone.load_state_dict(fit, strict=False)
    return report

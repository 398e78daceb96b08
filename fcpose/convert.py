"""Official AdelaiDet FCPose checkpoints (detectron2 layout) -> fcpose checkpoints."""

from __future__ import annotations

from typing import Any

from .errors import CheckpointError

OFFICIAL_MARKER = "proposal_generator.fcpose_head."


def official_state_dict(obj: Any) -> dict | None:
    """The detectron2 state dict inside an official file (``{"model": sd, ...}`` or a bare sd), else None."""
    sd = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if isinstance(sd, dict) and any(isinstance(k, str) and k.startswith(OFFICIAL_MARKER) for k in sd):
        return sd
    return None


def is_official_checkpoint(obj: Any) -> bool:
    return official_state_dict(obj) is not None


def convert_official(obj: Any, source: str = "checkpoint") -> dict:
    raise CheckpointError(f"{source} is an official AdelaiDet checkpoint; converting it is not implemented yet")

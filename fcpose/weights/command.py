"""``fcpose convert``: an official AdelaiDet FCPose checkpoint (or its model-zoo name) -> an fcpose checkpoint."""

from __future__ import annotations

import sys

from ..errors import CheckpointError
from ..fileio import atomic_save, check_output_file
from .files import is_fcpose_checkpoint, safe_load
from .official import convert_official, is_official_checkpoint
from .zoo import resolve_weights


def run_convert(source: str, out: str) -> int:
    """Convert ``source`` (an official .pth or a zoo name) and write ``out``; one line on stderr says what
    was converted. A checkpoint that is not an official one is a :class:`CheckpointError`."""
    check_output_file(out, "checkpoint")
    path = resolve_weights(source)
    obj = safe_load(path)
    if is_fcpose_checkpoint(obj):
        raise CheckpointError(f"{path} is already an fcpose checkpoint; nothing to convert")
    if not is_official_checkpoint(obj):
        raise CheckpointError(f"{path} is not an official AdelaiDet FCPose checkpoint")
    ckpt = convert_official(obj, source=str(path))
    atomic_save(ckpt, out)
    r = ckpt["conversion"]
    print(f"{path} -> {out}: preset {r['preset']} (ResNet-{r['depth']}), {r['converted']} of {r['entries']} "
          f"entries converted, {r['upcast_to_float32']} upcast to float32, sizes_of_interest "
          f"{r['sizes_of_interest']} -> model.keypoint.rel_coord_norm; "
          + ("kept the training-only auxiliary heads" if r.get("auxiliary_heads") else
             f"dropped {len(r['dropped'])} entries of the training-only auxiliary heads"), file=sys.stderr)
    return 0

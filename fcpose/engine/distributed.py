"""Small helpers around ``torch.distributed`` that also work when it is not initialised (one process)."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over all processes, detached (no gradient flows through it); the input is unchanged.
    With one process: ``tensor.detach()``."""
    if not is_distributed():
        return tensor.detach()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over all processes, detached. With one process: ``tensor.detach()``."""
    world = get_world_size()
    if world == 1:
        return tensor.detach()
    return reduce_sum(tensor) / float(world)


__all__ = ["get_rank", "get_world_size", "is_distributed", "is_main_process", "reduce_mean", "reduce_sum"]

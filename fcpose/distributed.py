"""torch.distributed helpers: set-up from torchrun's environment, rank queries, reductions.

Everything degrades to the single-process case when torch.distributed is not initialised, so the same
code runs under ``python -m fcpose ...`` and ``torchrun --nproc_per_node N -m fcpose ...``. A bottom-layer
module (it imports only :mod:`fcpose.errors` and :mod:`fcpose.precision`): the loss, the trainer, ``fcpose eval`` and
``fcpose predict`` all use it. The one sharding rule of commands that run over a list of inputs is :func:`shard`
with :func:`gather_shards`."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import ConfigError, FCPoseError
from .precision import resolve_device

T = TypeVar("T")


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def local_device(device: str | torch.device) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", get_local_rank())
    return dev


def init_distributed(device: str | torch.device = "cpu", timeout_minutes: int = 30) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL for CUDA, gloo for CPU.
    Returns whether this is a distributed run. Multi-node works the standard torchrun way
    (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``/``--master_addr``)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1 or is_distributed():
        return is_distributed()
    if resolve_device(device).type == "cuda":
        gpus = torch.cuda.device_count()
        if get_local_rank() >= gpus:
            raise ConfigError(f"this process is local rank {get_local_rank()} but the machine has {gpus} GPU(s): "
                              f"start at most {gpus} processes per machine (torchrun --nproc_per_node {gpus})")
        torch.cuda.set_device(get_local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks, detached (no gradient flows through it); the input is unchanged.
    With one process: ``tensor.detach()``."""
    if not is_distributed():
        return tensor.detach()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks, detached. With one process: ``tensor.detach()``."""
    world = get_world_size()
    return tensor.detach() if world == 1 else reduce_sum(tensor) / float(world)


def reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor.detach()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def reduce_mean_dict(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over ranks -> plain floats (for logging)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    stacked = reduce_sum(stacked) / get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.cpu())}


def all_gather_object(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every world_size-th item, from the one at its rank (all of them in one
    process). :func:`gather_shards` puts the shares' results back in the order of ``items``."""
    return list(items[get_rank()::get_world_size()])


def gather_shards(results: list) -> list | None:
    """The inverse of :func:`shard`: ``results`` holds one entry per item of this process's share, in order; returns
    every process's entries in the order of the whole list on rank 0, None on the others. One process:
    ``results`` itself."""
    if not is_distributed():
        return results
    parts = [None] * get_world_size() if get_rank() == 0 else None
    dist.gather_object(results, parts, dst=0)
    if parts is None:
        return None
    rounds = max(len(part) for part in parts)
    # item i of the whole list went to rank i % world as that rank's (i // world)-th item
    return [part[i] for i in range(rounds) for part in parts if i < len(part)]


def same_outcome(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank with one outcome for all: when it raised an :class:`~fcpose.errors.FCPoseError` on any
    rank, every rank raises — the error as raised on the lowest rank that has that message, marked ``quiet`` on the
    others (the command line prints it once), and a quiet copy of the first message on ranks where ``fn`` succeeded.
    For set-up steps that fail alike everywhere (a bad input, a missing checkpoint) or only on one rank (its device)."""
    if not is_distributed():
        return fn()
    try:
        result, error = fn(), None
    except FCPoseError as exc:
        result, error = None, exc
    messages = all_gather_object(None if error is None else str(error))
    failed = [m for m in messages if m is not None]
    if not failed:
        return result
    if error is None:
        error = FCPoseError(failed[0])
    error.quiet = messages.index(str(error)) != get_rank()
    raise error

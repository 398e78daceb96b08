"""torch.distributed helpers: set-up from torchrun's environment, rank queries, reductions.

Everything degrades to the single-process case when torch.distributed is not initialised, so the same
code runs under ``python -m fcpose ...`` and ``torchrun --nproc_per_node N -m fcpose ...``. A bottom-layer
module (it imports only :mod:`fcpose.errors`): the loss, the trainer and evaluation all use it."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .precision import resolve_device


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

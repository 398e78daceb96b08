"""Optimisation: the optimiser (SGD or AdamW, the linear scaling rule, no weight decay on norms), the lr schedule
(warm-up, step or cosine), gradient clipping, a step that a device-side flag can skip, and the moving average of
the weights (:class:`ModelEMA`). Loss scaling is ``torch.amp.GradScaler``'s, driven by the trainer."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..config import FCPoseConfig
from ..weights.checkpoint import unwrap_model

_NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, cfg: FCPoseConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW; lr = base_lr x ims_per_batch / reference_batch (linear
    scaling rule); no weight decay on normalisation layers."""
    s = cfg.solver
    lr = s.base_lr * s.ims_per_batch / s.reference_batch
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, _NORM_TYPES) else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The fused kernels (one launch for all tensors) also take a device-side "skip this step" flag, so a step
    # with a non-finite gradient is skipped without the host waiting for the device.
    fused = all(p.device.type in ("cuda", "cpu") and p.dtype == torch.float32 for g in groups for p in g["params"])
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(s.momentum, 0.999), fused=fused or None)
    return torch.optim.SGD(groups, lr=lr, momentum=s.momentum, fused=fused or None)


def lr_factor(iteration: int, cfg: FCPoseConfig) -> float:
    """Multiplier of the base lr at ``iteration``: linear warm-up from warmup_factor, then x gamma per
    step (``lr_schedule: step``) or a half cosine down to 0 at max_iter (``lr_schedule: cosine``)."""
    s = cfg.solver
    if s.lr_schedule == "cosine":
        progress = min(1.0, iteration / max(1, s.max_iter))
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = s.gamma ** sum(1 for step in s.steps if iteration >= step)
    if iteration < s.warmup_iters:
        alpha = iteration / s.warmup_iters
        factor *= s.warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: FCPoseConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of :func:`lr_factor`, stepped once after every iteration (as detectron2's hook does):
    the lr that iteration i uses is ``base lr x lr_factor(i)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))


def clip_gradients(params: list[nn.Parameter], cfg: FCPoseConfig) -> torch.Tensor:
    """Clip the gradients as ``solver`` says; returns the total L2 norm *before* clipping (for the log and the
    non-finite check).

    ``clip_grad_value > 0``: every element clamped to ``[-v, v]``, parameter by parameter (the official
    ``CLIP_TYPE: value``); ``clip_grad_norm > 0``: the total norm scaled down to at most that value. Both may
    be set (the norm is clipped first)."""
    s = cfg.solver
    norm = torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm if s.clip_grad_norm > 0 else float("inf"))
    if s.clip_grad_value > 0:
        torch.nn.utils.clip_grad_value_(params, s.clip_grad_value)
    return norm


def reads_skip_flag(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group runs a fused kernel, which reads :func:`step_where`'s flag on the device."""
    return all(g.get("fused") for g in optimizer.param_groups)


def step_where(optimizer: torch.optim.Optimizer, finite: torch.Tensor, *, fused: bool) -> None:
    """Apply the step where ``finite`` (a device flag) says so: a fused optimiser (``fused``, see
    :func:`reads_skip_flag`) reads the flag on the device (no host synchronisation); others wait for it."""
    if fused:
        optimizer.found_inf = (~finite).to(torch.float32)
        optimizer.grad_scale = None
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale
    elif bool(finite):
        optimizer.step()


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    After optimizer step t (counting from 1) every averaged tensor becomes ``d * avg + (1 - d) * w`` with
    ``d = min(decay, (1 + t) / (10 + t))``: early averages follow the fast-moving weights, later ones
    smooth the last ~1 / (1 - decay) steps. Integer buffers are copied. The average lives in its own copy
    of the (unwrapped) model, which is what gets evaluated and saved. The tensors to average are paired
    once: the optimizer updates the model's weights in place, so each step is one fused ``lerp``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        source = unwrap_model(model)
        self.module = copy.deepcopy(source).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        avg, src = self.module.state_dict(), source.state_dict()
        floats = [k for k in avg if avg[k].is_floating_point()]
        self._avg, self._src = [avg[k] for k in floats], [src[k] for k in floats]
        self._other = [(avg[k], src[k]) for k in avg if not avg[k].is_floating_point()]

    @torch.no_grad()
    def update(self, taken: torch.Tensor | None = None) -> None:
        """Average in the tracked model's current weights (call after each optimizer step).

        ``taken``: a device-side bool flag of whether the step was applied; a skipped step leaves the average
        unchanged without the host waiting for the flag (the update count still advances, on every rank alike)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if taken is None:
            torch._foreach_lerp_(self._avg, self._src, 1.0 - d)
            for avg, src in self._other:
                avg.copy_(src)
            return
        weight = taken.to(self._avg[0].dtype) * (1.0 - d) if self._avg else None
        if self._avg:
            torch._foreach_lerp_(self._avg, self._src, weight)
        for avg, src in self._other:
            avg.copy_(torch.where(taken, src, avg))

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])

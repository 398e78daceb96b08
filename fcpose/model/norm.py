"""Normalization layers: frozen batch norm, a name -> layer factory, and conv+BN folding.

``FrozenBatchNorm2d`` is the affine transform a batch norm computes in eval mode, with its four
tensors stored as buffers (never trained, never updated). It is what the backbone uses by default,
as detectron2/AdelaiDet do for ImageNet-initialized backbones trained with small per-GPU batches.

``fold_frozen_bn`` merges every frozen (or eval-mode) batch norm that directly follows a conv into
that conv, for faster inference. It only looks at pairs the modules declare: consecutive
``(Conv2d, norm)`` entries of an ``nn.Sequential`` and the ``_conv_norm_pairs`` attribute names of
a module class (e.g. ``[("conv1", "bn1"), ("conv2", "bn2")]`` on a residual block)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["FrozenBatchNorm2d", "DistributedBatchNorm2d", "get_norm", "fold_frozen_bn", "calibrate_frozen_bn",
           "NORM_NAMES"]

NORM_NAMES = ("FrozenBN", "BN", "SyncBN", "GN", "none", "")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: ``y = x * scale + shift``.

    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale`` are
    computed in float32 and cast to the input dtype, so a half-precision input is safe.

    Input and output: ``[N, C, H, W]`` with ``C = num_features``. The four tensors ``weight``,
    ``bias``, ``running_mean`` and ``running_var`` (each ``[C]``) are buffers, so the names match an
    ``nn.BatchNorm2d`` state dict; a ``num_batches_tracked`` entry is accepted and dropped.
    Initialized to the identity up to ``eps`` (weight 1, bias 0, mean 0, var 1)."""

    _version = 1

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel ``(scale, shift)`` in float32, each ``[C]``."""
        scale = self.weight.float() * torch.rsqrt(self.running_var.float() + self.eps)
        shift = self.bias.float() - self.running_mean.float() * scale
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        scale = scale.to(x.dtype).reshape(1, -1, 1, 1)
        shift = shift.to(x.dtype).reshape(1, -1, 1, 1)
        return x * scale + shift

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A BatchNorm2d checkpoint carries a step counter that a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d``/``SyncBatchNorm`` in ``module`` by a ``FrozenBatchNorm2d``. The statistics and
        affine parameters are copied (a norm without them keeps the identity defaults). Children are replaced in place;
        if ``module`` itself is a batch norm, the new frozen layer is returned, otherwise ``module`` is."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            with torch.no_grad():
                if module.affine:
                    frozen.weight.copy_(module.weight.detach())
                    frozen.bias.copy_(module.bias.detach())
                if module.track_running_stats and module.running_mean is not None:
                    frozen.running_mean.copy_(module.running_mean)
                    frozen.running_var.copy_(module.running_var)
            ref = module.weight if module.affine else module.running_mean
            if ref is not None:
                frozen.to(device=ref.device)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module


def get_norm(norm: str, channels: int) -> nn.Module:
    """The normalization layer called ``norm`` for ``channels`` feature maps. ``"FrozenBN"`` ->
    :class:`FrozenBatchNorm2d`, ``"BN"`` -> ``nn.BatchNorm2d``, ``"SyncBN"`` -> ``nn.SyncBatchNorm``, ``"GN"`` ->
    ``nn.GroupNorm(32, channels)``, ``"none"``/``""`` -> ``nn.Identity``. Anything else is a
    :class:`~fcpose.errors.ConfigError`."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        if channels % 32 != 0:
            raise ConfigError(f"GN uses 32 groups; {channels} channels are not divisible by 32")
        return nn.GroupNorm(32, channels)
    if norm in ("none", ""):
        return nn.Identity()
    raise ConfigError(f"unknown norm {norm!r} (valid: FrozenBN, BN, SyncBN, GN, none)")


def _norm_scale_shift(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` in float32 if ``norm`` is a per-channel affine map at inference, else None."""
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_shift()
    if isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        if norm.training or not norm.track_running_stats or norm.running_mean is None:
            return None  # training-mode BN normalizes with batch statistics: not a fixed map
        scale = torch.rsqrt(norm.running_var.float() + norm.eps)
        if norm.affine:
            scale = norm.weight.detach().float() * scale
        shift = -norm.running_mean.float() * scale
        if norm.affine:
            shift = shift + norm.bias.detach().float()
        return scale, shift
    return None


def _fold_pair(conv: nn.Module, norm: nn.Module) -> bool:
    """Fold ``norm`` into ``conv`` in place if possible; True when folded."""
    if type(conv) is not nn.Conv2d:
        return False
    affine = _norm_scale_shift(norm)
    if affine is None:
        return False
    scale, shift = affine
    if scale.numel() != conv.out_channels:
        return False
    weight = conv.weight
    with torch.no_grad():
        new_weight = (weight.float() * scale.to(weight.device).reshape(-1, 1, 1, 1)).to(weight.dtype)
        old_bias = conv.bias.float() if conv.bias is not None else torch.zeros_like(scale)
        new_bias = old_bias.to(weight.device) * scale.to(weight.device) + shift.to(weight.device)
        conv.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
        conv.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=weight.requires_grad)
    return True


def fold_frozen_bn(module: nn.Module) -> int:
    """Fold frozen / eval-mode batch norms into the convolutions they follow; returns the count.

    Looks at (a) consecutive ``(nn.Conv2d, norm)`` entries of every ``nn.Sequential`` and (b) the
    ``(conv_attr, norm_attr)`` names listed in the ``_conv_norm_pairs`` class attribute of every
    submodule. A ``FrozenBatchNorm2d``, or a ``BatchNorm2d``/``SyncBatchNorm`` in eval mode with
    running statistics, is folded: the conv gets ``weight * scale`` and a bias ``bias * scale + shift``, and the norm is
    replaced by ``nn.Identity``. Training-mode BN, GN and convs that are not plain ``nn.Conv2d`` are left alone. The
    outputs are unchanged up to float rounding, but the state dict changes (conv biases appear, norm entries vanish):
    fold only for inference. Calling it again folds nothing more."""
    count = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, conv), (name, norm) in zip(children[:-1], children[1:]):
                if _fold_pair(conv, norm):
                    setattr(parent, name, nn.Identity())
                    count += 1
        for conv_name, norm_name in getattr(type(parent), "_conv_norm_pairs", ()):
            conv = getattr(parent, conv_name, None)
            norm = getattr(parent, norm_name, None)
            if isinstance(conv, nn.Module) and isinstance(norm, nn.Module) and _fold_pair(conv, norm):
                setattr(parent, norm_name, nn.Identity())
                count += 1
    return count


class _AllReduceStats(torch.autograd.Function):
    """Sum of per-channel statistics over all processes, with the matching (summed) backward."""

    @staticmethod
    def forward(ctx, stats: torch.Tensor) -> torch.Tensor:
        out = stats.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the whole batch over all ``torch.distributed``
    processes, on any device (PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only; this serves CPU/gloo runs).

    Training: per channel, ``sum(x)``, ``sum(x^2)`` and the count are all-reduced (differentiably), giving the
    global mean and biased variance used to normalise; the running statistics take the unbiased variance with
    ``momentum``, like ``nn.BatchNorm2d`` on the whole batch. Eval mode, or a single process: plain batch norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = torch.distributed
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), float(x.numel() // c), device=x.device)
        local = torch.cat([xf.sum(dim=(0, 2, 3)), xf.square().sum(dim=(0, 2, 3)), count])
        total = _AllReduceStats.apply(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.square()).clamp(min=0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every ``nn.BatchNorm2d`` / ``nn.SyncBatchNorm`` (not frozen ones) by this class, keeping
        parameters and buffers; returns the module (or its replacement)."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            return new.to(next(iter(module.state_dict().values())).device)
        for name, child in module.named_children():
            new_child = cls.convert(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module


@torch.no_grad()
def calibrate_frozen_bn(module: nn.Module, run: Callable[[], object], reduce: Callable[[torch.Tensor], torch.Tensor]
                        | None = None) -> int:
    """Set every :class:`FrozenBatchNorm2d` in ``module`` to normalise the data: one forward (``run()``) in which
    each layer, just before it runs, takes the per-channel mean and variance of its input as its running
    statistics (weight 1, bias 0). Layers are calibrated in the order they run, each on the outputs of the
    already calibrated ones, so every frozen norm starts out giving zero-mean, unit-variance channels.

    What a backbone with frozen norms and no pretrained weights needs: otherwise every FrozenBN is the identity,
    the network has no normalisation at all, and its activations (about 1e4 at initialisation in a ResNet-50 fed
    0-255 pixels) grow past float16's 65,504 within a few SGD steps. ``reduce`` (e.g. a mean over processes)
    is applied to each statistic so that every rank gets the same. Returns the number of layers calibrated."""
    layers = [m for m in module.modules() if isinstance(m, FrozenBatchNorm2d)]

    def pre_hook(layer: FrozenBatchNorm2d, args):
        x = args[0].detach().float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        if reduce is not None:
            mean, var = reduce(mean), reduce(var)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var.clamp(min=0.0))
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.0)

    handles = [layer.register_forward_pre_hook(pre_hook) for layer in layers]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return len(layers)

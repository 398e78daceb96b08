"""Backbones: ResNet-18/34/50/101 and DLA-34, returning the C3, C4, C5 feature maps.

Every backbone maps a float image batch ``[B, 3, H, W]`` (any H, W) to a list of three tensors ``[C3, C4, C5]`` at
strides 8, 16 and 32; each spatial size is ``ceil(H / stride)`` x ``ceil(W / stride)`` (the stride-2 convs and poolings
all round up). ``out_channels`` gives their channel counts and ``strides`` is ``[8, 16, 32]``.

Parameter and buffer names are those of the public ImageNet checkpoints, so those files load key
for key (:func:`fcpose.weights.imagenet.load_imagenet_weights` reads them): torchvision's
``resnet*-*.pth`` for ResNet and the ucbdrive/dla release's ``dla34-ba72cf86.pth`` for DLA-34 (also
what AdelaiDet's DLA uses). The classifier (``fc``) is not built."""

from __future__ import annotations

import torch
from torch import nn

from ..config import BackboneConfig
from ..errors import ConfigError
from .norm import FrozenBatchNorm2d, get_norm

__all__ = [
    "ResNet", "DLA34", "BasicBlock", "Bottleneck", "DLABasicBlock", "DLARoot", "DLATree", "BACKBONE_NAMES",
    "build_backbone",
]

BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "dla34")


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free conv with 'same' padding for odd kernels."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class _Backbone(nn.Module):
    """Shared freezing logic. Subclasses set ``_stages``: for stage ``s = 1..5`` the attribute
    names of the modules that ``freeze_at >= s`` freezes."""

    _stages: tuple[tuple[str, ...], ...] = ()
    strides: list[int]
    out_channels: list[int]

    def _freeze(self, freeze_at: int, norm: str) -> None:
        if not isinstance(freeze_at, int) or isinstance(freeze_at, bool) or not 0 <= freeze_at <= 5:
            raise ConfigError(f"freeze_at must be an integer in 0..5, got {freeze_at!r}")
        self.freeze_at = freeze_at
        for stage in self._stages[:freeze_at]:
            for name in stage:
                module = getattr(self, name)
                for p in module.parameters():
                    p.requires_grad_(False)
                if norm in ("BN", "SyncBN"):
                    setattr(self, name, FrozenBatchNorm2d.convert_frozen_batchnorm(module))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


# ---- ResNet ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: ``[N, in_ch, H, W] -> [N, planes, ceil(H/s), ceil(W/s)]``. The shortcut is
    ``downsample`` (1x1 conv with the stride + norm) when the shape changes."""

    expansion = 1
    _conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = False):
        super().__init__()
        del stride_in_1x1  # a basic block has no 1x1 conv
        out_ch = planes * self.expansion
        self.conv1 = _conv(in_ch, planes, 3, stride)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = get_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride), get_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with a residual: ``[N, in_ch, H, W] -> [N, 4*planes, ...]``. ``stride_in_1x1``
    puts the stride in ``conv1`` (MSRA/detectron2 checkpoints), else in the 3x3 ``conv2`` (torchvision "v1.5")."""

    expansion = 4
    _conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = False):
        super().__init__()
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_ch, planes, 1, s1)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv(planes, planes, 3, s3)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = _conv(planes, out_ch, 1)
        self.bn3 = get_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride), get_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_RESNET_SPECS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


class ResNet(_Backbone):
    """ResNet-18/34/50/101 with torchvision parameter names, returning ``[C3, C4, C5]``.

    depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
    norm: "FrozenBN" (default; every norm frozen), "BN", "SyncBN" or "GN".
    freeze_at: detectron2 semantics. 0 freezes nothing, 1 the stem (``conv1``/``bn1``), 2 also ``layer1``, 3 ``layer2``,
        4 ``layer3``, 5 ``layer4``. Frozen means ``requires_grad=False``; with "BN"/"SyncBN" the frozen stages' norms
        also become :class:`FrozenBatchNorm2d`.
    stride_in_1x1: Bottleneck only: the first block of layer2-4 strides in its 1x1 ``conv1``
        (MSRA/detectron2) instead of its 3x3 ``conv2`` (torchvision).
    width: channels of the stem and the first stage (64 in the standard ResNets, whose ImageNet
        checkpoints need it); the stages have ``width * (1, 2, 4, 8)`` planes. Narrower networks are for
        small models trained from scratch (the synthetic-data benchmark).

    Forward: ``[B, 3, H, W]`` -> ``[C3, C4, C5]`` of shapes ``[B, c, ceil(H/s), ceil(W/s)]`` with
    ``(c, s)`` = (128, 8), (256, 16), (512, 32) for depth 18/34 and (512, 8), (1024, 16),
    (2048, 32) for depth 50/101, scaled by ``width / 64``."""

    _conv_norm_pairs = (("conv1", "bn1"),)
    _stages = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))

    def __init__(self, depth: int = 50, norm: str = "FrozenBN", freeze_at: int = 2, stride_in_1x1: bool = False,
                 width: int = 64):
        super().__init__()
        if depth not in _RESNET_SPECS:
            raise ConfigError(f"ResNet depth must be one of {sorted(_RESNET_SPECS)}, got {depth!r}")
        block, counts = _RESNET_SPECS[depth]
        self.depth = depth
        if width < 8 or width % 8:
            raise ConfigError(f"ResNet width must be a positive multiple of 8, got {width!r}")
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, (planes, n) in enumerate(zip([width, 2 * width, 4 * width, 8 * width], counts)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, planes, stride, norm, stride_in_1x1))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = [2 * width * block.expansion, 4 * width * block.expansion, 8 * width * block.expansion]
        self.strides = [8, 16, 32]
        self._init_weights()
        self._freeze(freeze_at, norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


# ---- DLA-34 (Yu et al., Deep Layer Aggregation, CVPR 2018) -------------------------------------
class DLABasicBlock(nn.Module):
    """Two 3x3 convs plus a residual given by the caller (default: the input itself).
    ``[N, in_ch, H, W] -> [N, out_ch, ceil(H/stride), ceil(W/stride)]``; ``residual`` must have the output's shape."""

    _conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = _conv(in_ch, out_ch, 3, stride)
        self.bn1 = get_norm(norm, out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.bn2 = get_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is None:
            residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class DLARoot(nn.Module):
    """Aggregation node: concat the inputs on channels, 1x1 conv + norm + ReLU (no residual, as
    in DLA-34). ``list of [N, c_i, H, W]`` with ``sum(c_i) = in_ch`` -> ``[N, out_ch, H, W]``."""

    _conv_norm_pairs = (("conv", "bn"),)

    def __init__(self, in_ch: int, out_ch: int, norm: str = "FrozenBN"):
        super().__init__()
        self.conv = _conv(in_ch, out_ch, 1)
        self.bn = get_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(inputs, dim=1))))


class DLATree(nn.Module):
    """Hierarchical deep aggregation tree of ``levels`` levels (``[N, in_ch, H, W] -> [N, out_ch,
    ceil(H/stride), ceil(W/stride)]``).

    A level-1 tree runs two blocks (``tree1`` strided, with the ``project``-ed, down-sampled input as its residual;
    ``tree2``) and aggregates them with ``root`` together with the extra children handed down by its parents. A deeper
    tree is two subtrees; ``tree1``'s output is passed on as a child to ``tree2``, whose root aggregates it. With
    ``level_root`` the down-sampled input (``bottom``) is also aggregated.

    Down-sampling of the input uses a 2x2/2 max pool with ``ceil_mode=True`` so odd sizes round up like the strided 3x3
    conv (the original floors, which only works for even sizes; even sizes give identical results).

    Checkpoint note: the original implementation also builds a ``project`` in deeper trees whose
    input and output channels differ, but never uses its output (the subtrees compute their own).
    Like timm, this module builds ``project`` in level-1 trees only; the dead ``level3.project.*``
    and ``level4.project.*`` entries of the ucbdrive checkpoint are skipped by
    :func:`~fcpose.weights.imagenet.load_imagenet_weights` (see :meth:`DLA34.is_vestigial_checkpoint_key`)."""

    def __init__(self, levels: int, in_ch: int, out_ch: int, stride: int = 1, level_root: bool = False,
                 root_dim: int = 0, norm: str = "FrozenBN"):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_ch
        if level_root:
            root_dim += in_ch
        self.levels = levels
        self.level_root = level_root
        if levels == 1:
            self.tree1 = DLABasicBlock(in_ch, out_ch, stride, norm)
            self.tree2 = DLABasicBlock(out_ch, out_ch, 1, norm)
            self.root = DLARoot(root_dim, out_ch, norm)
        else:
            self.tree1 = DLATree(levels - 1, in_ch, out_ch, stride, root_dim=0, norm=norm)
            self.tree2 = DLATree(levels - 1, out_ch, out_ch, 1, root_dim=root_dim + out_ch, norm=norm)
        self.downsample = nn.MaxPool2d(stride, stride=stride, ceil_mode=True) if stride > 1 else None
        self.project = None
        if levels == 1 and in_ch != out_ch:
            self.project = nn.Sequential(_conv(in_ch, out_ch, 1), get_norm(norm, out_ch))

    def forward(self, x: torch.Tensor, children: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: ``[N, in_ch, H, W]``; ``children``: extra root inputs at the output resolution."""
        children = [] if children is None else list(children)
        if self.levels == 1 or self.level_root:
            bottom = self.downsample(x) if self.downsample is not None else x
            if self.level_root:
                children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root([x2, x1, *children])
        x1 = self.tree1(x)
        return self.tree2(x1, children=[*children, x1])


class DLA34(_Backbone):
    """DLA-34 with the parameter names of the ucbdrive/dla ImageNet checkpoint.

    Channels [16, 32, 64, 128, 256, 512] at strides [1, 1, 2, 4, 8, 16, 32] for ``base_layer``,
    ``level0`` ... ``level5``; levels [1, 1, 1, 2, 2, 1]; basic blocks; roots without residual.

    norm: "FrozenBN" (default), "BN", "SyncBN" or "GN" ("GN" needs channels divisible by 32,
        which DLA-34's 16-channel stem is not).
    freeze_at: 0 nothing frozen, 1 ``base_layer`` + ``level0`` + ``level1``, 2 also ``level2``, 3 ``level3``, 4
        ``level4``, 5 ``level5`` (everything). Same meaning of "frozen" as for :class:`ResNet`.

    Forward: ``[B, 3, H, W]`` -> ``[C3, C4, C5]`` = levels 3, 4, 5 with shapes
    ``[B, 128, ceil(H/8), ceil(W/8)]``, ``[B, 256, ceil(H/16), ...]``, ``[B, 512, ceil(H/32), ...]``."""

    _stages = (("base_layer", "level0", "level1"), ("level2",), ("level3",), ("level4",), ("level5",))
    channels = (16, 32, 64, 128, 256, 512)
    levels = (1, 1, 1, 2, 2, 1)

    def __init__(self, norm: str = "FrozenBN", freeze_at: int = 2):
        super().__init__()
        ch, lv = self.channels, self.levels
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, ch[0], kernel_size=7, stride=1, padding=3, bias=False),
            get_norm(norm, ch[0]),
            nn.ReLU(inplace=True),
        )
        self.level0 = self._conv_level(ch[0], ch[0], lv[0], 1, norm)
        self.level1 = self._conv_level(ch[0], ch[1], lv[1], 2, norm)
        self.level2 = DLATree(lv[2], ch[1], ch[2], 2, level_root=False, norm=norm)
        self.level3 = DLATree(lv[3], ch[2], ch[3], 2, level_root=True, norm=norm)
        self.level4 = DLATree(lv[4], ch[3], ch[4], 2, level_root=True, norm=norm)
        self.level5 = DLATree(lv[5], ch[4], ch[5], 2, level_root=True, norm=norm)
        self.out_channels = [ch[3], ch[4], ch[5]]
        self.strides = [8, 16, 32]
        self._init_weights()
        self._freeze(freeze_at, norm)

    @staticmethod
    def _conv_level(in_ch: int, out_ch: int, convs: int, stride: int, norm: str) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                _conv(in_ch, out_ch, 3, stride if i == 0 else 1),
                get_norm(norm, out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        return nn.Sequential(*layers)

    def is_vestigial_checkpoint_key(self, key: str) -> bool:
        """True for a checkpoint key of the original DLA's never-used ``project`` of a deeper tree
        (``level3.project.*``, ``level4.project.*``), which this module does not build."""
        parts = key.split(".")
        if len(parts) < 3 or parts[1] != "project" or not hasattr(self, parts[0]):
            return False
        tree = getattr(self, parts[0])
        return isinstance(tree, DLATree) and tree.levels > 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.level1(self.level0(self.base_layer(x)))
        x = self.level2(x)
        c3 = self.level3(x)
        c4 = self.level4(c3)
        c5 = self.level5(c4)
        return [c3, c4, c5]


# ---- Factory -----------------------------------------------------------------------------------
def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Build the backbone named ``cfg.name`` (one of :data:`BACKBONE_NAMES`) with ``cfg.norm``,
    ``cfg.freeze_at`` and (ResNet) ``cfg.stride_in_1x1``. Weights are not loaded here."""
    name = cfg.name
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        return ResNet(int(name[len("resnet") :]), norm=cfg.norm, freeze_at=cfg.freeze_at,
                      stride_in_1x1=cfg.stride_in_1x1, width=cfg.width)
    if name == "dla34":
        return DLA34(norm=cfg.norm, freeze_at=cfg.freeze_at)
    raise ConfigError(f"unknown backbone {name!r} (valid: {', '.join(BACKBONE_NAMES)})")

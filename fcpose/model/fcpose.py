"""FCPose: backbone -> FPN -> FCOS head + controller, keypoint branch -> dynamic keypoint heads.

``forward`` returns raw dense tensors only (:class:`~fcpose.structures.DenseOutputs`); the model keeps
its weights, ``forward`` and the per-instance head parameters (:meth:`FCPose.instance_params`). Instance
selection and decoding live in :class:`fcpose.postprocess.PostProcessor`, target assignment and losses in
:mod:`fcpose.targets` and :mod:`fcpose.loss`. Only the builders read the config; an ``FCPose`` built from
parts (``cfg=None``) works everywhere (the :class:`~fcpose.Predictor` then uses the default test sizes)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import FCPoseConfig, apply_overrides, load_config
from ..errors import ConfigError
from ..structures import DenseOutputs, Instances
from .backbone import build_backbone
from .dynamic_head import DynamicKeypointHead
from .fcos_head import FCOSHead
from .fpn import FPN
from .keypoint_branch import KeypointBranch


class FCPose(nn.Module):
    """The FCPose network: backbone, FPN, FCOS head with the controller, and the shared keypoint branch; the dynamic
    keypoint heads run per instance (``instance_heatmaps``). Build one with ``build_model``; ``PostProcessor`` turns its
    ``DenseOutputs`` into people.

    Args:
        backbone: The backbone, returning the C3-C5 feature maps.
        fpn: The feature pyramid on top of it.
        head: The FCOS head (classification, boxes, centre-ness and the controller).
        keypoint_branch: The branch computing the shared keypoint features and refinement offsets.
        dynamic_head: The parameter-free dynamic keypoint head.
        strides: The stride of each pyramid level.
        rel_coord_norm: The normaliser of the relative coordinates, per level.
        pixel_mean: The per-channel mean subtracted from the 0-255 input.
        pixel_std: The per-channel standard deviation it is divided by.
        input_format: The channel order the weights expect, ``"RGB"`` or ``"BGR"``.
        offset_unit: The unit of the refinement offsets, ``"stride"`` or ``"pixel"``.
        keypoint_score: How keypoint scores are computed, ``"softmax"`` or ``"logit"``.
        size_divisibility: Inputs are zero-padded to multiples of this.
        cfg: The config the model was built from (``None`` for a model built from parts).
    """

    def __init__(self, backbone: nn.Module, fpn: FPN, head: FCOSHead, keypoint_branch: nn.Module,
                 dynamic_head: DynamicKeypointHead, *, strides: list[int], rel_coord_norm: list[float],
                 pixel_mean: list[float], pixel_std: list[float], input_format: str = "RGB",
                 offset_unit: str = "stride", keypoint_score: str = "softmax", size_divisibility: int = 32,
                 cfg: FCPoseConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.keypoint_branch = keypoint_branch
        self.dynamic_head = dynamic_head
        self.strides = list(strides)
        self.input_format = input_format
        self.offset_unit = offset_unit
        self.keypoint_score = keypoint_score
        self.size_divisibility = size_divisibility
        # Derived from the config (not saved in state dicts): the config is the source of truth.
        self.register_buffer("rel_coord_norm", torch.tensor(rel_coord_norm, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.cfg = cfg
        self.trained_on: str | None = None  # what the weights were trained on (checkpoint metadata), if known

    @property
    def num_keypoints(self) -> int:
        return self.dynamic_head.num_keypoints

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def keypoint_channels(self, num_keypoints: int | None = None) -> dict[str, tuple[int, Tensor]]:
        """Where each keypoint lives in the weights of this architecture with ``num_keypoints`` keypoints (default
        its own): ``{state-dict key: (dim, owner)}``, ``owner[c]`` the keypoint of channel ``c`` along ``dim``
        (-1: shared by all keypoints). Every tensor whose shape depends on the keypoint count is listed: the
        controller's outputs that generate the dynamic heads' last layer, and the keypoint branch's per-keypoint
        channels. Fine-tuning to another keypoint set copies channels by keypoint name with it
        (:func:`fcpose.weights.keypoint_map.map_keypoint_channels`).

        Args:
            num_keypoints: The keypoint count to describe; default the model's.

        Returns:
            ``{key: (dim, owner)}`` for the tensors with per-keypoint channels.
        """
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        parts = {"head": self.head.keypoint_channels(self.dynamic_head.param_keypoints(k))}
        if hasattr(self.keypoint_branch, "keypoint_channels"):  # a branch built from parts may not say
            parts["keypoint_branch"] = self.keypoint_branch.keypoint_channels(k)
        return {f"{module}.{name}": value for module, layout in parts.items() for name, value in layout.items()}

    def normalize(self, images: Tensor) -> Tensor:
        """``[..., 3, H, W]`` RGB values in 0-255 -> the network's input (channel order, mean, std).

        Args:
            images: ``[..., 3, H, W]`` RGB values in 0-255.

        Returns:
            The normalised images, same shape.
        """
        if self.input_format == "BGR":
            images = images.flip(-3)
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor) -> DenseOutputs:
        """images: ``[B, 3, H, W]`` normalised (see :meth:`normalize`) and zero-padded, any H and W.

        Args:
            images: ``[B, 3, H, W]`` normalised, zero-padded images.

        Returns:
            The dense per-location outputs of every pyramid level.
        """
        features = self.fpn(self.backbone(images))
        logits, boxes, ctrness, towers = self.head(features)
        kpt_feats, kpt_offsets, aux = self.keypoint_branch(features)
        return DenseOutputs(cls_logits=logits, box_reg=boxes, centerness=ctrness, ctrl_feats=towers,
                            kpt_feats=kpt_feats, kpt_offsets=kpt_offsets, strides=self.strides, aux_heatmaps=aux)

    def instance_params(self, dense: DenseOutputs, instances: Instances) -> Tensor:
        """theta ``[N, P]`` of the dynamic heads of ``instances`` (the controller at their locations).

        Args:
            dense: The network's outputs (``forward``).
            instances: The instances whose heads to generate.

        Returns:
            ``[N, P]`` parameters of their dynamic heads.
        """
        inputs = self.head.controller_inputs(dense.ctrl_feats, instances.batch_index, instances.levels,
                                             instances.positions)
        return self.head.controller_params(inputs)

    def instance_heatmaps(self, dense: DenseOutputs, instances: Instances) -> Tensor:
        """Keypoint heatmap logits ``[N, K, H3, W3]`` of the dynamic heads of ``instances``.

        Args:
            dense: The network's outputs (``forward``).
            instances: The instances whose heads to run.

        Returns:
            ``[N, K, H3, W3]`` keypoint heatmap logits.
        """
        params = self.instance_params(dense, instances)
        norms = self.rel_coord_norm[instances.levels]
        return self.dynamic_head(dense.kpt_feats, params, instances.batch_index, instances.locations, norms)


def build_keypoint_branch(cfg: FCPoseConfig, in_channels: int) -> nn.Module:
    kp = cfg.model.keypoint
    if kp.branch == "paper":
        return KeypointBranch(in_channels, cfg.num_keypoints, channels=kp.branch_channels,
                              num_convs=kp.branch_num_convs, norm=kp.branch_norm, feat_channels=kp.feat_channels,
                              refine_input=kp.refine_input)
    if kp.branch == "official":
        from .basis_module import BasisModule

        return BasisModule(in_channels, cfg.num_keypoints, channels=kp.branch_channels,
                           num_convs=kp.branch_num_convs, norm=kp.branch_norm, feat_channels=kp.feat_channels,
                           aux_heads=kp.aux_heads)
    raise ConfigError(f"unknown keypoint branch {kp.branch!r}")


def build_dynamic_head(cfg: FCPoseConfig) -> DynamicKeypointHead:
    """The (parameter-free) dynamic keypoint head of a config: shared by the model and the post-processor."""
    kp = cfg.model.keypoint
    return DynamicKeypointHead(kp.feat_channels, kp.head_channels, kp.head_layers, cfg.num_keypoints,
                               stride=cfg.model.strides[0])


def build_model(config: FCPoseConfig | str | Path = "fcpose_r50_fpn", overrides: list[str] | dict | None = None
                ) -> FCPose:
    """Build FCPose from a preset name, a YAML path or a config object (plus optional overrides). The controller's
    output count is derived from the config (``cfg.num_dynamic_params``), never typed. Weights are randomly initialised
    (backbone from ``model.backbone.weights`` if given).

    Args:
        config: A preset name (``list_presets``), a YAML path or an ``FCPoseConfig``.
        overrides: ``["a.b=c", ...]`` strings or a nested dict applied on top of ``config``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ConfigError: The preset or file is unknown or unreadable, or the config or an override is invalid.
    """
    if isinstance(config, FCPoseConfig):
        cfg = apply_overrides(config, overrides).validate()
    else:
        cfg = load_config(config, overrides)
    m = cfg.model
    backbone = build_backbone(m.backbone)
    fpn = FPN(list(backbone.out_channels), m.fpn.channels, m.fpn.top_levels)
    strides = m.strides
    head = FCOSHead(m.fpn.channels, strides, cfg.num_dynamic_params, num_convs=m.fcos.num_convs,
                    norm=m.fcos.norm, prior_prob=m.fcos.prior_prob, controller_kernel=m.keypoint.controller_kernel)
    branch = build_keypoint_branch(cfg, m.fpn.channels)
    dynamic = build_dynamic_head(cfg)
    if dynamic.num_params != head.num_params:  # both derive from the config; a mismatch is a bug
        raise AssertionError(f"controller gives {head.num_params} parameters, head needs {dynamic.num_params}")
    with torch.no_grad():  # start every instance from the same working head (see initial_params)
        head.controller.bias.copy_(dynamic.initial_params())
    return FCPose(backbone, fpn, head, branch, dynamic, strides=strides, rel_coord_norm=m.rel_coord_norm,
                  pixel_mean=cfg.input.pixel_mean, pixel_std=cfg.input.pixel_std, input_format=cfg.input.format,
                  offset_unit=m.keypoint.offset_unit, keypoint_score=m.keypoint.score,
                  size_divisibility=cfg.input.size_divisibility, cfg=cfg)

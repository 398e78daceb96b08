"""Dataclass configuration, YAML presets and ``--set key=value`` overrides.

A preset (``fcpose/configs/<name>.yaml``) holds only what differs from the dataclass defaults below;
the defaults are the paper's R-50 FCPose. Derived values (the number of dynamic parameters, the
pyramid strides, the keypoint count) are properties, never typed by hand. Unknown keys anywhere —
in a YAML file, in ``--set`` or in a checkpoint — are a :class:`~fcpose.errors.ConfigError`."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "configs"

# ---- The COCO person keypoint set (order, skeleton, flip pairs, OKS sigmas as in the COCO API).
COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
# 0-based index pairs (COCO's annotation file gives the same edges 1-based).
COCO_SKELETON = [
    [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7],
    [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6],
]  # fmt: skip
COCO_FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
COCO_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
]  # fmt: skip
# ---- The CrowdPose keypoint set (Li et al., "CrowdPose", CVPR 2019; github.com/Jeff-sjtu/CrowdPose): COCO's 12 body
# joints in COCO's order, then the top of the head and the neck. The sigmas are those of the CrowdPose evaluation tool
# (crowdposetools/cocoeval.py: COCO's values for the 12 shared joints, 0.079 for head and neck), which MMPose and
# xtcocotools' CrowdPose configs use too.
CROWDPOSE_KEYPOINT_NAMES = [*COCO_KEYPOINT_NAMES[5:], "head", "neck"]
CROWDPOSE_SKELETON = [
    [12, 13], [13, 0], [13, 1], [0, 2], [2, 4], [1, 3], [3, 5], [0, 6], [1, 7], [6, 7], [6, 8], [8, 10], [7, 9],
    [9, 11],
]  # fmt: skip
CROWDPOSE_FLIP_PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
CROWDPOSE_SIGMAS = [*COCO_SIGMAS[5:], 0.079, 0.079]
# info.description of the datasets `fcpose synth` writes: how training records, and predict recognises,
# synthetic data without importing the generator (OpenCV).
SYNTH_DESCRIPTION = "fcpose synthetic multi-person poses"
# Share of a person's box that its body covers, on average over COCO (CrowdPose's evaluation and xtcocotools'
# ``use_area=False`` take a person's area as this fraction of its box when the file has no ``area``).
BOX_AREA_FACTOR = 0.53


def is_synthetic_dataset(ann_file: str | Path) -> bool:
    """Whether an annotation file carries :data:`SYNTH_DESCRIPTION` (an unreadable file counts as real)."""
    try:
        info = json.loads(Path(ann_file).read_text()).get("info", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(info, dict) and info.get("description") == SYNTH_DESCRIPTION


def dynamic_param_count(in_channels: int, channels: int, num_layers: int, out_channels: int) -> int:
    """Number of weights + biases of a stack of 1x1 convs ``in -> channels x (L-1) -> out``; with the paper's head
    (34 -> 32 -> 32 -> 17) this is (34*32+32) + (32*32+32) + (32*17+17) = 2,737."""
    if num_layers < 1:
        raise ConfigError(f"the dynamic head needs at least 1 layer, got {num_layers}")
    dims = [in_channels] + [channels] * (num_layers - 1) + [out_channels]
    return sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(num_layers))


@dataclass
class KeypointSetConfig:
    """The keypoint set of the dataset: names (their order is the channel order), edges to draw,
    left/right pairs swapped by a horizontal flip, and COCO OKS sigmas."""

    names: list[str] = field(default_factory=lambda: list(COCO_KEYPOINT_NAMES))
    skeleton: list[list[int]] = field(default_factory=lambda: copy.deepcopy(COCO_SKELETON))
    flip_pairs: list[list[int]] = field(default_factory=lambda: copy.deepcopy(COCO_FLIP_PAIRS))
    sigmas: list[float] = field(default_factory=lambda: list(COCO_SIGMAS))

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def flip_index(self) -> list[int]:
        """``flip_index[k]`` is the keypoint that k becomes after a horizontal flip."""
        index = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    def coco_category(self, *, fcpose_fields: bool = False) -> dict:
        """The set as a COCO ``person`` category (1-based skeleton); ``fcpose_fields``: with the ``flip_pairs`` (by
        name) and ``sigmas`` fields fcpose reads back from a category."""
        names = list(self.names)
        category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": names,
                    "skeleton": [[int(a) + 1, int(b) + 1] for a, b in self.skeleton]}
        if fcpose_fields:
            category.update(flip_pairs=[[names[a], names[b]] for a, b in self.flip_pairs], sigmas=list(self.sigmas))
        return category

    def validate(self) -> None:
        k = self.num_keypoints
        if k < 1:
            raise ConfigError("keypoints.names is empty")
        if len(self.sigmas) != k:
            raise ConfigError(f"keypoints.sigmas has {len(self.sigmas)} values for {k} keypoints")
        for name, pairs in (("skeleton", self.skeleton), ("flip_pairs", self.flip_pairs)):
            for pair in pairs:
                if len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
                    raise ConfigError(f"keypoints.{name} has an invalid pair {pair} for {k} keypoints")
        seen = [i for pair in self.flip_pairs for i in pair]
        if len(seen) != len(set(seen)):
            raise ConfigError("keypoints.flip_pairs uses a keypoint twice")


def builtin_keypoint_set(name: str) -> KeypointSetConfig:
    """A built-in keypoint set by name: ``coco`` (17 person keypoints) or ``crowdpose`` (14).

    Raises:
        ConfigError: An unknown name.
    """
    if name == "coco":
        return KeypointSetConfig()
    if name == "crowdpose":
        return KeypointSetConfig(names=list(CROWDPOSE_KEYPOINT_NAMES), skeleton=copy.deepcopy(CROWDPOSE_SKELETON),
                                 flip_pairs=copy.deepcopy(CROWDPOSE_FLIP_PAIRS), sigmas=list(CROWDPOSE_SIGMAS))
    raise ConfigError(f"unknown keypoint set {name!r} (built in: coco, crowdpose)")


def builtin_keypoint_set_of(names: list[str]) -> KeypointSetConfig | None:
    """The built-in keypoint set with exactly these names in this order, or None."""
    for name in BUILTIN_KEYPOINT_SETS:
        kset = builtin_keypoint_set(name)
        if kset.names == list(names):
            return kset
    return None


BUILTIN_KEYPOINT_SETS = ("coco", "crowdpose")


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | dla34
    norm: str = "FrozenBN"  # FrozenBN | BN | SyncBN | GN (GN for training from scratch with small batches)
    freeze_at: int = 2  # 0: nothing frozen, 1: stem, 2: stem + first stage, ... 5: everything
    stride_in_1x1: bool = False  # ResNet: stride in the first 1x1 conv (MSRA/detectron2) or the 3x3 (torchvision)
    weights: str = ""  # local ImageNet checkpoint loaded before training (optional)
    # The norm a training run without pretrained backbone weights uses instead of `norm` ("" = `norm`): set by
    # presets meant to train from scratch too (fcpose_r18_tiny: FrozenBN with ImageNet weights, GN without).
    scratch_norm: str = ""
    width: int = 64  # ResNet: stem/first-stage channels (64 = the standard networks and their ImageNet weights)


@dataclass
class FPNConfig:
    channels: int = 256
    top_levels: int = 2  # P6, P7 computed from P5 (FCOS); 0 keeps P3-P5 only (real-time model)


@dataclass
class FCOSHeadConfig:
    num_convs: int = 4
    norm: str = "GN"
    prior_prob: float = 0.01
    # Upper bounds of the object sizes assigned to P3, P4, ... (the last level takes the rest).
    sizes_of_interest: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    center_sampling_radius: float = 1.5


@dataclass
class KeypointHeadConfig:
    # "paper": F = a few convs on P3, refinement = one conv on P3 (Sec. 3.1, 3.2).
    # "official": the AdelaiDet basis module (P3-P5 fusion giving F and the offsets together).
    branch: str = "paper"
    branch_channels: int = 128
    branch_num_convs: int = 4
    branch_norm: str = "GN"  # GN | BN | SyncBN
    feat_channels: int = 32  # channels of F
    head_channels: int = 32  # width of the dynamic head
    head_layers: int = 3  # 1x1 conv layers of the dynamic head
    controller_kernel: int = 1  # 1: the paper's 1x1 conv; 3: the official 3x3-unfold + Linear
    # Divisor of the relative coordinates per pyramid level; empty = sizes_of_interest plus twice
    # the last value for the last level (CondInst).
    rel_coord_norm: list[float] = field(default_factory=list)
    offset_unit: str = "stride"  # refinement offsets are predicted in "stride" units or in "pixel"s
    # What the refinement conv reads: "p3" (the paper: one conv on P3) or "tower" (the keypoint branch's
    # tower output, like the official code's offsets; better for small pyramids trained from scratch).
    refine_input: str = "p3"
    score: str = "softmax"  # keypoint score: softmax probability of the peak, or the raw "logit"
    # Official basis module only: the auxiliary heatmap heads (seg_head, p3_logits, upsampler, p1_logits) that
    # the official training supervises with Gaussian heatmaps (loss.recipe: official). No output depends on them.
    aux_heads: bool = False

    def num_dynamic_params(self, num_keypoints: int) -> int:
        return dynamic_param_count(self.feat_channels + 2, self.head_channels, self.head_layers, num_keypoints)


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    fcos: FCOSHeadConfig = field(default_factory=FCOSHeadConfig)
    keypoint: KeypointHeadConfig = field(default_factory=KeypointHeadConfig)

    @property
    def strides(self) -> list[int]:
        """Strides of the pyramid levels the heads run on (P3 = 8, ...)."""
        return [2 ** (3 + i) for i in range(3 + self.fpn.top_levels)]

    @property
    def rel_coord_norm(self) -> list[float]:
        if self.keypoint.rel_coord_norm:
            return [float(v) for v in self.keypoint.rel_coord_norm]
        soi = [float(v) for v in self.fcos.sizes_of_interest]
        return soi + [2.0 * soi[-1]]


@dataclass
class InputConfig:
    format: str = "RGB"  # channel order the network sees: RGB (ImageNet checkpoints) or BGR (detectron2)
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    min_size_train: list[int] = field(default_factory=lambda: [320, 800])  # short side ~ U[a, b]
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    size_divisibility: int = 32
    crop: bool = True
    crop_range: list[float] = field(default_factory=lambda: [0.4, 1.0])  # relative crop size
    # A person cut by the crop stays a person if at least this share of its box is visible (else an ignore region
    # with crowd: ignore); the official trainer keeps every clipped box that is not empty (0).
    crop_min_visible: float = 0.1
    min_box_size: float = 1.0  # pixels: narrower or lower boxes are dropped (load and crop); official: 1e-5
    flip: bool = True
    # Crowd annotations (iscrowd = 1): "ignore" regions (neither positive nor negative, the paper variant) or
    # "drop" them (the official trainer: no ignore handling anywhere).
    crowd: str = "ignore"
    filter_empty: bool = False  # drop training images without any (non-crowd) person (detectron2's default)
    min_keypoints_per_image: int = 0  # drop training images with fewer labelled keypoints (official: 1)


@dataclass
class TestConfig:
    """The test-time parameters of the post-processor (one dataclass: config section and runtime values)."""

    __test__ = False  # not a pytest test class

    score_threshold: float = 0.05
    pre_nms_topk: int = 1000  # per level
    nms_threshold: float = 0.6
    max_detections: int = 100


@dataclass
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    heatmap_weight: float = 1.0  # alpha in Eq. (4)
    offset_weight: float = 1.0  # beta in Eq. (4)
    offset_radius: float = 2.0  # refinement offsets are supervised within this many cells of a keypoint
    max_proposals: int = 50  # M: positive locations per batch that generate dynamic heads
    # "paper": Sec. 3.3 as in the paper (heatmap CE on the stride-8 grid, offset MSE, M sampled instances spread
    # over the people). "official": AdelaiDet's training maths exactly (see docs/official_training.md): CE on
    # the x4-upsampled stride-2 grid, the softmax-weighted direction loss, p1/p3 auxiliary heatmap losses,
    # per-person top-k heads (k = max_proposals // people), GIoU in stride units with +1 smoothing.
    recipe: str = "paper"
    keypoint_weight: float = 2.5  # official: LOSS_WEIGHT_KEYPOINT
    direction_weight: float = 9.0  # official: LOSS_WEIGHT_DIRECTION
    distance_norm: float = 12.0  # official: DISTANCE_NORM of the direction loss
    aux_weight: float = 0.2  # official: BASIS_MODULE.LOSS_WEIGHT of the p1/p3 heatmap losses
    aux_sigma: float = 1.8  # official: HEATMAP_SIGMA of the stride-2 p1 target (the stride-8 p3 target uses half)


@dataclass
class SolverConfig:
    ims_per_batch: int = 16
    optimizer: str = "sgd"  # sgd (the paper) | adamw (converges faster when training small models from scratch)
    base_lr: float = 0.01  # at 16 images per batch; scaled linearly with ims_per_batch
    reference_batch: int = 16
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    weight_decay: float = 1e-4
    lr_schedule: str = "step"  # step: x gamma at each of `steps` | cosine: from base_lr to 0 at max_iter
    # Exponential moving average of the weights (0 disables). The average is what model_final.pt holds and
    # what periodic evaluation scores; the decay ramps up as min(ema_decay, (1 + t) / (10 + t)).
    ema_decay: float = 0.0
    max_iter: int = 90000
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: float = 10.0  # 0 disables
    clip_grad_value: float = 0.0  # > 0: clamp every gradient element to [-v, v] (official: 1.0); 0 disables
    # Mixed precision of the network's forward pass: auto (bf16 on GPUs that support it, fp16 on older GPUs, fp32 on
    # CPUs) | fp32 | bf16 (no loss scaling needed) | fp16 (with dynamic loss scaling). The losses, the dynamic heads and
    # the decode always compute in fp32. Old configs' `amp: true/false` read as auto/fp32.
    precision: str = "auto"
    # NHWC activations and weights while training: null = on for CUDA (what cuDNN's tensor-core convolutions
    # want), off on CPU; true/false forces it (about 10% faster on some CPUs).
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the network (Inductor; needs a C++ compiler on CPU, Triton on CUDA)
    # Divergence stop: training ends (non-zero exit, last good last.pt kept, no model_final.pt) when more than
    # this share of the last `skip_window` steps were skipped for a non-finite loss or gradient, or when a
    # parameter or buffer becomes non-finite. fp16 loss-scale calibration (a finite loss whose scaled gradients
    # overflowed while the scale is >= 1) is counted apart and does not count here.
    max_skipped_fraction: float = 0.05
    skip_window: int = 100
    checkpoint_period: int = 5000
    checkpoint_minutes: float = 30.0  # also write last.pt when this many minutes passed since the last one (0: off)
    eval_period: int = 0  # 0: evaluate at the end only
    log_period: int = 20
    num_workers: int = 4
    seed: int = 0


@dataclass
class TrackerConfig:
    """``fcpose track``: ByteTrack-style association with a box Kalman filter and pose similarity, plus
    One-Euro keypoint smoothing. Old checkpoints without this section get these defaults."""

    high_threshold: float = 0.5  # detections at or above this score are matched first
    low_threshold: float = 0.1  # detections in [low, high) are matched second, to the tracks left over
    new_track_threshold: float = 0.6  # minimum score of a detection that starts a new track
    pose_weight: float = 0.5  # similarity = (1 - w) * box IoU + w * OKS(predicted track pose, detection); 0: IoU only
    match_threshold: float = 0.2  # minimum similarity of a match in the first (high-score) round
    low_match_threshold: float = 0.4  # ... in the second (low-score) round
    max_missed: int = 30  # frames a track survives without a match (then it ends; a return gets a new id)
    min_hits: int = 2  # matched frames before a new track is reported (1: at once; the first frame: always)
    keypoint_threshold: float = 0.05  # keypoints above this score count in OKS and drive the smoothing
    kalman_std_position: float = 0.05  # measurement noise, fraction of the box size
    kalman_std_process: float = 0.015  # process noise of the position, fraction of the box size per frame
    kalman_std_velocity: float = 0.00625  # process noise of the velocity, fraction of the box size per frame
    smooth: bool = False  # One-Euro smoothing of the keypoints relative to the box centre (``--smooth``)
    min_cutoff: float = 1.0  # One-Euro minimum cutoff frequency (Hz): lower = less jitter at rest
    beta: float = 0.02  # One-Euro speed coefficient (per pixel/s): higher = less lag on fast motion
    d_cutoff: float = 1.0  # One-Euro cutoff of the speed estimate (Hz)


@dataclass
class FCPoseConfig:
    """The whole configuration of a model: network, keypoint set, input sizes, test-time decoding, loss, solver and
    tracker (what a preset YAML and a checkpoint hold; ``load_config`` builds one).

    Args:
        model: The network (backbone, FPN, FCOS head, keypoint branch and dynamic heads).
        keypoints: The keypoint set: names, skeleton, OKS sigmas, flip pairs.
        input: Image sizes and channel order, for training and test.
        test: Test-time decoding: score threshold, top-k, NMS, detections per image.
        loss: Loss weights and target settings.
        solver: Optimiser and schedule.
        tracker: The defaults of ``fcpose track`` and ``Predictor.track``.
        name: The preset name (informational).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    keypoints: KeypointSetConfig = field(default_factory=KeypointSetConfig)
    input: InputConfig = field(default_factory=InputConfig)
    test: TestConfig = field(default_factory=TestConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    name: str = ""  # preset name, informational

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.num_keypoints

    @property
    def num_dynamic_params(self) -> int:
        """Cardinality of theta_i = output channels of the controller (2,737 for the paper's head)."""
        return self.model.keypoint.num_dynamic_params(self.num_keypoints)

    def validate(self) -> FCPoseConfig:
        """Check the config: its choices, list lengths and ranges, and that its parts fit together.

        Returns:
            The config itself, once valid.

        Raises:
            ConfigError: A value is not one of its choices or out of range.
        """
        self.keypoints.validate()
        m = self.model
        choices = {
            "model.backbone.norm": (m.backbone.norm, {"FrozenBN", "BN", "SyncBN", "GN"}),
            "model.backbone.scratch_norm": (m.backbone.scratch_norm, {"", "BN", "SyncBN", "GN"}),
            "model.fcos.norm": (m.fcos.norm, {"GN", "BN", "SyncBN", "none"}),
            "model.keypoint.branch": (m.keypoint.branch, {"paper", "official"}),
            "model.keypoint.branch_norm": (m.keypoint.branch_norm, {"GN", "BN", "SyncBN"}),
            "model.keypoint.offset_unit": (m.keypoint.offset_unit, {"stride", "pixel"}),
            "model.keypoint.refine_input": (m.keypoint.refine_input, {"p3", "tower"}),
            "model.keypoint.score": (m.keypoint.score, {"softmax", "logit"}),
            "input.format": (self.input.format, {"RGB", "BGR"}),
            "input.crowd": (self.input.crowd, {"ignore", "drop"}),
            "loss.recipe": (self.loss.recipe, {"paper", "official"}),
            "solver.optimizer": (self.solver.optimizer, {"sgd", "adamw"}),
            "solver.lr_schedule": (self.solver.lr_schedule, {"step", "cosine"}),
            "solver.precision": (self.solver.precision, {"auto", "fp32", "bf16", "fp16"}),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {sorted(allowed)}, got {value!r}")
        if m.keypoint.controller_kernel not in (1, 3):
            raise ConfigError("model.keypoint.controller_kernel must be 1 or 3")
        if m.fpn.top_levels not in (0, 1, 2):
            raise ConfigError("model.fpn.top_levels must be 0, 1 or 2")
        if len(m.fcos.sizes_of_interest) != len(m.strides) - 1:
            raise ConfigError(f"model.fcos.sizes_of_interest needs {len(m.strides) - 1} values for {len(m.strides)} "
                              f"pyramid levels, got {m.fcos.sizes_of_interest}")
        if len(m.rel_coord_norm) != len(m.strides):
            raise ConfigError(f"model.keypoint.rel_coord_norm needs {len(m.strides)} values")
        if len(self.input.pixel_mean) != 3 or len(self.input.pixel_std) != 3:
            raise ConfigError("input.pixel_mean and input.pixel_std need 3 values")
        if len(self.input.min_size_train) != 2 or len(self.input.crop_range) != 2:
            raise ConfigError("input.min_size_train and input.crop_range are [low, high] pairs")
        if self.loss.recipe == "official" and not (m.keypoint.branch == "official" and m.keypoint.aux_heads):
            raise ConfigError("loss.recipe: official needs the official keypoint branch with its auxiliary heads "
                              "(model.keypoint.branch: official, model.keypoint.aux_heads: true)")
        if m.keypoint.aux_heads and m.keypoint.branch != "official":
            raise ConfigError("model.keypoint.aux_heads exists only for model.keypoint.branch: official")
        if self.solver.clip_grad_value < 0 or self.solver.clip_grad_norm < 0:
            raise ConfigError("solver.clip_grad_value and solver.clip_grad_norm must be >= 0 (0 disables)")
        if not 0.0 <= self.solver.max_skipped_fraction <= 1.0 or self.solver.skip_window < 1:
            raise ConfigError("solver.max_skipped_fraction must be in [0, 1] and solver.skip_window >= 1")
        if not 0.0 <= self.solver.ema_decay < 1.0:
            raise ConfigError(f"solver.ema_decay must be in [0, 1) (0 disables), got {self.solver.ema_decay}")
        return self


# ---- dict <-> dataclass --------------------------------------------------------------------
def to_dict(cfg: Any) -> dict:
    """Plain nested dict of the config (YAML/JSON/checkpoint safe)."""
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _merge(obj: Any, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r} (valid here: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _upgrade_legacy(data: dict | None) -> dict:
    """Keys that older fcpose versions wrote, translated: ``solver.amp: true/false`` (fp16 autocast on CUDA) is
    ``solver.precision: auto/fp32``. Returns a new dict; ``data`` is not changed."""
    if not isinstance(data, dict) or not isinstance(data.get("solver"), dict) or "amp" not in data["solver"]:
        return data or {}
    solver = dict(data["solver"])
    amp = solver.pop("amp")
    if not isinstance(amp, bool):
        raise ConfigError(f"solver.amp (the old name of solver.precision) must be true or false, got {amp!r}")
    solver.setdefault("precision", "auto" if amp else "fp32")
    return {**data, "solver": solver}


def from_dict(data: dict | None, base: FCPoseConfig | None = None) -> FCPoseConfig:
    """Build a config from a (partial) nested dict on top of ``base`` (default: dataclass defaults); keys of older
    versions are translated (:func:`_upgrade_legacy`)."""
    cfg = copy.deepcopy(base) if base is not None else FCPoseConfig()
    _merge(cfg, _upgrade_legacy(data), "")
    return cfg


def parse_overrides(items: list[str] | None) -> dict:
    """``["model.backbone.name=resnet18", "solver.steps=[10, 20]"]`` -> nested dict (YAML values)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: conflicts with another override")
        node[parts[-1]] = value
    return out


def list_presets() -> list[str]:
    """The names of the bundled presets, for ``load_config`` and ``build_model``.

    Returns:
        The preset names, sorted.
    """
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


# one line each for `fcpose presets`; a preset without an entry shows the first comment line of its YAML
PRESET_SUMMARIES = {
    "fcpose_r50_fpn": "the paper's model: ResNet-50 + FPN P3-P7",
    "fcpose_r101_fpn": "ResNet-101 + FPN P3-P7 (paper, Table 6)",
    "fcpose_dla34_rt": "real-time: DLA-34, P3-P5, 512 short side",
    "fcpose_r18_tiny": "small ResNet-18 model for fast CPU tests and demos",
    "fcpose_r50_official": "official AdelaiDet R-50 variant (runs fcpose50.pth)",
    "fcpose_r101_official": "official AdelaiDet R-101 variant (runs fcpose101.pth)",
    "fcpose_r50_crowdpose": "official R-50 variant on CrowdPose's 14 keypoints (fine-tune from fcpose_r50_official)",
    "overfit_tiny": "over-fitting check on a few real images (ResNet-18/GN)",
    "overfit_tiny_official": "over-fitting check of the official variant and recipe (ResNet-18/GN)",
}


def preset_summary(name: str) -> str:
    """One line describing a preset: its :data:`PRESET_SUMMARIES` entry, else the first sentence of its YAML's
    opening comment ("" without either)."""
    if name in PRESET_SUMMARIES:
        return PRESET_SUMMARIES[name]
    try:
        text = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    except OSError:
        return ""
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    paragraph = " ".join(comment)
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping at the top level")
    return data


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (``fcpose_r50_fpn``) or a path to a YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    preset = PRESET_DIR / f"{text}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"unknown preset {text!r} (presets: {', '.join(list_presets())})")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | dict | None = None) -> FCPoseConfig:
    """Defaults <- preset/YAML file <- overrides (``["a.b=c"]`` strings or a nested dict).

    Args:
        name_or_path: A preset name (``list_presets``) or a YAML file; ``None``: the defaults.
        overrides: ``["a.b=c", ...]`` strings or a nested dict, applied last.

    Returns:
        The validated config.

    Raises:
        ConfigError: The preset or file is unknown or unreadable, or a value is invalid.
    """
    cfg = FCPoseConfig()
    if name_or_path is not None:
        path = resolve_preset(name_or_path)
        cfg = from_dict(_read_yaml(path), cfg)
        if not cfg.name:
            cfg.name = path.stem
    return apply_overrides(cfg, overrides).validate()


def apply_overrides(cfg: FCPoseConfig, overrides: list[str] | dict | None) -> FCPoseConfig:
    """A copy of ``cfg`` with ``["a.b=c", ...]`` strings or a nested dict applied (not validated)."""
    if not overrides:
        return copy.deepcopy(cfg)
    data = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
    return from_dict(data, cfg)


"""Checks that turn silent training traps into one-line notes, applied by :func:`fcpose.engine.trainer.train`:
random backbone layers frozen for the whole run (:func:`fit_backbone_to_scratch`), a schedule longer than the
run (:func:`fit_schedule`), a keypoint set other than the data's (:func:`fit_keypoints_to_data`), more loader
workers than CPUs (:func:`clamp_workers`).

All but the last change the config itself, before the model, the optimizer, the scheduler and ``config.yaml``
are built or written: the checkpoints record the configuration that was actually trained, and a resumed
run, given the same config, takes the same decisions (each is a pure function of the config)."""

from __future__ import annotations

import os
import sys

from ..config import FCPoseConfig, KeypointSetConfig

_RESNET_STAGES = ("stem", "res2", "res3", "res4", "res5")

# A step schedule that does not fit is taken to have been written for a run whose last decay sits at 8/9
# of it (detectron2's 1x/3x schedules: 80k of 90k, 240k of 270k, as in the presets).
LAST_STEP_FRACTION = 8 / 9
# A warm-up that does not fit becomes this fraction of the run.
WARMUP_FRACTION = 0.1


def _note(message: str, verbose: bool) -> None:
    if verbose:
        print(message, file=sys.stderr)


def fit_backbone_to_scratch(cfg: FCPoseConfig, *, has_pretrained: bool, verbose: bool = True) -> list[str]:
    """Make a from-scratch run train its whole backbone; returns the one-line warnings (printed to stderr
    when ``verbose``). ``has_pretrained``: the run starts from trained weights (``model.backbone.weights``, or a
    checkpoint to fine-tune from); the caller decides. Without them, in ``cfg`` (so the saved config says what
    was trained): ``freeze_at`` becomes 0 (it would keep the random stem, res2, ... fixed); ``norm`` becomes
    ``model.backbone.scratch_norm`` where the preset names one (e.g. ``fcpose_r18_tiny``), with one note;
    otherwise ``norm: FrozenBN`` starts as the identity and is never trained, so the backbone would train
    without normalisation (its activations outgrow float16 within a few steps): the trainer sets its
    statistics from the first batch (:func:`~fcpose.model.norm.calibrate_frozen_bn`) and a warning suggests GN
    (or BN/SyncBN). The paper's and the official presets are in this case: they need ImageNet weights.

    A resumed run must pass what its first run passed (its model and optimizer groups are rebuilt as the first
    run built them, so ``--resume`` alone does not count as pretrained)."""
    if has_pretrained:
        return []
    bb = cfg.model.backbone
    lines = []
    if bb.scratch_norm and bb.scratch_norm != bb.norm:
        lines.append(f"note: no pretrained backbone weights (model.backbone.weights is empty): the backbone trains "
                     f"from scratch as this config provides, with model.backbone.norm={bb.scratch_norm} (its "
                     f"scratch_norm; {bb.norm} is for pretrained weights) and nothing frozen (freeze_at "
                     f"{bb.freeze_at} -> 0)")
        bb.norm, bb.freeze_at = bb.scratch_norm, 0
    if bb.freeze_at > 0:
        names = list(_RESNET_STAGES[:bb.freeze_at])
        frozen = (" and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
                  if bb.name.startswith("resnet") else f"first {bb.freeze_at} stage" + "s" * (bb.freeze_at > 1))
        lines.append(f"warning: no pretrained backbone weights (model.backbone.weights is empty), so "
                     f"model.backbone.freeze_at={bb.freeze_at} would keep the randomly initialised {frozen} fixed; "
                     f"training the whole backbone instead (freeze_at=0)")
        bb.freeze_at = 0
    if bb.norm == "FrozenBN":
        lines.append("warning: model.backbone.norm=FrozenBN without pretrained backbone weights: FrozenBatchNorm2d "
                     "starts as the identity (weight 1, bias 0, mean 0, var 1) and is never trained, so its statistics "
                     "are set from the first training batch (each frozen norm then normalises its input) and stay "
                     "fixed; use model.backbone.norm=GN (or BN) to train the norms from scratch too")
    for line in lines:
        _note(line, verbose)
    return lines


def needs_pretrained_backbone(cfg: FCPoseConfig) -> bool:
    """Whether ``cfg`` trains sensibly only from pretrained (ImageNet) backbone weights: its backbone norm
    without them (``scratch_norm``, else ``norm``) is FrozenBN, which stays the identity from scratch (see
    :func:`fit_backbone_to_scratch`)."""
    bb = cfg.model.backbone
    return (bb.scratch_norm or bb.norm) == "FrozenBN"


def fit_schedule(cfg: FCPoseConfig, *, verbose: bool = True) -> str | None:
    """Scale a warm-up / step schedule that does not fit inside ``solver.max_iter`` (in ``cfg``); returns
    the one-line note (printed to stderr when ``verbose``), or None when nothing changed.

    A schedule that fits (every step < max_iter with ``lr_schedule: step``, and warmup_iters < max_iter) is
    never touched. Otherwise, with T = max_iter:

    1. ``lr_schedule: step`` and max(steps) >= T: the schedule is taken to have been written for a run of
       length L = max(steps) / (8/9) (the last decay at 8/9 of the run, as in detectron2's 1x/3x schedules
       and the presets: 80000 of 90000). Every step and warmup_iters are multiplied by T / L and rounded;
       a step is kept in 1 .. T - 1 and a non-zero warm-up stays >= 1 iteration. The gammas and their
       number are kept, so the final lr is the same (two steps that land on one iteration apply both decays there).
    2. Then, if warmup_iters >= T (the steps fit, ``lr_schedule: cosine`` ignores them, or the warm-up was
       longer than the steps): warmup_iters = T // 10 (0 for a run under 10 iterations: no warm-up).

    Example: max_iter 100, warmup 1000, steps [60000, 80000] -> L = 90000, warmup 1, steps [67, 89]."""
    s = cfg.solver
    T = int(s.max_iter)
    if T <= 0:
        return None
    before = (s.warmup_iters, list(s.steps))
    changes, warmup_rule = [], ""
    if s.lr_schedule == "step" and s.steps and max(s.steps) >= T:
        factor = T * LAST_STEP_FRACTION / max(s.steps)
        s.steps = [min(max(1, round(step * factor)), max(1, T - 1)) for step in s.steps]
        if s.warmup_iters > 0:
            s.warmup_iters = max(1, round(s.warmup_iters * factor))
        if s.steps != before[1]:
            changes.append(f"steps {before[1]} -> {s.steps} (x{factor:.3g}: the last step at 8/9 of the run)")
        warmup_rule = "scaled likewise"
    if s.warmup_iters >= T:
        s.warmup_iters = int(T * WARMUP_FRACTION)
        warmup_rule = "10% of the run"
    if (s.warmup_iters, s.steps) == before:  # e.g. max_iter 1: nothing left to scale
        return None
    if s.warmup_iters != before[0]:
        changes.append(f"warmup_iters {before[0]} -> {s.warmup_iters} ({warmup_rule})")
    line = f"note: the lr schedule did not fit in solver.max_iter={T}, so it was scaled to it: " + "; ".join(changes)
    _note(line, verbose)
    return line


def _names(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def fit_keypoints_to_data(cfg: FCPoseConfig, data_keypoints: KeypointSetConfig, source: str, *,
                          verbose: bool = True) -> str | None:
    """Make ``cfg.keypoints`` the training data's keypoint set (read from the annotation file ``source``):
    the model sizes its heads and controller from it, and the annotations hold that many keypoints.
    Returns the one-line note (printed to stderr when ``verbose``), or None when it says nothing.

    Silent when the config's section is the default (COCO's 17 person keypoints, also what a preset without
    a ``keypoints:`` section has) or already equal to the data's. When the config explicitly set another set
    (a ``config.yaml`` of a run on another dataset, ``--set keypoints.names=...``), the data still wins — it
    is what the model is trained on, also with a different number of keypoints, not an error — and the note
    says what was replaced by what: the names (their number), or the fields that differ (e.g. ``sigmas``; to keep the
    config's, put them in the annotation file's category, whose ``sigmas``/``flip_pairs`` fields are read)."""
    own, line = cfg.keypoints, None
    if own != KeypointSetConfig() and own != data_keypoints:
        if own.names != data_keypoints.names:
            detail = (f"{own.num_keypoints} keypoints ({_names(own.names)}) -> {data_keypoints.num_keypoints} "
                      f"({_names(data_keypoints.names)})")
        else:
            fields = [f for f in ("skeleton", "flip_pairs", "sigmas") if getattr(own, f) != getattr(data_keypoints, f)]
            detail = (f"keypoints.{', keypoints.'.join(fields)} -> the dataset's (to keep the config's, add them to "
                      f"the keypoint category of {source})")
        line = f"note: the training data {source} defines the keypoint set, so it replaced the config's: {detail}"
        _note(line, verbose)
    cfg.keypoints = data_keypoints
    return line


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def clamp_workers(requested: int, *, verbose: bool = True) -> int:
    """``requested`` data-loader workers, at most :func:`usable_cpus` (one note on stderr when reduced,
    if ``verbose``). 0 (load in the main process) stays 0. Which images and augmentations each iteration
    gets does not depend on the number of workers, so this changes speed only."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    _note(f"note: {requested} data-loader workers requested (solver.num_workers / --num-workers) but this process "
          f"can use {cpus} CPU(s); using {cpus}", verbose)
    return cpus

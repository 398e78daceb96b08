"""``build(config) -> (model, criterion, postprocessor)``: the three objects of one config (the DETR pattern).

The network (:class:`~fcpose.model.fcpose.FCPose`: weights and ``forward``), the training objective
(:class:`~fcpose.loss.FCPoseCriterion`) and the decoding (:class:`~fcpose.postprocess.PostProcessor`) are
separate objects with separate jobs; this is the one place that makes all three from the same settings."""

from __future__ import annotations

from pathlib import Path

from .config import FCPoseConfig
from .loss import FCPoseCriterion
from .model.fcpose import FCPose, build_model
from .postprocess import PostProcessor

__all__ = ["build"]


def build(config: FCPoseConfig | str | Path = "fcpose_r50_fpn", overrides: list[str] | dict | None = None
          ) -> tuple[FCPose, FCPoseCriterion, PostProcessor]:
    """A preset name, YAML path or config object (plus overrides) -> (model, criterion, post-processor).

    Args:
        config: A preset name (``fcpose.list_presets()``), a YAML path or an ``FCPoseConfig``.
        overrides: ``["a.b=c", ...]`` strings or a nested dict applied on top of ``config``.

    Returns:
        The model (random weights, see ``build_model``), its training loss and its post-processor.

    Raises:
        ConfigError: The preset or file is unknown or unreadable, or the config or an override is invalid.
    """
    model = build_model(config, overrides)
    return model, FCPoseCriterion.from_config(model.cfg), PostProcessor.from_config(model.cfg)

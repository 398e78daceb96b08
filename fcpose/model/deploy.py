"""The inference-only copy of a model: what every deployment path runs (the runner, ONNX and OpenVINO export).

* frozen batch norms folded into the convolution before them (:func:`~fcpose.model.norm.fold_frozen_bn`);
* optionally channels-last weights (NHWC, what oneDNN and cuDNN convolutions prefer);
* optionally the network's weights in bf16/fp16 (``dtype``, :func:`cast_weights`): the controller, which
  runs after the selection as part of the decoding, stays float32;
* eval mode, no gradients.

The copy's state dict differs (conv biases appear, norm entries vanish), so never train or save it; the
original model is left untouched (unless ``inplace``)."""

from __future__ import annotations

import copy

import torch

from .fcpose import FCPose
from .norm import fold_frozen_bn

__all__ = ["optimize_for_inference", "cast_weights"]


def cast_weights(model: FCPose, dtype: torch.dtype) -> FCPose:
    """In place: the weights and buffers of the network that ``forward`` runs (backbone, FPN, FCOS head,
    keypoint branch) converted to ``dtype``; the FCOS head's controller (evaluated after the selection, on the
    selected locations, as part of the float32 decoding) and the model's own buffers (pixel mean/std,
    relative-coordinate divisors) stay float32. ``forward`` then expects an input of ``dtype`` and returns
    :class:`~fcpose.structures.DenseOutputs` of ``dtype``. Fold batch norms first (their running variance
    may not fit in fp16); for an inference copy only."""
    for part in (model.backbone, model.fpn, model.head, model.keypoint_branch):
        part.to(dtype)
    model.head.controller.float()
    return model


def optimize_for_inference(model: FCPose, *, fold_bn: bool = True, channels_last: bool = True,
                           inplace: bool = False, dtype: torch.dtype | None = None) -> FCPose:
    """An inference-only version of ``model``: eval mode, no gradients, frozen BN folded into convs, channels-last
    weights, and with ``dtype`` (bf16/fp16) the network's weights in that dtype (:func:`cast_weights`). A deep copy
    unless ``inplace`` (then ``model`` itself is changed and must not be trained or saved afterwards)."""
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    out.requires_grad_(False)
    if fold_bn:
        fold_frozen_bn(out)
    if dtype is not None and dtype != torch.float32:
        cast_weights(out, dtype)
    if channels_last:
        out.to(memory_format=torch.channels_last)
    return out

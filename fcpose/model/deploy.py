"""The inference-only copy of a model: what every deployment path runs (the runner, ONNX and OpenVINO export).

* frozen batch norms folded into the convolution before them (:func:`~fcpose.model.norm.fold_frozen_bn`);
* optionally channels-last weights (NHWC, what oneDNN and cuDNN convolutions prefer);
* eval mode, no gradients.

The copy's state dict differs (conv biases appear, norm entries vanish), so never train or save it; the
original model is left untouched (unless ``inplace``).
"""

from __future__ import annotations

import copy

import torch

from .fcpose import FCPose
from .norm import fold_frozen_bn

__all__ = ["optimize_for_inference"]


def optimize_for_inference(model: FCPose, *, fold_bn: bool = True, channels_last: bool = True,
                           inplace: bool = False) -> FCPose:
    """An inference-only version of ``model``: eval mode, no gradients, frozen BN folded into convs,
    channels-last weights. A deep copy unless ``inplace`` (then ``model`` itself is changed and must not be
    trained or saved afterwards)."""
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    out.requires_grad_(False)
    if fold_bn:
        fold_frozen_bn(out)
    if channels_last:
        out.to(memory_format=torch.channels_last)
    return out

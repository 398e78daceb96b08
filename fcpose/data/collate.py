"""Batching dataset items and turning them into the network's input."""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.fcpose import FCPose
from .transforms import batch_images


def collate(batch: list[dict]) -> dict:
    """Items of :class:`~fcpose.data.coco.CocoKeypointDataset` -> ``{"images": [...], "targets": [...]}``.

    ``images``: list of uint8 ``[3, h_i, w_i]`` tensors (sizes may differ); ``targets``: one dict per image
    with every other field of the item (``boxes``, ``keypoints``, ``ignore_boxes``, ``image_id``, ...).

    Args:
        batch: Dataset items.

    Returns:
        The batch.
    """
    return {"images": [item["image"] for item in batch],
            "targets": [{k: v for k, v in item.items() if k != "image"} for item in batch]}


def to_model_input(model: FCPose, images: list[Tensor], device: torch.device | str | None = None
                   ) -> tuple[Tensor, list[tuple[int, int]]]:
    """uint8 ``[3, h_i, w_i]`` RGB images -> (``[B, 3, H, W]`` float batch, ``[(h_i, w_i)]``).

    Each image is normalised with ``model.normalize`` first and then zero-padded at the bottom/right to a
    common size divisible by ``model.size_divisibility``, so the padding is 0 *after* normalisation (what
    detectron2 does). ``model`` may be wrapped (DDP): its ``.module`` is used.

    Args:
        model: The network (or its DDP wrapper), which normalises and sets the padding multiple.
        images: uint8 ``[3, h_i, w_i]`` RGB images.
        device: Where the batch goes; default: the model's device.

    Returns:
        The batch and each image's size before padding.
    """
    core = getattr(model, "module", model)
    device = core.device if device is None else torch.device(device)
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    normed = [core.normalize(im.to(device, non_blocking=True).float()) for im in images]
    return batch_images(normed, core.size_divisibility), sizes

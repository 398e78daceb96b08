"""Fine-tuning to another keypoint set by name: the channels of every keypoint that the checkpoint's set and the
model's set share by name are copied, those of the model's other keypoints keep their fresh initialisation.

Where each keypoint lives in the weights is said by the model (``FCPose.keypoint_channels``: the controller's
outputs that generate the dynamic heads' last layer, the offsets, the auxiliary heatmap heads); this module only
moves channels between two such layouts (:func:`map_keypoint_channels`) and words the result
(:class:`KeypointMatch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Layout = dict[str, tuple[int, torch.Tensor]]  # state-dict key -> (dim, keypoint of each channel along dim; -1 shared)


@dataclass
class KeypointMatch:
    """Which keypoints fine-tuning copied by name (``copied``, in the model's order), which are new to the model
    (``new``: freshly initialised) and which of the checkpoint's it left out (``unused``)."""

    copied: list[str]
    new: list[str]
    unused: list[str]

    @classmethod
    def of(cls, source: Sequence[str], target: Sequence[str]) -> KeypointMatch:
        known, wanted = set(source), set(target)
        return cls([n for n in target if n in known], [n for n in target if n not in known],
                   [n for n in source if n not in wanted])

    def lines(self) -> list[str]:
        """What ``fcpose train --init`` prints: one line for the copied keypoints, one for the new ones."""
        unused = f" (not used: {', '.join(self.unused)})" if self.unused else ""
        if not self.copied:
            return [f"init: no keypoint name in common with the checkpoint's ({', '.join(self.unused)}): every "
                    f"keypoint channel starts as in a fresh model, the rest is loaded; name the data's keypoints as "
                    f"the checkpoint does to copy theirs"]
        out = [f"init: copied {len(self.copied)} keypoints by name: {', '.join(self.copied)}{unused}"]
        if self.new:
            out.append(f"init: new keypoints: {', '.join(self.new)} (initialised as in a fresh model)")
        return out


def _source_channels(src_owner: torch.Tensor, tgt_owner: torch.Tensor, src_of: list[int]) -> torch.Tensor:
    """For each target channel, the source channel holding the same part of the same keypoint (the r-th channel of
    keypoint t is the r-th channel of its source keypoint; the r-th shared one the r-th shared one), -1 if new."""
    pick = torch.full_like(tgt_owner, -1)
    for t in tgt_owner.unique().tolist():
        s = t if t < 0 else src_of[t]
        if s is None:
            continue
        tpos, spos = (tgt_owner == t).nonzero().squeeze(1), (src_owner == s).nonzero().squeeze(1)
        if len(tpos) != len(spos):
            raise ValueError(f"keypoint layouts disagree: {len(spos)} channels of keypoint {s}, {len(tpos)} of {t}")
        pick[tpos] = spos
    return pick


def _fits(value: object, target: torch.Tensor, dim: int, src_channels: int, tgt_channels: int) -> bool:
    """Whether ``value`` is the checkpoint's form of ``target`` (same shape but along ``dim``, where each has its
    own keypoint set's channels)."""
    if not isinstance(value, torch.Tensor) or value.dim() != target.dim():
        return False
    shape, own = list(value.shape), list(target.shape)
    if shape[dim] != src_channels or own[dim] != tgt_channels:
        return False
    shape[dim] = own[dim]
    return shape == own


def map_keypoint_channels(state: dict, own: dict, layout: Callable[[int], Layout], source: Sequence[str],
                          target: Sequence[str]) -> tuple[dict, KeypointMatch]:
    """The checkpoint's ``state`` rewritten for a model with keypoint set ``target``: in each tensor with
    per-keypoint channels (``layout(K)``: the model's :meth:`~fcpose.model.fcpose.FCPose.keypoint_channels` for K
    keypoints) the channels of a keypoint both sets name are copied from the file, those of a keypoint only
    ``target`` names are taken from ``own`` (the model's fresh state dict), and the shared channels from the file.
    A tensor of another architecture (its other dimensions differ) is left as the file has it, so the usual shape
    check reports it. Other tensors pass unchanged.

    Args:
        state: The checkpoint's state dict (keypoint set ``source``).
        own: The model's state dict (keypoint set ``target``).
        layout: Keypoint count -> ``{key: (dim, owner)}`` of the model's architecture.
        source: The checkpoint's keypoint names, in channel order.
        target: The model's keypoint names, in channel order.

    Returns:
        (the rewritten state dict, the :class:`KeypointMatch`).
    """
    match = KeypointMatch.of(source, target)
    index = {name: i for i, name in enumerate(source)}
    src_of = [index.get(name) for name in target]
    src_layout, tgt_layout = layout(len(source)), layout(len(target))
    out = dict(state)
    for key, (dim, tgt_owner) in tgt_layout.items():
        value, fresh, src_owner = state.get(key), own.get(key), src_layout[key][1]
        if fresh is None or not _fits(value, fresh, dim, len(src_owner), len(tgt_owner)):
            continue
        pick = _source_channels(src_owner, tgt_owner, src_of)
        copied = (pick >= 0).nonzero().squeeze(1)
        mapped = fresh.detach().clone()
        mapped.index_copy_(dim, copied, value.index_select(dim, pick[copied]).to(mapped.dtype))
        out[key] = mapped
    return out, match

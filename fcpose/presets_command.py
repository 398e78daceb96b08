"""``fcpose presets``: the model presets in a table (size, released weights, how to train), or one as YAML."""

from __future__ import annotations

import sys

import torch
import yaml

from .config import FCPoseConfig, list_presets, load_config, preset_summary, to_dict
from .engine.train_checks import needs_pretrained_backbone
from .model.fcpose import build_model
from .weights.zoo import MODEL_ZOO, cache_dir


def run_presets(name: str | None = None, overrides: list[str] | None = None) -> int:
    """Without ``name``: one line per preset on stdout. With it: that preset's (or YAML file's) full config
    as YAML, ``overrides`` applied. Returns the exit status."""
    if name is not None:
        sys.stdout.write(yaml.safe_dump(to_dict(load_config(name, overrides)), sort_keys=False))
        return 0
    print(f"{'preset':22s} {'params':>7s}  {'test size':10s} {'released weights (--weights)':31s} "
          f"{'to train':17s} description")
    weights = {entry.preset: entry for entry in MODEL_ZOO.values() if entry.preset}
    for preset in list_presets():
        print(_preset_row(preset, load_config(preset), weights.get(preset)))
    print("to train: 'ImageNet weights' = a FrozenBN backbone, which needs --set model.backbone.weights=FILE.pth "
          "(from scratch its norms would stay the identity: add --set model.backbone.norm=GN); 'from scratch "
          "(NORM)' = trains without pretrained weights, with that backbone norm")
    print("fcpose presets NAME prints one in full; licence of the released weights: see the README")
    for entry in (e for e in MODEL_ZOO.values() if e.url is None):
        print(f"bundled with fcpose: --weights {entry.name} ({entry.description})")
    return 0


def _preset_row(name: str, cfg: FCPoseConfig, entry) -> str:
    """The table line of one preset; ``entry``: its model-zoo entry, None without released weights."""
    if entry is None:
        released = "none: train it"
    else:
        where = "cached" if (cache_dir() / entry.filename).is_file() else "download"
        released = f"{entry.name} ({where})"
    size = f"{cfg.input.min_size_test}/{cfg.input.max_size_test}"
    bb = cfg.model.backbone
    train = "ImageNet weights" if needs_pretrained_backbone(cfg) else f"from scratch ({bb.scratch_norm or bb.norm})"
    return (f"{name:22s} {_parameter_count(cfg) / 1e6:6.1f}M  {size:10s} {released:31s} {train:17s} "
            f"{preset_summary(name)}")


def _parameter_count(cfg: FCPoseConfig) -> int:
    """Parameters of the model a config builds, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())

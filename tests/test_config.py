from pathlib import Path

import pytest
from helpers import diff_from_defaults

from fcpose.config import (
    FCPoseConfig,
    dynamic_param_count,
    list_presets,
    load_config,
    parse_overrides,
)
from fcpose.errors import ConfigError


def test_paper_head_has_2737_parameters():
    cfg = FCPoseConfig()
    # (34*32 + 32) + (32*32 + 32) + (32*17 + 17)
    assert cfg.num_dynamic_params == 1120 + 1056 + 561 == 2737


@pytest.mark.parametrize("feat,width,layers,k,expected", [
    (32, 32, 3, 14, (34 * 32 + 32) + (32 * 32 + 32) + (32 * 14 + 14)),
    (16, 32, 3, 17, (18 * 32 + 32) + (32 * 32 + 32) + (32 * 17 + 17)),
    (32, 64, 3, 17, (34 * 64 + 64) + (64 * 64 + 64) + (64 * 17 + 17)),
    (32, 32, 2, 17, (34 * 32 + 32) + (32 * 17 + 17)),
    (32, 32, 4, 17, (34 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 17 + 17)),
    (32, 32, 1, 5, 34 * 5 + 5),
])
def test_dynamic_param_count_other_shapes(feat, width, layers, k, expected):
    cfg = load_config(None, [f"model.keypoint.feat_channels={feat}", f"model.keypoint.head_channels={width}",
                             f"model.keypoint.head_layers={layers}"])
    cfg.keypoints.names = [f"k{i}" for i in range(k)]
    cfg.keypoints.sigmas = [0.05] * k
    cfg.keypoints.skeleton, cfg.keypoints.flip_pairs = [], []
    assert cfg.num_dynamic_params == expected
    assert dynamic_param_count(feat + 2, width, layers, k) == expected


def test_presets_load_and_hold_only_differences():
    names = list_presets()
    for required in ("fcpose_r50_fpn", "fcpose_r101_fpn", "fcpose_dla34_rt", "fcpose_r18_tiny"):
        assert required in names
    assert diff_from_defaults(load_config("fcpose_r50_fpn")) == {"name": "fcpose_r50_fpn"}
    rt = load_config("fcpose_dla34_rt")
    assert rt.model.strides == [8, 16, 32]
    assert rt.input.min_size_test == 512 and rt.input.min_size_train == [128, 736]
    assert load_config("fcpose_r50_fpn").model.strides == [8, 16, 32, 64, 128]
    # Every value written in a preset differs from the default (presets hold differences only).
    from fcpose.config import PRESET_DIR, _read_yaml

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, prefix + k + ".")
            else:
                yield prefix + k
    for name in names:
        written = set(leaves(_read_yaml(PRESET_DIR / f"{name}.yaml")))
        differing = set(leaves(diff_from_defaults(load_config(name))))
        assert written <= differing, f"{name} repeats defaults: {written - differing}"


def test_overrides_and_types():
    cfg = load_config("fcpose_r50_fpn", ["model.backbone.name=resnet18", "solver.steps=[10, 20]",
                                         "test.score_threshold=0.2", "solver.base_lr=1"])
    assert cfg.model.backbone.name == "resnet18"
    assert cfg.solver.steps == [10, 20]
    assert cfg.test.score_threshold == 0.2
    assert isinstance(cfg.solver.base_lr, float)
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize("override,message", [
    ("model.backbone.nam=resnet18", "unknown config key 'model.backbone.nam'"),
    ("nope=1", "unknown config key 'nope'"),
    ("solver.max_iter=abc", "must be an integer"),
    ("solver.steps=5", "must be a list"),
    ("model.keypoint.branch=other", "model.keypoint.branch must be one of"),
    ("novalue", "key=value"),
])
def test_bad_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fcpose_r50_fpn", [override])


def test_unknown_preset_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone:\n    depth: 50\n")
    with pytest.raises(ConfigError, match="model.backbone.depth"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_keypoint_set_validation():
    cfg = FCPoseConfig()
    assert cfg.keypoints.flip_index()[1] == 2 and cfg.keypoints.flip_index()[0] == 0
    cfg.keypoints.sigmas = cfg.keypoints.sigmas[:-1]
    with pytest.raises(ConfigError, match="sigmas"):
        cfg.validate()

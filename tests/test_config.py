"""ArchConfig: YAML round trip and every validation error."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import ArchConfig, ConfigError, SearchSpace, load_zoo, zoo_names


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_yaml_round_trip_is_identical(name, tmp_path):
    cfg = load_zoo(name)
    path = tmp_path / "cfg.yaml"
    cfg.save(path)
    again = ArchConfig.load(path)
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_sampled_config_round_trip(seed):
    cfg = SearchSpace.default().sample(seed)
    assert ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ArchConfig.from_yaml(cfg.to_yaml()).to_yaml() == cfg.to_yaml()


def test_configs_are_frozen_and_hashable():
    cfg = load_zoo("cmt_s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.resolution = 256  # type: ignore[misc]
    assert hash(cfg) == hash(load_zoo("cmt_s"))


def _stage_edit(index: int, **changes):
    def edit(d):
        d["stages"][index].update(changes)
        return d

    return edit


def _top_edit(**changes):
    def edit(d):
        d.update(changes)
        return d

    return edit


INVALID = [
    ("unknown block", _stage_edit(0, block="resnet"), "unknown block type 'resnet'"),
    ("width/heads", _stage_edit(1, width=129), "width 129 is not divisible by heads 2"),
    ("depth 0", _stage_edit(2, depth=0), "depth must be >= 1"),
    ("negative width", _stage_edit(2, width=-8), "width must be >= 1"),
    ("resolution not multiple of 32", _top_edit(resolution=200), "resolution 200 is not a positive multiple of 32"),
    ("kv reduction", _stage_edit(0, kv_reduction=5), "kv_reduction 5 does not divide the stage's 56x56"),
    ("unknown key", _stage_edit(0, colour="red"), "unknown key 'colour'"),
    ("string depth", _stage_edit(0, depth="three"), "depth must be int"),
    ("bool width", _stage_edit(0, width=True), "width must be int"),
    ("heads 0", _stage_edit(3, heads=0), "heads must be >= 1"),
    ("even kernel", _stage_edit(0, lka_kernel=4), "lka_kernel must be a positive odd number"),
    ("bad channel attention", _stage_edit(0, channel_attention="cbam"), "unknown channel_attention 'cbam'"),
    ("bad stem", _top_edit(stem={"kind": "patchify", "channels": 8}), "unknown stem kind 'patchify'"),
    ("bad head", _top_edit(head={"kind": "mlp", "fc_dim": 0, "dropout": 0.0}), "unknown head kind 'mlp'"),
    ("conv head without fc_dim", _top_edit(head={"kind": "conv_bn_act", "fc_dim": 0}), "needs fc_dim >= 1"),
    ("no stages", _top_edit(stages=[]), "'stages' must be a non-empty list"),
    ("missing width", lambda d: (d["stages"][0].pop("width"), d)[1], "missing required key 'width'"),
    ("stride breaks 32", _stage_edit(0, embed_stride=8, embed_kernel=8), "total downsampling 128 must divide 32"),
    ("mlp ratio", _stage_edit(0, mlp_ratio=0.0), "mlp_ratio must be in (0, 16]"),
    ("classes", _top_edit(num_classes=0), "num_classes must be >= 1"),
]


@pytest.mark.parametrize("label,edit,message", INVALID, ids=[i[0] for i in INVALID])
def test_validation_errors_name_the_problem(label, edit, message):
    data = edit(load_zoo("cmt_s").to_dict())
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("stages: [\n", "not valid YAML"),
        ("", "empty config"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("!!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
        ("stages: 3\n", "'stages' must be a non-empty list"),
    ],
)
def test_yaml_errors(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        ArchConfig.load(path)
    assert message in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        ArchConfig.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        ArchConfig.load(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(512)) + b"\xff\xfe")
    with pytest.raises(ConfigError, match="binary|not valid YAML"):
        ArchConfig.load(binary)


def test_feature_sizes():
    assert load_zoo("cmt_s").feature_sizes() == [56, 28, 14, 7]
    assert load_zoo("van_b0").feature_sizes() == [56, 28, 14, 7]
    assert load_zoo("cmt_ti").feature_sizes(64) == [16, 8, 4, 2]

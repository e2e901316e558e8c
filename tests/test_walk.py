"""The one walk over a network's parts (search_space/walk.py), against hand-worked expectations."""

from __future__ import annotations

import dataclasses

import pytest

from search_space import SearchSpace, StageConfig, analytic_report, build_model
from search_space.walk import drop_path_schedule, network_parts


def test_parts_in_forward_order_with_sizes(tiny_cfg):
    # tiny: conv3 stem (stride 2), four 2x2/2 embeddings; a VAN, CMT, ACmix, CMT block; 64 px
    parts = list(network_parts(tiny_cfg, 128))
    assert [p.name for p in parts] == [
        "stem",
        "stage1.embed", "stage1.block0",
        "stage2.embed", "stage2.shared", "stage2.block0",
        "stage3.embed", "stage3.block0",
        "stage4.embed", "stage4.shared", "stage4.block0",
        "head",
    ]  # fmt: skip
    by_name = {p.name: p for p in parts}
    assert (by_name["stem"].in_size, by_name["stem"].size, by_name["stem"].config_size) == (128, 64, 32)
    # 128 px: 64 after the stem, then 32, 16, 8, 4; at the config's 64 px: 16, 8, 4, 2
    assert [by_name[f"stage{i}.embed"].size for i in range(1, 5)] == [32, 16, 8, 4]
    assert [by_name[f"stage{i}.embed"].config_size for i in range(1, 5)] == [16, 8, 4, 2]
    assert [(by_name[f"stage{i}.embed"].in_channels, by_name[f"stage{i}.embed"].out_channels)
            for i in range(1, 5)] == [(8, 16), (16, 16), (16, 32), (32, 32)]  # fmt: skip
    assert by_name["stage2.shared"].config_size == 8  # CMT's bias is sized for the config
    head = by_name["head"]
    assert (head.in_channels, head.out_channels, head.in_size) == (32, 10, 4)


def test_out_norm_only_where_configured():
    cfg = SearchSpace.default().sample(3)
    van_style = cfg.replace(stages=tuple(dataclasses.replace(s, out_norm="ln") for s in cfg.stages))
    names = [p.name for p in network_parts(van_style)]
    assert [n for n in names if n.endswith("out_norm")] == [f"stage{i}.out_norm" for i in range(1, 5)]
    assert not [n for n in (p.name for p in network_parts(cfg.replace(stages=tuple(
        dataclasses.replace(s, out_norm="none") for s in cfg.stages)))) if n.endswith("out_norm")]  # fmt: skip


def test_build_and_count_follow_the_walk(tiny_cfg):
    model = build_model(tiny_cfg)
    assert [len(stage.blocks) for stage in model.stages] == [s.depth for s in tiny_cfg.stages]
    assert [stage.shared is not None for stage in model.stages] == [False, True, False, True]
    # the analytic report sums the walk's parts per stage
    walked: dict[str, int] = {}
    for part in network_parts(tiny_cfg):
        walked[part.group] = walked.get(part.group, 0) + part.cost().params
    assert walked == {name: cost.params for name, cost in analytic_report(tiny_cfg).parts}


class _WithDropPath:
    """Just what the schedule reads: stages and a stochastic-depth rate."""

    def __init__(self, depths: tuple[int, ...], rate: float) -> None:
        self.stages = tuple(StageConfig("van", d, 16) for d in depths)
        self.drop_path_rate = rate


@pytest.mark.parametrize(
    ("depths", "rate", "expected"),
    [
        ((1, 1, 1, 1), 0.3, [0.0, 0.1, 0.2, 0.3]),  # 0.3 * i / 3
        ((2, 1, 1, 1), 0.2, [0.0, 0.05, 0.1, 0.15, 0.2]),  # 0.2 * i / 4
        ((1,), 0.5, [0.0]),  # a single block: no drop
    ],
)
def test_drop_path_schedule_is_linear_over_all_blocks(depths, rate, expected):
    assert drop_path_schedule(_WithDropPath(depths, rate)) == pytest.approx(expected)  # type: ignore[arg-type]


def test_no_drop_path_at_rate_zero(tiny_cfg):
    assert tiny_cfg.drop_path_rate == 0.0
    assert drop_path_schedule(tiny_cfg) == [0.0] * sum(s.depth for s in tiny_cfg.stages)
    assert {p.drop_path for p in network_parts(tiny_cfg) if p.kind == "block"} == {0.0}

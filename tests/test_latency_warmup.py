"""The latency table is filled before a search's trials: after the warm-up, no candidate the space
can produce needs a new measurement."""

from __future__ import annotations

import random
from pathlib import Path

from fault_helpers import write_space

from train_proxy.latency_warmup import covering_networks, warm_up
from search_space import SearchSpace
from train_proxy.latency_table import LatencyPredictor


def _predictor(cache: Path) -> LatencyPredictor:
    # one timed run per entry: the test counts measurements, it does not need good timings
    return LatencyPredictor("cpu", threads=1, batch_size=1, cache_dir=cache, warmup=0, repeats=1, clock="cpu")


def test_covering_networks_vary_every_choice_of_a_stage(tmp_path: Path) -> None:
    space = SearchSpace.load(write_space(tmp_path / "space.yaml"))
    nets = list(covering_networks(space))
    # stage 1 of the tiny space: van or cmt, width 16 or 24, in either family (cmt: a stem)
    first_stage_options = {(n.stages[0].block, n.stages[0].width, n.stem.kind) for n in nets}
    assert first_stage_options == {(b, w, stem) for b in ("van", "cmt") for w in (16, 24) for stem in ("conv3", "none")}
    assert {n.stages[2].block for n in nets} == {"van", "cmt", "acmix"}
    assert {(n.stages[2].width, n.stages[3].width) for n in nets} >= {(32, 32), (48, 64)}
    assert all(s.depth == 2 for n in nets for s in n.stages[:3])  # depths at their largest


def test_no_measurement_after_the_warm_up(tmp_path: Path) -> None:
    space = SearchSpace.load(write_space(tmp_path / "space.yaml"))
    predictor = _predictor(tmp_path / "cache")
    lines: list[str] = []
    measured = warm_up(predictor, space, lines.append)
    assert measured > 0 and predictor.measurements == measured
    assert "timing the blocks of the space before the trials start" in lines[0]
    rng = random.Random(0)
    for _ in range(300):  # what a search would sample, any depth, any mix of blocks and families
        predictor.predict(space.sample(rng))
    assert predictor.measurements == measured, "a candidate needed a block the warm-up did not time"
    # the table on disk is complete too: a new process (a resumed search) measures nothing
    again = _predictor(tmp_path / "cache")
    assert warm_up(again, space, lines.append) == 0 and "already timed" in lines[-1]

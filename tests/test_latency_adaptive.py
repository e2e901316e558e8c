"""Adaptive latency timing (issue 28): the median-known rule by hand, early stops of warm-up and
timing on a scripted clock, and a table entry whose layout probe is its first warm-up run."""

from __future__ import annotations

import json

import pytest
import torch

from train_proxy import latency
from train_proxy.latency import median_known, time_callable
from train_proxy.latency_table import LatencyPredictor, Part


def test_median_known_by_hand():
    # 5 runs: the 95 % interval of the median spans ranks 0..4 (2.5 -+ 0.98 sqrt 5), all of them
    assert median_known([10.0, 10.2, 9.9, 10.1, 10.4])  # 9.9..10.4 around 10.1: within +-5 %
    assert not median_known([10.0, 10.2, 9.9, 10.1, 11.2])  # 9.9..11.2: 1.3 > 2 x 5 % of 10.1
    assert not median_known([10.0] * 4)  # fewer than MIN_REPEATS
    # 12 runs: ranks 6 -+ 3.39 -> 2..10 of the sorted values: one outlier at each end is left out
    assert median_known([1.0, 10.0, 10.1, 10.0, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0, 10.0, 30.0])


class ScriptedClock:
    """perf_counter that advances by the next scripted duration (ms) on every call of ``work``."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.durations[min(self.calls, len(self.durations) - 1)] / 1000.0
        self.calls += 1


def test_adaptive_timing_stops_once_warm_and_once_the_median_is_known(monkeypatch):
    # warm-up: 50 (first), 20 (60 % off), 19 (5 % off: warm) -> 3 warm-up runs of at most 5;
    # then steady 10 ms runs: the median is known after MIN_REPEATS
    clock = ScriptedClock([50.0, 20.0, 19.0] + [10.0] * 40)
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    times = time_callable(clock.work, dev=torch.device("cpu"), warmup=5, repeats=20, adaptive=True)
    assert clock.calls == 3 + latency.MIN_REPEATS and times == pytest.approx([10.0] * latency.MIN_REPEATS)
    # without adaptive: every run
    clock = ScriptedClock([50.0, 20.0, 19.0] + [10.0] * 40)
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    assert len(time_callable(clock.work, dev=torch.device("cpu"), warmup=5, repeats=20)) == 20 and clock.calls == 25


def test_noisy_runs_time_up_to_the_most_repeats(monkeypatch):
    clock = ScriptedClock([10.0, 10.0] + [10.0, 20.0] * 20)  # alternating: the median is never pinned down
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    times = time_callable(clock.work, dev=torch.device("cpu"), warmup=5, repeats=12, adaptive=True)
    assert len(times) == 12


def test_a_table_entry_reads_its_layout_in_its_first_warm_up_run(tmp_path, monkeypatch):
    seen = {}

    def fake_time_module(module, x, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        return [1.0, 2.0, 3.0]

    monkeypatch.setattr("train_proxy.latency_table.time_module", fake_time_module)
    predictor = LatencyPredictor(cache_dir=tmp_path, warmup=5, repeats=20)
    entry = {"part": "out_norm", "kind": "ln", "width": 8, "size": 4}
    record = predictor.measure_entry(Part("stage1.out_norm", entry, 1), "nchw")
    assert seen["warmup"] == 4 and seen["repeats"] == 20 and seen["adaptive"] is True
    assert record == {"ms": 2.0, "out": "nhwc"}  # LayerNorm2d's permute hands on channels_last strides
    predictor._save()
    timing = json.loads(predictor.path.read_text())["timing"]  # the table says how it was timed
    assert timing == {"warmup": 5, "repeats": 20, "statistic": "median", "adaptive": True, "min_repeats": 5,
                      "median_tolerance": 0.05}  # fmt: skip


@pytest.mark.parametrize("adaptive", [True, False])
def test_fixed_timing_is_still_available(tmp_path, monkeypatch, adaptive):
    seen = {}
    monkeypatch.setattr("train_proxy.latency_table.time_module", lambda m, x, **kw: seen.update(kw) or [1.0])
    predictor = LatencyPredictor(cache_dir=tmp_path, adaptive=adaptive)
    predictor.measure_entry(Part("stage1.out_norm", {"part": "out_norm", "kind": "ln", "width": 8, "size": 4}, 1), "nchw")
    assert seen["adaptive"] is adaptive and ("adaptive" in predictor.table_info()) is adaptive

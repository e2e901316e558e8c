"""Latency measurement, the per-block lookup-table predictor and `nas latency`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from nas.cli import main
from search_space.errors import UserError
from tiny_config import make_tiny_cfg
from train_proxy.latency import measure_latency, percentile
from train_proxy.latency_table import (
    CACHE_ENV,
    LatencyPredictor,
    block_knobs,
    default_cache_dir,
    layout_of,
    network_parts,
)

RES = 32  # tests time networks at 32 px: fast, still every part of the network runs
FAST = {"warmup": 1, "repeats": 3}


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("latency-table")


@pytest.fixture(scope="module")
def cfg():
    return make_tiny_cfg()  # the conftest's tiny_cfg, built once for the module


@pytest.fixture(scope="module")
def predictor(table_dir, cfg):
    p = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=table_dir, **FAST)
    p.predict(cfg, RES)
    return p


# -- measurement ------------------------------------------------------------------------------


def test_measure_latency_fields_and_sanity(cfg):
    torch.set_num_threads(2)
    result = measure_latency(cfg, resolution=RES, threads=1, warmup=1, repeats=5)
    assert torch.get_num_threads() == 2  # restored
    assert result.repeats == 5 and result.warmup == 1
    assert result.batch_size == 1 and result.threads == 1
    assert result.device == "cpu" and result.device_name
    assert result.resolution == RES
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert set(result.to_dict()) >= {"median_ms", "p90_ms", "repeats", "batch_size", "threads", "device", "resolution"}


def test_measure_latency_batch_size_and_default_resolution(cfg):
    small = replace(cfg, resolution=32)
    result = measure_latency(small, batch_size=2, **FAST)
    assert result.batch_size == 2 and result.resolution == 32


def test_threads_restored_when_the_model_fails():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Broken(), resolution=32, threads=1, **FAST)
    assert torch.get_num_threads() == 2


def test_measure_plain_module_keeps_its_mode():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    result = measure_latency(module, resolution=32, **FAST)
    assert result.median_ms > 0
    assert module.training  # measured in eval mode, handed back as it was
    with pytest.raises(UserError, match="resolution"):
        measure_latency(nn.Identity(), **FAST)


def test_bad_arguments_are_user_errors(cfg):
    with pytest.raises(UserError, match="repeats"):
        measure_latency(cfg, resolution=RES, repeats=0)
    with pytest.raises(UserError, match="batch size"):
        measure_latency(cfg, resolution=RES, batch_size=0)
    with pytest.raises(UserError, match="unknown device"):
        measure_latency(cfg, resolution=RES, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_unavailable_is_a_user_error(cfg):
    with pytest.raises(UserError, match="CUDA is not available"):
        measure_latency(cfg, device="cuda")


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


# -- predictor --------------------------------------------------------------------------------


def test_cache_round_trip_reads_without_measuring(predictor, table_dir, cfg):
    # every part once, and a repeated part once per input layout it meets (at most twice)
    parts = network_parts(cfg, RES)
    assert len(parts) <= predictor.measurements <= 2 * len(parts)
    assert not predictor.missing(cfg, RES)
    assert predictor.path.exists() and predictor.path.parent == table_dir
    data = json.loads(predictor.path.read_text())
    assert data["key"]["threads"] == 1 and data["key"]["batch_size"] == 1 and data["key"]["torch"]
    assert len(data["entries"]) == len(predictor)

    again = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=table_dir, **FAST)
    assert again.predict(cfg, RES) == predictor.predict(cfg, RES)
    assert again.measurements == 0


def test_other_device_key_gets_its_own_table(predictor, table_dir, cfg):
    other = LatencyPredictor.for_device("cpu", threads=1, batch_size=2, cache_dir=table_dir, **FAST)
    assert other.path != predictor.path
    assert len(other) == 0 and other.missing(cfg, RES)


def test_prediction_sums_block_entries_times_depth(predictor, cfg):
    deeper = replace(cfg, stages=(cfg.stages[0], replace(cfg.stages[1], depth=3), *cfg.stages[2:]))
    before = predictor.measurements
    shallow_ms, deep_ms = predictor.predict(cfg, RES), predictor.predict(deeper, RES)
    assert predictor.measurements == before  # depth reuses the same block entry
    # stage 2 runs after a LayerNorm embed, so all its blocks see one layout: one entry, times depth
    block = next(p for p in network_parts(cfg, RES) if p.name == "stage2.block")
    entry = predictor.entries[block.key("nhwc")]
    assert entry["out"] == "nhwc"
    assert deep_ms - shallow_ms == pytest.approx(2 * entry["ms"])
    assert deep_ms > shallow_ms
    rows = dict(predictor.breakdown(cfg, RES))
    assert sum(rows.values()) == pytest.approx(shallow_ms)
    assert rows["stage2.block"] == pytest.approx(entry["ms"])
    assert dict(predictor.breakdown(deeper, RES))["stage2.block"] == pytest.approx(3 * entry["ms"])
    assert set(rows) >= {"stem", "stage1.embed", "stage1.block", "head", "overhead"}


def test_only_new_blocks_are_measured(predictor, cfg):
    wider = replace(cfg, stages=(*cfg.stages[:3], replace(cfg.stages[3], width=48)))
    # a wider last stage changes its patch embed (output channels), its block and the head's input
    assert {json.loads(k)["part"] for k in predictor.missing(wider, RES)} == {"embed", "block", "head"}
    assert len(predictor.missing(wider, RES)) == 3
    before = predictor.measurements
    predictor.predict(wider, RES)
    assert predictor.measurements - before == 3
    assert not predictor.missing(wider, RES)


def test_entries_follow_the_memory_layout(predictor, cfg):
    """A LayerNorm hands on channels_last strides; the walk keys later parts by that layout."""
    import torch as t

    x = t.randn(1, 8, 4, 4)
    assert layout_of(x) == "nchw" and layout_of(x.contiguous(memory_format=t.channels_last)) == "nhwc"
    parts = {p.name: p for p in network_parts(cfg, RES)}
    assert parts["stage2.embed"].key("nchw") != parts["stage2.embed"].key("nhwc")
    embed = (
        predictor.entries.get(parts["stage2.embed"].key("nchw")) or predictor.entries[parts["stage2.embed"].key("nhwc")]
    )
    assert embed["out"] == "nhwc"  # the CMT-style 2x2 embed ends in a LayerNorm
    assert parts["stage3.block"].key("nhwc") in predictor.entries


def test_unused_knobs_share_an_entry(cfg):
    van = cfg.stages[0]
    assert block_knobs(van) == block_knobs(replace(van, heads=8, kv_reduction=4, attn_kernel=5))
    assert block_knobs(van) != block_knobs(replace(van, lka_kernel=3))
    cmt = cfg.stages[1]
    assert block_knobs(cmt) != block_knobs(replace(cmt, kv_reduction=4))


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "latency"
    p = LatencyPredictor.for_device("cpu", **FAST)
    assert p.path.parent == tmp_path / "latency"


def test_corrupt_cache_is_rebuilt(predictor, tmp_path, cfg):
    corrupt = LatencyPredictor.for_device("cpu", cache_dir=tmp_path, **FAST)
    corrupt.path.parent.mkdir(parents=True, exist_ok=True)
    corrupt.path.write_text("{not json")
    fresh = LatencyPredictor.for_device("cpu", cache_dir=tmp_path, **FAST)
    assert len(fresh) == 0
    assert fresh.predict(cfg, RES) > 0
    assert json.loads(fresh.path.read_text())["entries"]


# -- CLI ----------------------------------------------------------------------------------


def test_cli_latency_json(tmp_path, capsys, cfg, table_dir, predictor):
    path = tmp_path / "tiny.yaml"
    cfg.save(path)
    code = main(["latency", str(path), "--resolution", "32", "--repeats", "3", "--warmup", "1",
                 "--predict", "--cache-dir", str(table_dir), "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("latency_ms", "p90_ms", "batch_size", "threads", "device", "resolution", "predicted_ms"):
        assert key in out
    assert out["resolution"] == 32 and out["batch_size"] == 1 and out["threads"] == 1 and out["device"] == "cpu"
    assert out["latency_ms"] > 0 and out["predicted_ms"] > 0
    assert out["entries_measured"] == 0  # the table of the module fixture already holds every entry


def test_cli_latency_plain_text(tmp_path, capsys, cfg):
    path = tmp_path / "tiny.yaml"
    cfg.save(path)
    assert main(["latency", str(path), "--resolution", "32", "--repeats", "2", "--warmup", "0",
                 "--latency-batch-size", "2"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "median" in text and "batch 2" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cli_cuda_unavailable_exits_2(capsys):
    assert main(["latency", "van_b0", "--latency-device", "cuda", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0]


def exit_code(argv: list[str]) -> int:
    """The CLI's exit status, whether argparse exits or the command returns."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["latency", "no_such_model"], "unknown model"),
        (["latency", "van_b0", "--repeats", "0"], "--repeats"),
        (["latency", "van_b0", "--resolution", "100"], "multiple of 32"),
        (["latency", "van_b0", "--threads", "abc"], "--threads"),
        (["latency", "van_b0", "--latency-device", "tpu"], "unknown device"),
    ],
)
def test_cli_bad_input_exits_2(argv, message, capsys):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]

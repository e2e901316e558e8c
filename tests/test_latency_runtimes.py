"""Latency where the model will run (issue 16): TorchScript and ONNX Runtime timing, portable
per-block tables built on a target and used by a search on another machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_helpers import write_space

from search_space import build_model
from train_proxy.runtimes import prepare

NAS = [sys.executable, "-m", "nas.cli"]


def nas(*argv: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYBRID_NAS_FAULT")}
    return subprocess.run([*NAS, *map(str, argv)], capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_a_runtime_runs_the_same_network(tiny_cfg, runtime):
    """What is timed is the network: the runtime's output equals eager PyTorch's."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ready = prepare(runtime, model, x, torch.device("cpu"), threads=1)
    with torch.no_grad():
        want = model(x)
        got = ready.output()
    torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("runtime", ["torch", "torchscript", "onnxruntime"])
def test_nas_latency_reports_its_runtime(tmp_path, tiny_cfg, runtime):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg.to_yaml())
    done = nas("latency", config, "--runtime", runtime, "--threads", "1", "--repeats", "5", "--warmup", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["runtime"] == runtime and out["latency_ms"] > 0 and out["p90_ms"] >= out["latency_ms"]


def test_unknown_runtime_is_one_line():
    done = nas("latency", "van_b0", "--runtime", "tflite")
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: unknown runtime 'tflite' (choose from torch, torchscript, onnxruntime)"
    )


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("latency_table")
    space = write_space(root / "space.yaml")
    table = root / "table.json"
    done = nas("latency-table", "build", "--runtime", "onnxruntime", "--space", space, "--out", table,
               "--repeats", "3", "--warmup", "1", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return space, table


def test_a_built_table_records_how_it_was_measured(tiny_table):
    space, table = tiny_table
    data = json.loads(table.read_text())
    key = data["key"]
    assert key["runtime"] == "onnxruntime" and key["device"] == "cpu" and key["threads"] == 1
    assert key["batch_size"] == 1 and key["runtime_version"].startswith("onnxruntime ")
    # the most runs, stopped early once the median is known (train_proxy.latency.median_known)
    assert data["timing"] == {"warmup": 1, "repeats": 3, "statistic": "median", "adaptive": True, "min_repeats": 5,
                              "median_tolerance": 0.05}  # fmt: skip
    assert data["resolution"] == 64 and data["versions"]["torch"] == torch.__version__
    assert all(e["ms"] > 0 and e["out"] == "nchw" for e in data["entries"].values())  # ONNX Runtime: no strides
    check = nas("latency-table", "check", table, "--space", space)
    assert check.returncode == 0, check.stderr


def test_building_again_continues_and_other_settings_are_refused(tiny_table, tmp_path):
    space, table = tiny_table
    partial = tmp_path / "partial.json"
    data = json.loads(table.read_text())
    dropped = sorted(data["entries"])[:7]
    for key in dropped:
        del data["entries"][key]
    partial.write_text(json.dumps(data))
    again = nas("latency-table", "build", "--runtime", "onnxruntime", "--space", space, "--out", partial,
                "--repeats", "3", "--warmup", "1", "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["measured_now"] == 7  # only what was missing
    assert set(json.loads(partial.read_text())["entries"]) == set(json.loads(table.read_text())["entries"])

    other = nas("latency-table", "build", "--runtime", "onnxruntime", "--threads", "2", "--space", space, "--out",
                partial)  # fmt: skip
    assert other.returncode == 2 and "measured with other settings" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_search_predicts_with_the_target_table(tiny_table, tmp_path):
    space, table = tiny_table
    run = tmp_path / "run"
    done = nas("search", "--budget", "1G", "--latency-ms", "30", "--latency-table", table, "--space", space,
               "--trials", "2", "--epochs", "1", "--data", "digits", "--data-fraction", "0.2", "--concurrency", "1",
               "--threads", "1", "--out", run)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings["latency_table"] == str(table.resolve())
    entries = json.loads(table.read_text())["entries"]
    smallest = min(e["ms"] for e in entries.values())
    for trial in (run / "trials").iterdir():
        result = json.loads((trial / "result.json").read_text())
        if result.get("trained"):
            assert result["latency_ms_predicted"] > smallest  # a sum of several table entries
    assert "latency table" not in done.stderr  # nothing was timed on this machine


@pytest.mark.parametrize("damage", ["missing_entry", "malformed", "not_json", "wrong_format"])
def test_a_table_that_does_not_fit_is_refused_before_anything(tiny_table, tmp_path, damage):
    space, table = tiny_table
    data = json.loads(table.read_text())
    bad = tmp_path / "bad.json"
    if damage == "missing_entry":
        gone = sorted(data["entries"])[3]
        del data["entries"][gone]
        bad.write_text(json.dumps(data))
        needle = "no entry for part=" + json.loads(gone)["part"]
    elif damage == "malformed":
        data["entries"][next(iter(data["entries"]))] = {"ms": "fast"}
        bad.write_text(json.dumps(data))
        needle = "malformed latency table"
    elif damage == "not_json":
        bad.write_text("{nope")
        needle = "not a latency table"
    else:
        data["format"] = 99
        bad.write_text(json.dumps(data))
        needle = "not a latency table of format"
    run = tmp_path / "run"
    done = nas("search", "--budget", "1G", "--latency-ms", "30", "--latency-table", bad, "--space", space,
               "--trials", "1", "--epochs", "1", "--data", "digits", "--out", run)  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], done.stderr
    assert not run.exists()


def test_calibration_is_the_non_negative_least_squares_fit_of_its_points(tiny_table, tmp_path):
    """`--calibrate N` measures N whole networks and stores them with one factor per block family:
    the non-negative least-squares solution (checked with scipy's NNLS, an independent solver),
    which then scales each family's share of a prediction."""
    import numpy as np
    from scipy.optimize import nnls

    from search_space import SearchSpace
    from train_proxy.latency_table import LatencyPredictor

    space, table = tiny_table
    calibrated = tmp_path / "calibrated.json"
    uncalibrated = json.loads(table.read_text())
    uncalibrated.update(calibration=[], correction=None)  # the fixture's build calibrated with the default 12
    calibrated.write_text(json.dumps(uncalibrated))
    done = nas("latency-table", "build", "--runtime", "onnxruntime", "--space", space, "--out", calibrated,
               "--repeats", "3", "--warmup", "1", "--calibrate", "6", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(calibrated.read_text())
    points, correction = data["calibration"], data["correction"]
    assert len(points) == 6 and all(p["measured_ms"] > 0 for p in points)
    groups = sorted(correction)
    a = np.array([[p["features"].get(g, 0.0) for g in groups] for p in points])
    b = np.array([p["measured_ms"] for p in points])
    want, _ = nnls(a, b)
    for g, w in zip(groups, want):
        if a[:, groups.index(g)].any() and w > 0:
            assert correction[g] == pytest.approx(w, rel=1e-6, abs=1e-9)

    predictor = LatencyPredictor.from_table(calibrated)
    cfg = SearchSpace.load(space).sample(3)
    features = predictor.features(cfg)
    assert sum(features.values()) == pytest.approx(predictor.predict_raw(cfg))
    assert predictor.predict(cfg) == pytest.approx(sum(correction.get(g, 1.0) * ms for g, ms in features.items()))

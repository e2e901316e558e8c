"""`nas finalize`: full trainings of a real search's trials into RUN_DIR/final/<trial>/, resumable,
Ray-parallel, and the report's proxy-vs-final comparison."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_fixture import make_real_run
from safetensors.torch import load_file

from results.report import proxy_final_agreement
from results.run import load_run
from search_space import ArchConfig, build_model

NAS = [sys.executable, "-m", "nas.cli"]


def nas(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([*NAS, *map(str, argv)], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_real_run(tmp_path_factory.mktemp("finalize"))


def test_kendall_tau_worked_by_hand():
    # x rises through all three; y rises 1->2 and 1->3 but falls 2->3: 2 concordant, 1 discordant
    assert proxy_final_agreement([(1, 0.5, 0.6), (2, 0.6, 0.7), (3, 0.7, 0.65)]) == "Kendall tau +0.33 over 3 trials"
    assert "too few" in proxy_final_agreement([(1, 0.5, 0.6), (2, 0.6, 0.7)])


@pytest.mark.slow
def test_finalize_trains_in_parallel_keeps_results_and_the_report_compares(run_dir):
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    run = load_run(run_dir)
    complete = [t for t in run.eligible()]
    assert len(complete) >= 2
    done = nas("finalize", run_dir, "--top", "2", "--epochs", "1", "--concurrency", "2", "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert "2 at a time" in done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 2
    for row in rows:
        d = Path(row["dir"])
        assert d == run_dir / "final" / f"{row['trial']:05d}"
        result = json.loads((d / "result.json").read_text())
        assert result["status"] == "ok" and result["val_acc"] == row["final_val_acc"]
        assert result["width_multiplier"] == 1.0 and result["data_fraction"] == 1.0  # a full training
        # the weights fit the trial's own architecture (recorded by the search), with the data's classes
        trial_cfg = ArchConfig.load(run_dir / "trials" / f"{row['trial']:05d}" / "config.yaml")
        built = ArchConfig.load(d / "config.yaml")
        assert built.stages == trial_cfg.stages and built.stem == trial_cfg.stem
        build_model(built).load_state_dict(load_file(d / "model.safetensors"))
        assert row["proxy_val_acc"] == run.trial(row["trial"]).val_acc

    report = nas("report", run_dir)
    assert report.returncode == 0, report.stderr
    page = (run_dir / "report" / "report.html").read_text()
    assert "Proxy accuracy vs full training" in page and "too few for a rank correlation" in page
    assert (run_dir / "report" / "proxy_vs_final.png").is_file()

    # again: finished trainings are kept as they are
    before = {r["trial"]: (Path(r["dir"]) / "model.safetensors").stat().st_mtime_ns for r in rows}
    again = nas("finalize", run_dir, "--top", "2", "--epochs", "1")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already finalised") == 2
    assert before == {r["trial"]: (Path(r["dir"]) / "model.safetensors").stat().st_mtime_ns for r in rows}

    # other settings for the same trials: refused in one line, nothing touched
    other = nas("finalize", run_dir, "--top", "2", "--epochs", "3")
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "already being finalised" in other.stderr


@pytest.mark.slow
def test_finalize_continues_a_killed_training(run_dir):
    number = max(load_run(run_dir).eligible(), key=lambda t: t.number).number
    d = run_dir / "final" / f"{number:05d}"
    shutil.rmtree(d, ignore_errors=True)
    proc = subprocess.Popen([*NAS, "finalize", str(run_dir), "--trial", str(number), "--epochs", "3", "--seed", "1",
                             "--concurrency", "1", "--threads", "1", "--batch-size", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    history = d / "history.json"
    while proc.poll() is None and time.monotonic() < deadline:
        if history.exists() and json.loads(history.read_text() or "[]"):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads(history.read_text())
    assert len(first) < 3 and not (d / "result.json").exists()
    state = torch.load(d / "training_state.pt", weights_only=True)
    assert state["epoch"] == len(first)

    resumed = nas("finalize", run_dir, "--trial", number, "--epochs", "3", "--seed", "1", "--concurrency", "1",
                  "--threads", "1", "--batch-size", "8")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(history.read_text())
    assert len(final) == 3 and final[: len(first)] == first  # kept epochs untouched, the rest trained
    assert json.loads((d / "result.json").read_text())["epochs"] == 3

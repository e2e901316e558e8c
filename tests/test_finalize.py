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


def test_nas_compare_says_in_one_line_when_the_runs_proxies_differ(tmp_path, capsys):
    from nas.cli import main
    from test_results import make_run

    a, b = make_run(tmp_path, "a", n=8), make_run(tmp_path, "b", n=8, seed=1)
    assert main(["compare", str(a), str(b)]) == 0
    assert "note:" not in capsys.readouterr().out  # same data and proxy: nothing to say
    meta = json.loads((b / "run.json").read_text())
    meta["settings"].update(data="fashion-mnist", epochs=1)  # as a run searched with other settings records it
    (b / "run.json").write_text(json.dumps(meta))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("note:")]
    assert notes == ["note: the two runs mix data or training settings (data digits vs fashion-mnist; epochs 3 vs 1): "
                     "their accuracies are not measured on the same terms"]  # fmt: skip
    assert out[0] == notes[0]  # before the numbers it qualifies
    assert main(["compare", str(a), str(b), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["proxy_differences"] == ["data digits vs fashion-mnist", "epochs 3 vs 1"] and row["notice"] == notes[0]


@pytest.mark.slow
def test_finalize_small_with_data_fraction_and_width_and_the_report_says_they_mix(run_dir):
    """--data-fraction and --proxy-width make a final training small (as nas train's do); finals of
    different widths side by side are one line of the report."""
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    first, second = sorted(t.number for t in load_run(run_dir).eligible())[:2]
    small = nas("finalize", run_dir, "--trial", first, "--epochs", "1", "--data-fraction", "0.25", "--proxy-width",
                "0.5", "--concurrency", "1", "--threads", "1", "--json")  # fmt: skip
    assert small.returncode == 0, small.stderr
    assert "width x0.5, data fraction 0.25" in small.stderr
    result = json.loads((run_dir / "final" / f"{first:05d}" / "result.json").read_text())
    assert (result["width_multiplier"], result["data_fraction"], result["epochs"]) == (0.5, 0.25, 1)
    # digits: 1,438 training images (a stratified 80 %); a quarter of each class, about 360
    assert abs(result["n_train"] - 0.25 * 1438) <= 10
    # the trained network is the trial's at half its widths
    built = ArchConfig.load(run_dir / "final" / f"{first:05d}" / "config.yaml")
    trial = ArchConfig.load(run_dir / "trials" / f"{first:05d}" / "config.yaml")
    assert all(b.width < t.width for b, t in zip(built.stages, trial.stages))
    other = nas("finalize", run_dir, "--trial", second, "--epochs", "1", "--data-fraction", "0.25", "--concurrency", "1",
                "--threads", "1")  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert nas("report", run_dir).returncode == 0
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("note: the full trainings mix data or training settings (width 0.5 vs 1)") == 1

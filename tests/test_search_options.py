"""Real searches with the options that change what Optuna is told: a params limit, a latency limit
and objective, the NSGA-II sampler, and accuracy alone.

Two tiny searches (the tiny space at 64 px, 2 trials of 1 epoch on digits) cover them:

* ``--params 100K --latency-ms 1000 --objectives acc,macs,latency --sampler nsga2``: every
  constraint recorded in the study is the relative violation ``value / limit - 1``, recomputed
  here from the trial's own MACs, params and predicted latency; candidates over the params limit
  (about half of the tiny space) are never trained and say why; the latency table is filled
  before the trials and not one entry is added during the search; three directions are recorded.
* ``--objectives acc``: a single-objective study whose trained trials carry one value, their
  accuracy, and a front of the best trial.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import TINY_BUDGET, search_args, write_space

from search_space.units import format_count, parse_count, parse_macs

PARAMS, LATENCY_MS = "100K", 1000.0


def _search(tmp_path: Path, name: str, *extra: str, cache: Path) -> tuple[Path, subprocess.CompletedProcess]:
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / name
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYBRID_NAS_CACHE=str(cache))
    argv = search_args(run, space, trials=2, epochs=1, data_fraction=0.15, extra=extra)
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *argv], capture_output=True, text=True, timeout=600,
                          env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def _study(run: Path):  # type: ignore[no-untyped-def]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(run / "study.journal"))))


@pytest.mark.slow
def test_params_latency_nsga2_search(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run, proc = _search(tmp_path, "run", "--params", PARAMS, "--latency-ms", str(LATENCY_MS),
                        "--objectives", "acc,macs,latency", "--sampler", "nsga2", cache=cache)  # fmt: skip
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings["objectives"] == ["acc", "macs", "latency"] and settings["sampler"] == "nsga2"
    assert settings["data"] == "digits" and settings["max_params"] == 100_000

    study = _study(run)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    budget, limit = parse_macs(TINY_BUDGET), parse_count(PARAMS)
    checked = infeasible = 0
    for t in study.trials:
        if "macs" not in t.user_attrs:
            continue
        a = t.user_attrs
        assert set(t.constraints) == {"macs", "params", "latency"}
        assert t.constraints["macs"] == pytest.approx(a["macs"] / budget - 1, rel=1e-12)
        assert t.constraints["params"] == pytest.approx(a["params"] / limit - 1, rel=1e-12)
        assert t.constraints["latency"] == pytest.approx(a["latency_ms_predicted"] / LATENCY_MS - 1, rel=1e-12)
        assert -1 < t.constraints["macs"] <= 0  # the tiny budget admits every architecture
        checked += 1
        if a["params"] > limit:
            infeasible += 1
            assert a["status"] == "infeasible" and a["trained"] is False
            assert a["failure_reason"] == f"params {format_count(a['params'])} > limit {format_count(limit)}"
        elif a.get("status") in ("complete", "pruned"):
            assert len(t.values or [0, 0, 0]) == 3
    assert checked >= 2 and infeasible >= 1, "no candidate over the params limit: the limit went untested"
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert len(trained) == 2 and all(t.user_attrs["params"] <= limit for t in trained)
    assert list((run / "pareto").glob("*.yaml")), "no Pareto front exported"

    # the latency table was filled before the trials; the search itself timed nothing new
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("latency table:")]
    assert "before the trials start" in lines[0], proc.stderr[-2000:]
    cached = int(re.search(r"; (\d+) cached in", lines[0]).group(1))  # timed by the --latency-ms check
    measured = int(re.search(r"latency table: (\d+) entries measured", lines[-1]).group(1))
    (table,) = cache.glob("latency/*.json")
    assert len(json.loads(table.read_text())["entries"]) == cached + measured and measured > 0


@pytest.mark.slow
def test_accuracy_only_search(tmp_path: Path) -> None:
    run, proc = _search(tmp_path, "run", "--objectives", "acc", cache=tmp_path / "cache")
    assert json.loads((run / "run.json").read_text())["settings"]["objectives"] == ["acc"]
    study = _study(run)
    assert [d.name for d in study.directions] == ["MAXIMIZE"]
    complete = [t for t in study.trials if t.user_attrs.get("status") == "complete"]
    assert complete, "no trial trained to the end"
    for t in complete:
        assert t.values == [pytest.approx(t.user_attrs["val_acc"])]
    best = max(complete, key=lambda t: t.value)
    front = list((run / "pareto").glob("*.yaml"))
    assert front and any(f"{best.number:05d}" in f.name or f"trial_{best.number}" in f.name for f in front), front

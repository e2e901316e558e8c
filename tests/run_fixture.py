"""One run directory written by a real `nas search`, with every kind of trial, for the readers' tests.

A six-architecture space (VAN only, 64 px) and a 3.3 M MAC budget that four of them meet make a
random sampler (seed 1) propose infeasible candidates and duplicates within a few trials. The
search runs in two segments, as a user's would after a crash:

1. ``nas search --trials 3`` with ``HYBRID_NAS_FAULT=raise@trial:3`` (trial 3's training
   raises: failed, ``--max-failures 0`` so it is not retried). Trials train one at a time over
   two rungs (width x0.25, then x0.5), so ASHA stops a trial whose rung-1 accuracy is below the
   earlier ones': pruned, with its rung-1 accuracy recorded.
2. The state a search killed mid-training leaves: run.json says "running" and one more candidate
   was sampled through the real `NasSearcher` (costs computed, config written, RUNNING in the
   study) but never finished. (Killing a real search at that moment needs the Ray process
   hunting of tests/fault_helpers.py; the state written is the same, from the same code.)
3. ``nas search --resume --trials 4``: the real resume marks the orphan failed + interrupted,
   re-queues its architecture and trains it.

So the run holds complete, pruned, failed (raised), failed (interrupted), infeasible and
duplicate trials, and 4 trained ones. About 30 s on an idle 2-core machine (two Ray starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SPACE = """\
name: run_fixture
resolution: 64
num_classes: 10
downsampling: cmt
stem_channels: 8
head_fc_dim: 0
stages:
  - {block: van, depth: 1, width: [8, 16, 24]}
  - {block: van, depth: 1, width: 16}
  - {block: van, depth: 1, width: 16}
  - {block: van, depth: [1, 2], width: 32}
"""
BUDGET = "3.3M"  # 4 of the 6 architectures (2.35, 2.41, 3.22, 3.28 M MACs) fit; 4.44 and 4.50 M do not
FAULT = "raise@trial:3"
TRIALS_FIRST, TRIALS = 3, 4
ARGS = ["--budget", BUDGET, "--rungs", "2", "--epochs", "1", "--proxy-width", "0.5", "--data-fraction", "0.3", "--batch-size", "32",
        "--concurrency", "1", "--threads", "1", "--max-failures", "0", "--sampler", "random",
        "--seed", "1"]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYBRID_NAS_FAULT", "PYTEST_CURRENT_TEST")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _nas(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"nas {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def leave_orphan(run_dir: Path) -> int:
    """What a search killed while training leaves: a trial sampled by the real searcher, RUNNING
    in the study, and run.json still "running". Returns the orphan's number."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from results.run_dir import RunDir
    from nas.search.searcher import NasSearcher, make_sampler
    from nas.search.settings import SearchSettings
    from search_space import SearchSpace

    rd = RunDir(run_dir)
    data = rd.read_run_json()
    settings = SearchSettings.from_json(data["settings"])
    with rd.locked():
        rd.update(status="running")
        searcher = NasSearcher(space=SearchSpace.load(rd.space_yaml), settings=settings, run_dir=rd,
                               storage=JournalStorage(JournalFileBackend(str(rd.journal))),
                               sampler=make_sampler(settings, 1))  # fmt: skip
        suggestion = searcher.suggest("killed")
    assert isinstance(suggestion, dict), "no trainable candidate left for the orphan"
    return int(suggestion["number"])


def make_real_run(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    space = root / "space.yaml"
    space.write_text(SPACE)
    run_dir = root / "run"
    _nas(["search", *ARGS, "--space", str(space), "--trials", str(TRIALS_FIRST), "--out", str(run_dir)],
         _env(HYBRID_NAS_FAULT=FAULT))  # fmt: skip
    leave_orphan(run_dir)
    _nas(["search", "--resume", "--out", str(run_dir), "--trials", str(TRIALS)], _env())
    return run_dir

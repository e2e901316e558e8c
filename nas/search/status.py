"""`nas status`: trial counts and the best trials of a search run directory (live or finished).

Reads the run through `results.run.load_run` (read-only: it never writes to the run directory),
so the counts are those of `nas runs` and `nas report`: `run_dir.count_trials`, by each trial's
status. Trials still RUNNING in the study count as ``running`` (after a kill they stay so until
``nas search --resume`` marks them interrupted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from results.run import TrialRecord, load_run, rank_trials
from search_space.errors import UserError

from results.run_dir import COUNT_KEYS, STUDY_NAME, RunDir, count_frozen


def study_trials(storage: Any, study_name: str = STUDY_NAME) -> list[Any]:
    """The FrozenTrials of the run's study in ``storage`` ([] before the study exists)."""
    from optuna.exceptions import OptunaError

    try:
        study_id = storage.get_study_id_from_name(study_name)
    except (KeyError, OptunaError):
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


def count_study(storage: Any, study_name: str = STUDY_NAME) -> dict[str, int]:
    """`run_dir.count_trials` of the study in ``storage`` (what the search writes to run.json)."""
    return count_frozen(study_trials(storage, study_name))


def best_row(t: TrialRecord) -> dict[str, Any]:
    return {
        "number": t.number,
        "val_acc": t.val_acc,
        "rung": t.rung,  # the fidelity rung the accuracy was measured at (0: the lowest)
        "fidelity": t.fidelity.describe(),
        "macs": t.macs,
        "params": t.params,
        "latency_ms_predicted": t.latency_ms_predicted,
        "blocks": [s.block for s in t.config.stages] if t.config is not None else [],
    }


def status_report(path: Path, top: int = 5) -> dict[str, Any]:
    run_dir = RunDir(Path(path))
    if not run_dir.path.is_dir():
        raise UserError(f"{path}: no such run directory")
    meta = run_dir.read_run_json()  # a run directory of this format, or a one-line error
    run = load_run(run_dir.path)
    counts = run.trial_counts()
    s = run.settings
    return {
        **{k: counts[k] for k in (*COUNT_KEYS, "total", "interrupted")},
        "status": run.display_status,
        "run_dir": str(run_dir.path),
        "trials_requested": s.trials,
        "trained": counts["trained"],
        "budget_macs": s.budget_macs,
        "max_params": s.max_params,
        "latency_ms": s.latency_ms,
        "objectives": list(s.objectives),
        "sampler": s.sampler,
        # the k most accurate eligible trials; ties to fewer MACs, then the lower number
        "best": [best_row(t) for t in rank_trials(run.eligible(), "acc")[:top]],
        "pareto": list(run.pareto_numbers),
        "created": run.created,
        "updated": run.updated,
        "study_name": run_dir.storage(meta=meta).study_name,
        "storage": meta.get("storage"),  # the database (URL without password), None: RUN_DIR/study.journal
    }

"""`nas status`: trial counts and the best trials of a search run directory (live or finished).

Reads the Optuna journal read-only (never writes to the run directory) and run.json. Counts are by
the trial's ``status`` user attr; trials still RUNNING in the study count as ``running`` (after a
kill they stay so until ``nas search --resume`` marks them interrupted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_space.errors import UserError

from .run_dir import COUNT_KEYS, STUDY_NAME, RunDir, counts_as_trained


def open_storage(run_dir: RunDir) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not run_dir.journal.is_file():
        return None
    return JournalStorage(JournalFileBackend(str(run_dir.journal)))


def _trials(storage: Any) -> list[Any]:
    from optuna.exceptions import OptunaError

    try:
        study_id = storage.get_study_id_from_name(STUDY_NAME)
    except (KeyError, OptunaError):
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


def count_trials(storage: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {k: 0 for k in COUNT_KEYS}
    if storage is None:
        counts["total"] = counts["interrupted"] = counts["trained"] = 0
        return counts
    for t in _trials(storage):
        status = t.user_attrs.get("status")
        if t.state == TrialState.RUNNING:
            counts["running"] += 1
        elif status in counts:
            counts[status] += 1
            if t.user_attrs.get("interrupted"):
                counts["interrupted"] = counts.get("interrupted", 0) + 1
    counts["total"] = sum(counts[k] for k in COUNT_KEYS)
    counts.setdefault("interrupted", 0)  # failed because a killed search left them (part of "failed")
    counts["trained"] = sum(counts_as_trained(t.user_attrs) for t in _trials(storage))
    return counts


def best_trials(storage: Any, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` most accurate fully trained trials (status "complete")."""
    from optuna.trial import TrialState

    if storage is None:
        return []
    rows = []
    for t in _trials(storage):
        a = t.user_attrs
        if t.state == TrialState.COMPLETE and a.get("status") == "complete" and a.get("val_acc") is not None:
            rows.append(
                {
                    "number": t.number,
                    "val_acc": float(a["val_acc"]),
                    "macs": int(a["macs"]),
                    "params": int(a["params"]),
                    "latency_ms_predicted": a.get("latency_ms_predicted"),
                    "blocks": [s["block"] for s in a["config"]["stages"]],
                }
            )
    rows.sort(key=lambda r: (-r["val_acc"], r["macs"]))
    return rows[:k]


def status_report(path: Path, top: int = 5) -> dict[str, Any]:
    run_dir = RunDir(Path(path))
    if not run_dir.path.is_dir():
        raise UserError(f"{path}: no such run directory")
    data = run_dir.read_run_json()
    storage = open_storage(run_dir)
    counts = count_trials(storage) if storage is not None else {**data.get("counts", {})}
    for key in COUNT_KEYS:
        counts.setdefault(key, 0)
    counts.setdefault("total", sum(counts[k] for k in COUNT_KEYS))
    counts.setdefault("interrupted", 0)
    counts.setdefault("trained", counts["complete"] + counts["pruned"] + counts["failed"])
    run_status = data.get("status", "unknown")
    if run_status == "running" and not run_dir.in_use():
        run_status = "interrupted"  # no search holds the lock: it was killed
    s = data.get("settings", {})
    return {
        **{k: counts[k] for k in (*COUNT_KEYS, "total", "interrupted")},
        "status": run_status,
        "run_dir": str(run_dir.path),
        "trials_requested": s.get("trials"),
        "trained": counts["trained"],
        "budget_macs": s.get("budget_macs"),
        "max_params": s.get("max_params"),
        "latency_ms": s.get("latency_ms"),
        "objectives": s.get("objectives"),
        "sampler": s.get("sampler"),
        "best": best_trials(storage, top),
        "pareto": [p.get("number") for p in data.get("pareto", [])],
        "created": data.get("created"),
        "updated": data.get("updated"),
    }

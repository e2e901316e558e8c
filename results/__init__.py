"""Results of a search: load run directories, Pareto fronts, hypervolume, comparisons, reports, exports.

    from results import load_run, pareto_front, hypervolume, compare_runs
    run = load_run("runs/search-20261101-101500")
    front = pareto_front(run.trials, ("acc", "macs"))        # eligible trials only
    hv = hypervolume([(t.val_acc, t.macs) for t in front], (0.0, run.settings.budget_macs),
                     ["maximize", "minimize"])
"""

from .compare import Comparison, compare_runs
from .pareto import dominates, hypervolume, non_dominated, pareto_front, reference_point
from .run import Fidelity, Run, RunSettings, TrialRecord, is_run_dir, load_run

__all__ = [
    "Comparison", "compare_runs", "dominates", "hypervolume", "non_dominated", "pareto_front", "reference_point",
    "Fidelity", "Run", "RunSettings", "TrialRecord", "is_run_dir", "load_run",
]  # fmt: skip

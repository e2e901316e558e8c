"""The Optuna searcher behind Ray Tune, with the fixes a NAS search needs.

`ray.tune.search.optuna.OptunaSearch` gets several things silently wrong for NAS (see
DESIGN.md); this subclass keeps its study set-up (define-by-run space, sampler, persistent
storage, one direction per objective) and changes what is asked and told:

* **Constraints at sampling time.** Every candidate's MACs and params (analytic, at the deploy
  resolution) and, when asked, predicted latency are computed inside the define-by-run step and
  stored with ``trial.set_constraint`` (<= 0 feasible), so TPE and NSGA-II see them. Each value
  is the relative violation ``value / limit - 1``: raw differences (MACs ~1e9, params ~1e6,
  ms ~1) would make a params or latency overshoot invisible next to any MAC overshoot where the
  samplers add violations up to rank infeasible candidates.
* **Infeasible candidates are never trained, and get no made-up accuracy.** They are told at once
  as PRUNED with no values and their constraint violations (> 0): Optuna's TPE reads them as
  infeasible (ranked by how far over they are), NSGA-II leaves them out of its population, and
  optuna-dashboard never plots them as results. The searcher asks for the next candidate; Ray
  never sees them.
* **Duplicates are not trained twice.** A candidate whose ``arch_hash`` equals an earlier
  trained (or training) trial is told at once with the earlier trial's state and values (status
  "duplicate", ``duplicate_of``), so the sampler learns the same outcome without paying for it.
  A duplicate of a trial still training is told FAIL (nothing to copy yet).
* **Rungs.** A trial reports once per fidelity rung (`objective`); ASHA stops the ones that are
  not among the best of their rung. A trial is COMPLETE (values: its top-rung accuracy) only when
  it reached the top rung; one ASHA stopped is PRUNED, its accuracy at the highest rung it reached
  kept as an intermediate value (step = rung, single-objective studies) and in user attrs
  (``rung``, ``val_acc``, ``rung_val_acc``): the front compares it only within its rung
  (`results.pareto.rung_front`).
* **Result keys reach Optuna.** Accuracy, epochs trained, training time and failure reasons are
  copied into user attrs before ``tell``; reports and tells to trials that are already finished
  (possible after a kill and resume) are skipped instead of raising.

* **A lost database stops the search, quietly.** Every entry point Tune calls runs under
  `_guard`: an error saying the study's database cannot be reached is noted on ``outage``
  (`storage.Outage`) instead of reaching Tune (which would log its traceback, and wrap it in a
  ``TuneError``); from then on nothing is asked of the study, ``suggest`` returns FINISHED and the
  runner's stopper ends the experiment.

`--trials N` counts trained architectures: infeasible and duplicate candidates cost nothing and
do not count. ``MAX_CONSECUTIVE_SKIPS`` untrainable candidates in a row end the search (a budget
so tight the sampler cannot find feasible architectures).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_space import ArchConfig, SearchSpace, analytic_cost
from search_space.errors import DiskFullError, UserError
from search_space.files import is_disk_full

from search_space.units import format_count, format_macs
from .faults import DriverFaults
from results.run_dir import STUDY_NAME, RunDir, arch_hash, counts_as_trained, frozen_status, trained_arch_index
from .settings import SearchSettings
from results.storage import Outage, connection_error, has_heartbeat, redact

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_SKIPS = 1000
INTERRUPTED = "interrupted: the search process ended while this trial was running"
METRIC_OF = {"acc": "val_acc", "macs": "macs", "latency": "latency_ms"}
# the study's metric names, as optuna-dashboard shows them (instead of "Objective 0/1")
METRIC_NAMES = {"acc": "accuracy", "macs": "MACs", "latency": "latency_ms"}
# what the run directory's metrics.jsonl keeps of each rung's report
RUNG_ROW = ("rung", "budget", "val_acc", "train_loss", "tse", "epochs", "n_train", "n_val", "seconds", "cpu_seconds",
            "device")


def block_summary(cfg: ArchConfig) -> str:
    """The stages in one line, ``block depth x width`` each (``van 2x32 | cmt 1x64 | ...``): a user
    attr, so Optuna's own tools (optuna-dashboard) show the architecture at a glance."""
    return " | ".join(f"{st.block} {st.depth}x{st.width}" for st in cfg.stages)


def trial_seed(seed: int, number: int) -> int:
    """The torch seed of trial ``number``: distinct per trial, reproducible from the run's seed."""
    return (seed * 1_000_003 + number) % (2**31 - 1)


def relative_violation(value: float, limit: float) -> float:
    """What Optuna is told for a constraint: ``value / limit - 1`` (<= 0 feasible, 0.1 = 10 % over)."""
    return float(value) / float(limit) - 1.0


def make_sampler(settings: SearchSettings, segment: int) -> optuna.samplers.BaseSampler:
    """The seeded sampler. A resumed run (segment k > 0) gets a different seed, else a random
    sampler would replay the very candidates the first segment already tried."""
    seed = (settings.seed + 7919 * segment) % 2**32  # numpy-backed samplers take seeds below 2**32
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "nsga2":
        population = min(50, max(8, settings.trials // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    # multivariate + group: the define-by-run space is conditional (knobs depend on block types);
    # constant_liar keeps concurrent trials from being handed the same candidate.
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        n_startup_trials=min(10, max(4, settings.trials // 4)),
    )


@dataclass
class Candidate:
    number: int
    cfg: ArchConfig | None = None
    macs: int = 0
    params: int = 0
    latency_ms: float | None = None
    violations: dict[str, float] = field(default_factory=dict)  # constraint -> value / limit - 1 (> 0 violated)
    duplicate_of: int | None = None
    error: str | None = None

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())


@dataclass
class Live:
    """A trial Ray is training."""

    candidate: Candidate
    ot_trial: optuna.Trial
    results: list[dict[str, Any]] = field(default_factory=list)
    failure_reason: str | None = None
    retries: int = 0
    pending_error: bool = False
    last_key: tuple | None = None
    node_id: str | None = None


class NasSearcher(OptunaSearch):
    def __init__(
        self,
        *,
        space: SearchSpace,
        settings: SearchSettings,
        run_dir: RunDir,
        storage: optuna.storages.BaseStorage,
        sampler: optuna.samplers.BaseSampler,
        latency_predictor: Any = None,
        threads_per_trial: int = 1,
        listener: Callable[[str, dict[str, Any]], None] | None = None,
        study_name: str = STUDY_NAME,
        outage: Outage | None = None,
    ) -> None:
        self.nas_space = space
        self.settings = settings
        self.run_dir = run_dir
        self.predictor = latency_predictor
        self.threads_per_trial = threads_per_trial
        self.listener = listener
        metrics = [METRIC_OF[o] for o in settings.objectives]
        modes = ["max" if o == "acc" else "min" for o in settings.objectives]
        single = len(metrics) == 1
        super().__init__(
            space=self._define,
            metric=metrics[0] if single else metrics,
            mode=modes[0] if single else modes,
            sampler=sampler,
            study_name=study_name,
            storage=storage,
        )
        # Tune checks every reported result for the searcher's metrics; only accuracy is reported
        # by the trainable (MACs and latency are known at sampling time and told by this class).
        self._metric, self._mode = "val_acc", "max"
        self.study: optuna.Study = self._ot_study
        self.ladder = settings.rung_ladder()
        if self.study.metric_names is None:  # optuna-dashboard's axes: "accuracy", "MACs", ...
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([METRIC_NAMES[o] for o in settings.objectives])
        self.live: dict[str, Live] = {}
        self.by_hash: dict[str, int] = {}  # arch_hash -> number of a trained or training trial
        self.outcomes: dict[int, tuple[TrialState, Any, dict[str, Any]]] = {}  # number -> state, values, attrs
        self.skips_in_a_row = 0
        self.exhausted = False
        self.disk_full: str | None = None  # set when results could not be written: no new trials start
        self.outage = outage if outage is not None else Outage()  # the study's database is gone: stop
        self.faults = DriverFaults()  # testing hooks; inert unless HYBRID_NAS_FAULT asks
        self.beats = has_heartbeat(storage)  # a database storage: trials carry Optuna heartbeats
        self._index_study()

    # -- state from the study (resume) ---------------------------------------------------
    def _index_study(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        # in the current hash version, whatever version the run's earlier segments stored
        self.by_hash.update(trained_arch_index(trials))
        for t in trials:
            if counts_as_trained(frozen_status(t), t.user_attrs):
                self.outcomes[t.number] = (t.state, t.values, dict(t.user_attrs))

    def live_trial_ids(self) -> list[int]:
        """Storage ids of the trials Ray is training (their heartbeats are renewed while they run)."""
        for _ in range(5):
            try:
                return [lv.ot_trial._trial_id for lv in list(self.live.values())]
            except RuntimeError:  # changed while copied (called from the heartbeat thread)
                continue
        return []

    def _beat(self, trial_id: int) -> None:
        try:
            self.study._storage.record_heartbeat(trial_id)
        except Exception as exc:  # noqa: BLE001 - the heartbeat thread renews it; a resume copes without one
            if connection_error(exc) is not None:
                raise  # the database is gone, not one beat: `_guard` stops the search
            log.warning("could not record the heartbeat of a new trial: %s", redact(str(exc).splitlines()[0][:200]))

    def trained_count(self) -> int:
        """Trials that count against --trials: trained to the end, pruned, or failed (not interrupted)."""
        return sum(counts_as_trained(frozen_status(t), t.user_attrs) for t in self.study.get_trials(deepcopy=False))

    # -- define-by-run: one candidate -------------------------------------------------------
    def _define(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample an architecture and attach its costs and constraints to the trial."""
        s = self.settings
        cand = Candidate(number=trial.number)
        try:
            cfg = self.nas_space.suggest(trial).replace(name=f"trial_{trial.number:05d}")
        except UserError as exc:  # a combination the space allows but the builder rejects
            cand.error = f"invalid architecture: {exc}"
            return {"candidate": cand}
        cost = analytic_cost(cfg)
        cand.cfg, cand.macs, cand.params = cfg, cost.macs, cost.params
        cand.violations["macs"] = relative_violation(cost.macs, s.budget_macs)
        if s.max_params is not None:
            cand.violations["params"] = relative_violation(cost.params, s.max_params)
        if s.uses_latency and self.predictor is not None:
            cand.latency_ms = float(self.predictor.predict(cfg))
            if s.latency_ms is not None:
                cand.violations["latency"] = relative_violation(cand.latency_ms, s.latency_ms)
        for name, value in cand.violations.items():
            trial.set_constraint(name, value)
        h = arch_hash(cfg)
        attrs: dict[str, Any] = {
            "config": cfg.to_dict(),
            "arch_hash": h,
            "macs": cost.macs,
            "params": cost.params,
            "blocks": block_summary(cfg),
            "proxy": {
                "resolution": s.proxy_resolution,
                "width_multiplier": s.proxy_width,
                "epochs": s.epochs,
                "batch_size": s.batch_size,
                "data": s.data,
                "data_fraction": s.data_fraction,
                "seed": trial_seed(s.seed, trial.number),
                # the fidelity rungs (the fields above describe the top one): lowest first
                "rungs": [{"rung": r.index, "label": r.label(), "epochs": r.epochs, "width_multiplier": r.width,
                           "data_fraction": r.data_fraction, "val_fraction": r.val_fraction} for r in self.ladder],
            },
        }
        if cand.latency_ms is not None:
            attrs["latency_ms_predicted"] = cand.latency_ms
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if cand.feasible and h in self.by_hash:
            cand.duplicate_of = self.by_hash[h]
        self.run_dir.write_trial_config(trial.number, cfg)
        return {"candidate": cand}

    def suggest(self, trial_id: str) -> dict | None:
        if self.exhausted or self.disk_full or self.outage:
            return Searcher.FINISHED
        with self._guard():
            return self._suggest(trial_id)
        return Searcher.FINISHED  # the disk filled up, or the database went away, while sampling

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A full disk or a lost database inside Tune's callbacks would only be logged, trial after
        trial (and a database error also raised out of ``Tuner.fit`` as a ``TuneError``): remember
        it, start nothing new, and let the runner end the search with one line (`disk_full`,
        `outage`)."""
        try:
            yield
        except Exception as exc:
            if self.outage.note(exc):
                return
            if not isinstance(exc, (DiskFullError, OSError)) or not is_disk_full(exc):
                raise
            if isinstance(exc, DiskFullError):
                detail = str(exc)
            else:
                detail = f"{exc.strerror} writing {exc.filename or 'the run directory'}"
            self.disk_full = self.disk_full or detail

    def _suggest(self, trial_id: str) -> dict | None:
        for _ in range(MAX_CONSECUTIVE_SKIPS):
            ot_trial = self.study.ask()
            if self.beats:  # at once: a trial RUNNING with no heartbeat would never be seen to lapse
                self._beat(ot_trial._trial_id)
            cand: Candidate = self._define(ot_trial)["candidate"]
            self.faults.after_sample(cand.number)
            if cand.error is None and cand.feasible and cand.duplicate_of is None:
                self.skips_in_a_row = 0
                self._ot_trials[trial_id] = ot_trial
                self.live[trial_id] = Live(cand, ot_trial)
                self.by_hash[arch_hash(cand.cfg)] = cand.number  # type: ignore[arg-type]
                self._emit("start", {"number": cand.number, "macs": cand.macs})
                return {
                    "number": cand.number,
                    "config": cand.cfg.to_dict(),  # type: ignore[union-attr]
                    "seed": trial_seed(self.settings.seed, cand.number),
                    "threads": self.threads_per_trial,
                }
            self._finish_untrained(ot_trial, cand)
        self.exhausted = True
        self._emit("exhausted", {"skips": MAX_CONSECUTIVE_SKIPS})
        return Searcher.FINISHED

    def _finish_untrained(self, ot_trial: optuna.Trial, cand: Candidate) -> None:
        """Tell an infeasible, duplicate or invalid candidate without training it."""
        values: Any = None
        if cand.error is not None:
            status, state, reason = "failed", TrialState.FAIL, cand.error
        elif not cand.feasible:  # PRUNED with its violations: infeasible to the samplers, no values
            status, state = "infeasible", TrialState.PRUNED
            reason = "; ".join(self._describe_violation(k, cand) for k, v in cand.violations.items() if v > 0)
        else:
            status = "duplicate"
            reason = f"duplicate of trial {cand.duplicate_of}"
            earlier = self.outcomes.get(cand.duplicate_of)  # type: ignore[arg-type]
            if earlier is None:  # the earlier one is still training: nothing to copy yet
                state = TrialState.FAIL
                reason += " (still training)"
            else:
                state, values, earlier_attrs = earlier
                for key in ("val_acc", "best_val_acc", "epochs_trained", "rung", "rung_label", "rung_val_acc"):
                    if key in earlier_attrs:
                        ot_trial.set_user_attr(key, earlier_attrs[key])
                if state == TrialState.PRUNED:
                    values = None
                elif state == TrialState.COMPLETE:
                    values = list(values) if values and len(values) > 1 else (values[0] if values else None)
            ot_trial.set_user_attr("duplicate_of", cand.duplicate_of)
        ot_trial.set_user_attr("status", status)
        ot_trial.set_user_attr("failure_reason", reason)
        ot_trial.set_user_attr("trained", False)
        if state == TrialState.FAIL:
            values = None
        self._tell(ot_trial, values, state)
        self.skips_in_a_row += 1
        self.run_dir.write_trial_result(
            cand.number,
            {"number": cand.number, "status": status, "state": state.name, "trained": False, "values": values,
             "reason": reason, "macs": cand.macs, "params": cand.params, "latency_ms_predicted": cand.latency_ms,
             "duplicate_of": cand.duplicate_of},  # fmt: skip
        )
        self._emit(status, {"number": cand.number, "reason": reason})

    def _describe_violation(self, name: str, cand: Candidate) -> str:
        s = self.settings
        if name == "macs":
            return f"MACs {format_macs(cand.macs)} > budget {format_macs(s.budget_macs)}"
        if name == "params":
            return f"params {format_count(cand.params)} > limit {format_count(s.max_params)}"  # type: ignore[arg-type]
        return f"latency {cand.latency_ms:.2f} ms > limit {s.latency_ms:.2f} ms"  # type: ignore[str-format]

    def _values(self, acc: float, cand: Candidate) -> Any:
        by_objective = {"acc": acc, "macs": float(cand.macs), "latency": cand.latency_ms}
        values = [by_objective[o] for o in self.settings.objectives]
        return values if len(values) > 1 else values[0]

    # -- results of trained trials ----------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.outage:
            return
        with self._guard():
            self._on_trial_result(trial_id, result)

    def _on_trial_result(self, trial_id: str, result: dict) -> None:
        live = self.live.get(trial_id)
        if live is not None:
            self._ingest(live, result)

    def _ingest(self, live: Live, result: dict) -> None:
        """One reported row. Tune hands the row that made ASHA stop a trial (or that ended it) to
        ``on_trial_complete`` only, so both paths come here; a row is taken once."""
        if result.get("status") == "failed":
            live.failure_reason = str(result.get("failure_reason") or live.failure_reason or "training failed")
            return
        rung = result.get("rung")
        if not isinstance(rung, int) or rung < 0 or "val_acc" not in result:
            return
        key = (rung, result.get("timestamp"), result.get("time_total_s"))
        if key == live.last_key:
            return  # already taken (the completing row repeats the last result)
        live.last_key = key
        if rung == 0:  # a retried trial starts over
            live.results.clear()
            live.failure_reason = None
        row = {k: result[k] for k in RUNG_ROW if k in result}
        row["rung_label"] = self.ladder[rung].label() if rung < len(self.ladder) else None
        if result.get("node_id"):
            live.node_id = str(result["node_id"])
        live.results.append(row)
        self.run_dir.append_metrics(live.candidate.number, row)
        if len(self.settings.objectives) == 1 and self._updatable(live.ot_trial):
            live.ot_trial.report(float(result["val_acc"]), rung)  # intermediate values help TPE rank pruned trials
        self._emit("rung", {"number": live.candidate.number, **row})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.outage:  # the trial stays RUNNING in the study: a resume marks it interrupted
            return
        with self._guard():
            self._on_trial_complete(trial_id, result, error)

    def _on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        if result:
            self._ingest(live, result)
        if error:
            # Wait for the error text: Tune calls the runner's callback right after this.
            live.pending_error = True
            return
        self._finish_trained(trial_id, live)

    def on_trial_error_text(self, trial_id: str, text: str | None) -> None:
        """From the Tune callback: the trial raised (after its retries) or its worker died."""
        if self.outage:
            return
        with self._guard():
            self._on_trial_error_text(trial_id, text)

    def _on_trial_error_text(self, trial_id: str, text: str | None) -> None:
        live = self.live.get(trial_id)
        if live is None or not live.pending_error:
            return
        reason = live.failure_reason or text or "the trial raised an error or lost its worker"
        self._finish_failed(trial_id, live, reason)

    def on_trial_retry(self, trial_id: str) -> None:
        live = self.live.get(trial_id)
        if live is not None:
            live.retries += 1
            self._emit("retry", {"number": live.candidate.number, "retries": live.retries})

    def flush_pending(self) -> None:
        """Tell whatever Tune left unfinished (errored trials whose callback never came)."""
        if self.outage:
            return
        with self._guard():
            for trial_id, live in list(self.live.items()):
                if live.pending_error:
                    self._finish_failed(trial_id, live, live.failure_reason or "the trial raised an error or lost its worker")

    def _finish_trained(self, trial_id: str, live: Live) -> None:
        cand, top = live.candidate, self.settings.top_rung
        last = live.results[-1] if live.results else None
        if live.failure_reason is not None:
            self._finish_failed(trial_id, live, live.failure_reason)
            return
        if last is None:
            self._finish_failed(trial_id, live, "the trial ended without reporting a rung")
            return
        acc = float(last["val_acc"])
        if not math.isfinite(acc):
            self._finish_failed(trial_id, live, f"non-finite validation accuracy {acc}")
            return
        self._set_training_attrs(live)
        if int(last["rung"]) >= top:
            status, state, values = "complete", TrialState.COMPLETE, self._values(acc, cand)
        else:
            status, state, values = "pruned", TrialState.PRUNED, None
        attrs = {"status": status}
        if status == "pruned":
            attrs["failure_reason"] = (f"stopped by ASHA after rung {int(last['rung']) + 1} of {top + 1} "
                                      "(not among the best of its rung)")  # fmt: skip
        for k, v in attrs.items():
            self._set_attr(live.ot_trial, k, v)
        self._tell(live.ot_trial, values, state)
        self._record(trial_id, live, status, state, values, attrs.get("failure_reason"))

    def _finish_failed(self, trial_id: str, live: Live, reason: str) -> None:
        self._set_training_attrs(live)
        self._set_attr(live.ot_trial, "status", "failed")
        self._set_attr(live.ot_trial, "failure_reason", reason)
        self._tell(live.ot_trial, None, TrialState.FAIL)
        self._record(trial_id, live, "failed", TrialState.FAIL, None, reason)

    def _set_training_attrs(self, live: Live) -> None:
        rows = live.results
        attrs = {
            "val_acc": float(rows[-1]["val_acc"]) if rows else None,  # at the highest rung reached
            "rung": int(rows[-1]["rung"]) if rows else None,
            "rung_label": rows[-1].get("rung_label") if rows else None,
            "rung_val_acc": [float(r["val_acc"]) for r in rows] if rows else None,  # rung 0, 1, ...
            "tse": float(rows[-1]["tse"]) if rows and "tse" in rows[-1] else None,
            "epochs_trained": int(rows[-1].get("epochs", 0)) if rows else 0,  # at the highest rung reached
            "train_seconds": sum(float(r.get("seconds", 0.0)) for r in rows) if rows else None,  # all rungs
            "train_cpu_seconds": sum(float(r.get("cpu_seconds", 0.0)) for r in rows) if rows else None,
            "retries": live.retries,
            "trained": True,
        }
        for k, v in attrs.items():
            if v is not None:
                self._set_attr(live.ot_trial, k, v)

    def _record(self, trial_id: str, live: Live, status: str, state: TrialState, values: Any, reason: str | None) -> None:
        cand = live.candidate
        self.live.pop(trial_id, None)
        self._completed_trials.add(trial_id)
        frozen = self.study._storage.get_trial(live.ot_trial._trial_id)
        self.outcomes[cand.number] = (frozen.state, frozen.values, dict(frozen.user_attrs))
        rows = live.results
        self.run_dir.write_trial_result(
            cand.number,
            {"number": cand.number, "status": status, "state": state.name, "trained": True, "values": values,
             "reason": reason, "macs": cand.macs, "params": cand.params, "latency_ms_predicted": cand.latency_ms,
             "val_acc": rows[-1]["val_acc"] if rows else None, "rung": rows[-1]["rung"] if rows else None,
             "epochs_trained": int(rows[-1].get("epochs", 0)) if rows else 0, "retries": live.retries,
             "node_id": live.node_id, "device": rows[-1].get("device") if rows else None},  # fmt: skip
        )
        self._emit(status, {"number": cand.number, "val_acc": rows[-1]["val_acc"] if rows else None,
                            "macs": cand.macs, "reason": reason, "trained": True})  # fmt: skip

    # -- guarded Optuna access ------------------------------------------------------------
    def _updatable(self, ot_trial: optuna.Trial) -> bool:
        return self.study._storage.get_trial(ot_trial._trial_id).state == TrialState.RUNNING

    def _set_attr(self, ot_trial: optuna.Trial, key: str, value: Any) -> None:
        if self._updatable(ot_trial):
            ot_trial.set_user_attr(key, value)

    def _tell(self, ot_trial: optuna.Trial, values: Any, state: TrialState) -> None:
        if not self._updatable(ot_trial):
            log.warning("trial %d was already finished; not told again", ot_trial.number)
            return
        self.study.tell(ot_trial, values, state=state, skip_if_finished=True)

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener(event, info)

    # -- Tune experiment checkpoints --------------------------------------------------------
    # The study (journal file or database) is the record of the search; Tune's pickled searcher state is not
    # used to resume (see runner.py), so keep its checkpoint tiny and free of storage handles.
    def save(self, checkpoint_path: str) -> None:
        import json

        state = {"live_numbers": [lv.candidate.number for lv in self.live.values()], "time": time.time()}
        payload = json.dumps(state).encode()
        if not self.faults.during_checkpoint(checkpoint_path, payload):
            from search_space.files import write_atomic

            write_atomic(checkpoint_path, payload)

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored (see runner)
        pass

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration (search algorithm included) into the experiment
        # directory; the storage, sampler and display handles cannot and need not go there.
        return {"settings": self.settings, "run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:  # pragma: no cover - see restore()
        self.__dict__.update(state)


def mark_interrupted(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a killed search: told FAIL ("interrupted") and re-enqueued.

    The re-enqueued trial asks for the same architecture again, so a resumed search trains what the
    killed one was training instead of dropping it; the interrupted trial itself is marked so it
    neither counts against --trials nor makes the retry a "duplicate". Returns their numbers.
    """
    numbers = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "status", "failed")
        storage.set_trial_user_attr(t._trial_id, "failure_reason", INTERRUPTED)
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        was_trainable = (
            "arch_hash" in t.user_attrs
            and all(v <= 0 for v in t.constraints.values())
            and "duplicate_of" not in t.user_attrs
        )
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if was_trainable and t.params:
            study.enqueue_trial(t.params, skip_if_exists=False)
        numbers.append(t.number)
    return numbers

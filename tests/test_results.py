"""`results`: loading run directories, Pareto fronts, hypervolume, comparing runs, `nas runs`.

`make_run` writes a run directory by the contract `nas search` follows (run.json, space.yaml, an
Optuna journal with study "search", trials/, pareto/) from hand-made trials, so these tests know
every answer. The export and report tests import it from here.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Sequence

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from nas.cli import main
from results.run_dir import STUDY_NAME, RunDir
from results import compare_runs, hypervolume, load_run, pareto_front
from results.pareto import dominates, non_dominated, normalized_hypervolume, reference_point
from results.run import Fidelity, TrialRecord
from search_space import ArchConfig, RandomChooser, SearchSpace, analytic_cost
from search_space.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- a hand-made run directory -------------------------------------------------------------------


def small_config(index: int, *, resolution: int = 64, num_classes: int = 10) -> ArchConfig:
    """Small hybrids (every block family, channel attention) that export in seconds."""
    from search_space import HeadConfig, StageConfig, StemConfig

    blocks = ("van", "cmt", "acmix")
    width = 16 + 8 * (index % 3)
    stages = []
    for s in range(4):
        block = blocks[(index + s) % 3]
        w = width * (2 ** min(s, 2))
        heads = 2 if block != "van" else 1
        size = resolution // (4 * 2**s)
        stages.append(
            StageConfig(
                block,
                depth=1 + (index + s) % 2,
                width=w,
                mlp_ratio=2.0,
                heads=heads,
                kv_reduction=2 if block == "cmt" and size % 2 == 0 else 1,
                attn_kernel=3,
                channel_attention=("none", "se", "eca")[(index + s) % 3],
            )
        )
    return ArchConfig(
        name=f"small{index}",
        resolution=resolution,
        num_classes=num_classes,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("linear", 0, 0.0),
        stages=tuple(stages),
    )


def _distributions(choices: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions for sampled choices, read off the space's knobs."""
    out: dict[str, Any] = {}
    for name in choices:
        if name in space.top:
            knob = space.top[name]
        else:
            stage, key = name.split(".", 1)
            knob = space.stages[int(stage[1:]) - 1][key]
        if knob.choices is not None:
            out[name] = CategoricalDistribution(list(knob.choices))
        else:
            out[name] = IntDistribution(knob.low, knob.high, step=knob.step)
    return out


def make_run(
    root: Path,
    name: str = "run",
    *,
    n: int = 24,
    seed: int = 0,
    budget: int = 2_000_000_000,
    objectives: Sequence[str] = ("acc", "macs"),
    statuses: Sequence[str] | None = None,
    configs: Sequence[ArchConfig] | None = None,
    accuracies: Sequence[float] | None = None,
    status: str = "finished",
    measured_latency: bool = False,
    write_pareto: bool = True,
) -> Path:
    """A run directory with ``n`` hand-made trials, written through the search's own writer
    (`RunDir`, the study name and the Pareto export of `nas.search.pareto`): only the trials'
    outcomes are made up, so the tests know every answer.

    Architectures are sampled from the default space (seeded) unless ``configs`` are given;
    statuses cycle through complete / pruned / infeasible / failed / duplicate unless given.
    Accuracies are a smooth function of MACs plus seeded noise unless given.
    """
    from nas.search import pareto
    from results.run_dir import STUDY_NAME, RunDir, arch_hash
    from nas.search.settings import SearchSettings

    rng = random.Random(seed)
    space = SearchSpace.default()
    rd = RunDir(root / name)
    settings = SearchSettings(budget_macs=budget, objectives=tuple(objectives), trials=n, epochs=3, concurrency=2,
                              seed=seed, data_fraction=1.0, proxy_width=0.5)  # fmt: skip
    rd.create(settings.to_json(), (Path(__file__).parents[1] / "search_space" / "spaces" / "default.yaml").read_text())
    storage = JournalStorage(JournalFileBackend(str(rd.journal)))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=settings.directions)
    cycle = ("complete", "complete", "complete", "pruned", "complete", "infeasible", "complete", "failed")
    if statuses is None:
        statuses = [cycle[i % len(cycle)] for i in range(n)]
        if n >= 10 and configs is None:
            statuses[9] = "duplicate"
    statuses = list(statuses)
    seen: dict[str, int] = {}
    measured: dict[str, float] = {}
    for number in range(n):
        st = statuses[number]
        if configs is not None:
            cfg, choices = configs[number % len(configs)], {}
        else:  # resample until feasibility matches the status (a search only trains feasible ones)
            for attempt in range(1000):
                chooser = RandomChooser(seed * 100_000 + number * 100 + attempt)
                cfg = space.suggest(chooser)
                if (analytic_cost(cfg).macs > budget) == (st == "infeasible"):
                    break
            choices = dict(chooser.params)
        if st == "duplicate" and number > 0:
            cfg = _first_complete_cfg(study) or cfg
        if configs is None:
            cfg = cfg.replace(name="sample")
        cost = analytic_cost(cfg)
        macs = cost.macs
        if configs is None:  # sampled to match the status above
            macs_violation = macs - budget
        elif st == "infeasible":
            macs_violation = max(1, macs - budget)
        else:
            macs_violation = min(-1, macs - budget)
        h = arch_hash(cfg)
        attrs: dict[str, Any] = {
            "status": st,
            "config": cfg.to_dict(),
            "arch_hash": h,
            "macs": macs,
            "params": cost.params,
            "proxy": {"resolution": 32, "width_multiplier": 0.5, "epochs": 3, "batch_size": 64, "data": "digits",
                      "data_fraction": 1.0, "seed": seed * 1_000_003 + number},  # fmt: skip
        }
        if accuracies is not None:
            acc = float(accuracies[number])
        else:
            acc = round(0.45 + 0.4 * (1 - math.exp(-macs / 1.2e9)) + rng.uniform(-0.06, 0.06), 4)
        latency = 2.0 + macs / 2.5e8
        if "latency" in objectives:
            attrs["latency_ms_predicted"] = latency
        values: list[float] | None = None
        state = TrialState.COMPLETE
        epochs = 3
        if st == "complete":
            values = [{"acc": acc, "macs": float(macs), "latency": latency}[o] for o in objectives]
            attrs.update(val_acc=acc, best_val_acc=acc + 0.01, epochs_trained=3, train_seconds=4.5, trained=True)
        elif st == "pruned":
            state, epochs = TrialState.PRUNED, 1
            attrs.update(val_acc=acc * 0.6, best_val_acc=acc * 0.6, epochs_trained=1, train_seconds=1.5, trained=True,
                         failure_reason="stopped early by ASHA after epoch 1 of 3")  # fmt: skip
        elif st == "infeasible":
            values = [{"acc": 0.0, "macs": float(macs), "latency": latency}[o] for o in objectives]
            attrs.update(failure_reason=f"MACs {macs} > budget {budget}", trained=False)
        elif st == "failed":
            state, epochs = TrialState.FAIL, 1
            attrs.update(failure_reason="FloatingPointError: non-finite loss at epoch 1", epochs_trained=1,
                         trained=True)
        elif st == "duplicate":
            first = seen.get(h)
            ft = study.trials[first] if first is not None else None
            values = list(ft.values) if ft is not None and ft.values else None
            if values is None:
                state = TrialState.FAIL
            attrs.update(duplicate_of=first, failure_reason=f"duplicate of trial {first}", trained=False)
        elif st == "running":
            state = TrialState.RUNNING
            attrs["status"] = "complete"  # stale attr: a RUNNING state must still read as running
        seen.setdefault(h, number)
        trial = create_trial(
            state=state,
            values=values,
            params=choices,
            distributions=_distributions(choices, space),
            user_attrs=attrs,
            constraints={"macs": float(macs_violation)},
            intermediate_values={e: acc * (0.6 + 0.4 * e / 3) for e in range(1, epochs + 1)}
            if st in ("complete", "pruned")
            else {},
        )
        study.add_trial(trial)
        rd.write_trial_config(number, cfg)
        if st in ("complete", "pruned", "failed"):
            for e in range(1, epochs + 1):
                rd.append_metrics(number, {"epoch": e, "val_acc": acc * (0.6 + 0.4 * e / 3), "train_loss": 2.0 / e,
                                           "seconds": 1.5})  # fmt: skip
        rd.write_trial_result(number, {"number": number, "status": st, "state": state.name, "values": values,
                                       "trained": st in ("complete", "pruned", "failed")})  # fmt: skip
    members = pareto.front(study, settings, rd) if write_pareto else []
    if write_pareto:  # the search's own end: its front, configs and (below) cards
        pareto.export(rd, members, study)
        rd.update(pareto=pareto.summary(members))
    if measured_latency:  # every complete trial measured (7% above its prediction), kept as nas search keeps it
        for t in study.trials:
            if t.user_attrs.get("status") == "complete":
                measured[str(t.number)] = (2.0 + t.user_attrs["macs"] / 2.5e8) * 1.07
        study.set_user_attr("latency_ms_measured", measured)
    if write_pareto:
        pareto.write_cards(rd, members)
    from results.run_dir import count_frozen

    rd.update(status=status, counts=count_frozen(study.trials), command=["nas", "search", "--budget", str(budget)])
    return rd.path


def _first_complete_cfg(study: optuna.Study) -> ArchConfig | None:
    for t in study.trials:
        if t.user_attrs.get("status") == "complete":
            return ArchConfig.from_dict(t.user_attrs["config"])
    return None


def record(number: int, acc: float | None, macs: int | None, *, status: str = "complete", state: str = "COMPLETE",
           constraint: float = -1.0, latency: float | None = None) -> TrialRecord:  # fmt: skip
    """A hand-made trial record for front tests."""
    return TrialRecord(
        number=number, state=state, status=status, values=None, choices={}, constraints={"macs": constraint},
        config=None, macs=macs, params=1000, val_acc=acc, latency_ms_predicted=latency, fidelity=Fidelity(),
    )  # fmt: skip


# -- dominance and fronts on points with known answers ------------------------------------------


def test_dominance_mixed_directions():
    dirs = ["maximize", "minimize"]
    assert dominates((0.9, 100), (0.8, 200), dirs)
    assert dominates((0.9, 100), (0.9, 200), dirs)  # equal accuracy, fewer MACs
    assert not dominates((0.9, 100), (0.9, 100), dirs)  # ties do not dominate
    assert not dominates((0.9, 300), (0.8, 200), dirs)  # a trade-off
    assert dominates((0.1, 1), (0.2, 1), ["minimize", "minimize"])


def test_non_dominated_known_set_keeps_ties():
    # (acc, macs): 0 and 1 tie, 2 is dominated by both, 3 trades off, 4 is dominated by 3
    pts = [(0.8, 100), (0.8, 100), (0.7, 150), (0.9, 300), (0.85, 400)]
    assert non_dominated(pts, ["maximize", "minimize"]) == [0, 1, 3]
    # the same in 3-D with a constant third objective goes through the general path
    pts3 = [p + (1.0,) for p in pts]
    assert non_dominated(pts3, ["maximize", "minimize", "minimize"]) == [0, 1, 3]
    # equal first objective, different second: only the better one survives
    assert non_dominated([(0.8, 100), (0.8, 120)], ["maximize", "minimize"]) == [0]


def test_pareto_front_excludes_ineligible_trials():
    trials = [
        record(0, 0.70, 100),
        record(1, 0.80, 200),
        record(2, 0.75, 250),  # dominated by 1
        record(3, 0.95, 150, constraint=5.0),  # infeasible: would dominate everything
        record(4, 0.99, 50, status="pruned", state="PRUNED"),  # low fidelity
        record(5, 0.99, 60, status="duplicate"),  # a copy of another trial
        record(6, 0.90, 400),
        record(7, 0.90, 400),  # a tie with 6: both stay
        record(8, None, 10, status="failed", state="FAIL"),
        record(9, 0.60, 100),  # same MACs as 0, worse accuracy
    ]
    front = pareto_front(trials, ("acc", "macs"))
    assert [t.number for t in front] == [0, 1, 6, 7]  # ordered by MACs, then number


def test_hypervolume_2d_by_hand():
    # maximise acc, minimise MACs; reference (acc 0, MACs 10)
    pts = [(0.5, 2), (0.8, 5), (0.9, 8)]
    # slabs by MACs: [2,5): 0.5, [5,8): 0.8, [8,10): 0.9 -> 3*0.5 + 3*0.8 + 2*0.9 = 5.7
    assert hypervolume(pts, (0.0, 10.0), ["maximize", "minimize"]) == pytest.approx(5.7)
    # a dominated point, a duplicate and a point beyond the reference change nothing
    more = pts + [(0.4, 6), (0.8, 5), (0.95, 12)]
    assert hypervolume(more, (0.0, 10.0), ["maximize", "minimize"]) == pytest.approx(5.7)
    # both minimised
    assert hypervolume([(1, 3), (2, 1)], (4, 4), ["minimize", "minimize"]) == pytest.approx(3 * 1 + 2 * 2)
    assert hypervolume([], (0.0, 1.0), ["maximize", "minimize"]) == 0.0
    assert hypervolume([(0.5, 10)], (0.0, 10.0), ["maximize", "minimize"]) == 0.0  # on the reference


def test_hypervolume_3d_by_hand_and_against_optuna():
    # minimisation, reference (2, 2, 2): (0,0,1) dominates [0,2]x[0,2]x[1,2] (volume 4), (1,1,0)
    # dominates [1,2]x[1,2]x[0,2] (volume 2), overlapping in [1,2]^3 (volume 1): 4 + 2 - 1 = 5
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2), ["minimize"] * 3) == pytest.approx(5.0)
    rng = random.Random(3)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(25)]
    ref = (1.1, 1.1, 1.1)
    mine = hypervolume(pts, ref, ["minimize"] * 3)
    try:  # cross-check against Optuna's own (private) WFG implementation when present
        import numpy as np
        from optuna._hypervolume import compute_hypervolume
    except ImportError:
        pytest.skip("optuna's hypervolume helper is not available")
    assert mine == pytest.approx(compute_hypervolume(np.array(pts), np.array(ref)), rel=1e-9)
    # maximising an objective is the same as minimising its negation
    flipped = [(-a, b, c) for a, b, c in pts]
    assert hypervolume(flipped, (-1.1, 1.1, 1.1), ["maximize", "minimize", "minimize"]) == pytest.approx(mine)


def test_hypervolume_bad_input():
    with pytest.raises(UserError, match="directions"):
        hypervolume([(1, 2)], (0, 0), ["maximize"])
    with pytest.raises(UserError, match="maximize"):
        hypervolume([(1, 2)], (0, 0), ["up", "down"])


# -- loading a run -------------------------------------------------------------------------------


def test_load_run_reads_every_field(tmp_path):
    path = make_run(tmp_path, n=16, seed=1)
    run = load_run(path)
    assert run.status == "finished" and run.settings.budget_macs == 2_000_000_000
    assert run.directions == ("maximize", "minimize") and run.objectives == ("acc", "macs")
    assert [t.number for t in run.trials] == list(range(16))
    counts = run.trial_counts()
    # the cycle complete x3, pruned, complete, infeasible, complete, failed over 16 trials, trial 9 a duplicate
    assert {k: counts[k] for k in ("complete", "pruned", "failed", "infeasible", "duplicate", "running")} == {
        "complete": 9, "pruned": 2, "failed": 2, "infeasible": 2, "duplicate": 1, "running": 0}
    assert counts["trained"] == 13 and counts["total"] == 16 and counts == run.counts  # run.json agrees
    t0 = run.trial(0)
    assert t0.status == "complete" and t0.state == "COMPLETE" and t0.eligible
    assert t0.config is not None and analytic_cost(t0.config).macs == t0.macs
    assert t0.values == (t0.val_acc, float(t0.macs))
    assert t0.constraints["macs"] < 0 and t0.choices and t0.fidelity.resolution == 32 and t0.fidelity.full
    assert t0.fidelity.width == 0.5 and run.settings.proxy_width == 0.5
    assert len(t0.history) == 3 and t0.history[-1]["epoch"] == 3
    pruned = run.trial(3)
    assert pruned.state == "PRUNED" and not pruned.eligible and pruned.fidelity.epochs_trained == 1
    assert not pruned.fidelity.full
    infeasible = run.trial(5)
    assert infeasible.status == "infeasible" and not infeasible.feasible and not infeasible.eligible
    dup = run.trial(9)
    assert dup.status == "duplicate" and not dup.eligible and dup.duplicate_of is not None
    assert run.trial(7).state == "FAIL" and "non-finite" in run.trial(7).failure_reason
    best = run.best()
    assert best is not None and best.val_acc == max(t.val_acc for t in run.eligible())
    assert all(t.latency_ms_measured is None for t in run.trials)


def test_measured_latency_from_study_attr_and_result_json(tmp_path):
    path = make_run(tmp_path, n=6, seed=1, measured_latency=True, objectives=("acc", "macs", "latency"))
    run = load_run(path)
    t0 = run.trial(0)
    assert t0.latency_ms_measured == pytest.approx(t0.latency_ms_predicted * 1.07)
    assert t0.metric("latency") == t0.latency_ms_measured and t0.values[2] == t0.latency_ms_predicted
    # a run whose study lacks the attr: trials/NNNNN/result.json carries it (as nas search writes both)
    other = make_run(tmp_path, "other", n=6, seed=1)
    result = json.loads((other / "trials" / "00002" / "result.json").read_text())
    (other / "trials" / "00002" / "result.json").write_text(json.dumps({**result, "latency_ms_measured": 12.5}))
    assert load_run(other).trial(2).latency_ms_measured == 12.5
    # every trial measured: the front is made in measured latency (trial 0 is the cheapest and fastest)
    from results.pareto import front_objectives

    assert front_objectives(run.objectives, run.trials) == ("acc", "macs", "latency_measured")


def test_load_run_errors(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path / "plain")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        load_run(tmp_path / "file.txt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{ half")
    with pytest.raises(UserError, match="unreadable run.json"):
        load_run(bad)
    path = make_run(tmp_path, n=4)
    with pytest.raises(UserError, match="no trial 99"):
        load_run(path).trial(99)
    assert not (tmp_path / "plain" / "study.journal").exists()  # reading never creates files


def test_load_run_while_being_written(tmp_path):
    """A search in progress: a RUNNING trial, a half-written journal line and metrics line."""
    statuses = ["complete"] * 5 + ["running"]
    path = make_run(tmp_path, n=6, statuses=statuses, status="running", write_pareto=False)
    with open(path / "study.journal", "ab") as fh:
        fh.write(b'{"op_code": 4, "worker_id": "x", "trial_id": 5, "par')  # cut mid-append
    with open(path / "trials" / "00005" / "metrics.jsonl", "w") as fh:
        fh.write('{"epoch": 1, "val_acc": 0.5, "train_loss": 1.0, "seconds": 1.0}\n{"epoch": 2, "val_')
    run = load_run(path)
    assert run.status == "running" and len(run.trials) == 6
    assert run.trial(5).status == "running" and not run.trial(5).eligible and not run.trial(5).trained
    assert len(run.trial(5).history) == 1
    assert run.trial_counts()["running"] == 1 and run.trained == 5  # a running trial has not used up a trial yet
    # a run.json with no journal yet (the search just started), from an older version: no proxy_width,
    # a key this version does not know
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "run.json").write_text(json.dumps({"format": 1, "status": "running",
                                                "settings": {"budget_macs": 10, "warmup": 2}}))  # fmt: skip
    old = load_run(fresh)
    assert old.trials == () and old.settings.budget_macs == 10 and old.settings.extra == {"warmup": 2}
    assert old.settings.proxy_width is None and old.settings.objectives == ("acc", "macs")  # unknown, not today's 0.5


def test_load_run_beside_a_live_writer(tmp_path):
    """Loading in a loop while another thread appends trials to the same journal never fails."""
    import threading

    path = make_run(tmp_path, n=4, statuses=["complete"] * 4, status="running", write_pareto=False)
    before = sorted(p.name for p in path.rglob("*"))
    storage = JournalStorage(JournalFileBackend(str(path / "study.journal")))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    template = study.trials[0]
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set() and len(study.trials) < 60:
            study.add_trial(create_trial(values=list(template.values), user_attrs=dict(template.user_attrs),
                                         constraints={"macs": -1.0}))  # fmt: skip

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    try:
        for _ in range(15):
            seen.append(len(load_run(path).trials))
    finally:
        stop.set()
        thread.join()
    assert seen == sorted(seen) and seen[0] >= 4
    assert len(load_run(path).trials) == len(study.trials)
    after = sorted(p.name for p in path.rglob("*"))
    assert after == before  # readers create no file (no lock, no journal)


def test_rank_tie_break_fewer_macs(tmp_path):
    cfgs = [small_config(i) for i in range(4)]
    macs = [analytic_cost(c).macs for c in cfgs]
    path = make_run(tmp_path, n=4, configs=cfgs, statuses=["complete"] * 4, accuracies=[0.8, 0.8, 0.8, 0.7])
    from results.run import rank_trials

    ranked = rank_trials(load_run(path).eligible())
    top3 = sorted(range(3), key=lambda i: (macs[i], i))
    assert [t.number for t in ranked] == top3 + [3]


# -- comparing runs ------------------------------------------------------------------------------


def test_compare_runs_common_reference(tmp_path):
    cfgs = [small_config(i) for i in range(3)]
    macs = [analytic_cost(c).macs for c in cfgs]
    order = sorted(range(3), key=lambda i: macs[i])
    acc_a = [0.0] * 3
    acc_b = [0.0] * 3
    for rank, i in enumerate(order):  # A: accuracy grows with MACs; B: 0.1 lower everywhere
        acc_a[i] = 0.6 + 0.1 * rank
        acc_b[i] = 0.5 + 0.1 * rank
    a = make_run(tmp_path, "a", n=3, configs=cfgs, statuses=["complete"] * 3, accuracies=acc_a, budget=10**9)
    b = make_run(tmp_path, "b", n=3, configs=cfgs, statuses=["complete"] * 3, accuracies=acc_b, budget=2 * 10**9)
    cmp = compare_runs(a, b)
    assert cmp.reference == (0.0, 2e9)  # the larger budget
    pts_a = sorted((acc_a[i], macs[i]) for i in range(3))
    expected_a = hypervolume(pts_a, (0.0, 2e9), ["maximize", "minimize"])
    # by hand: a staircase of the three points against (0, 2e9)
    by_hand = 0.0
    xs = sorted(pts_a, key=lambda p: p[1])
    for k, (acc, m) in enumerate(xs):
        nxt = xs[k + 1][1] if k + 1 < len(xs) else 2e9
        by_hand += acc * (nxt - m)
    assert cmp.hv_a == pytest.approx(expected_a) == pytest.approx(by_hand)
    assert cmp.ratio is not None and cmp.ratio > 1
    assert cmp.coverage_a_over_b == 1.0 and cmp.coverage_b_over_a == 0.0
    assert 0 < normalized_hypervolume(cmp.hv_a, cmp.reference, cmp.objectives) < 1
    ref = reference_point([load_run(a)], ("acc", "macs", "latency_predicted"))
    assert ref[:2] == (0.0, 1e9) and ref[2] == pytest.approx(1.0)  # nothing recorded: fallback 1.0


# -- the CLI: nas runs and nas compare -----------------------------------------------------------


def test_nas_runs_lists_runs_and_skips_other_dirs(tmp_path, capsys):
    make_run(tmp_path, "first", n=8, seed=2)
    make_run(tmp_path, "second", n=4, seed=3, status="running", write_pareto=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["first", "second"]
    first = load_run(tmp_path / "first")
    assert rows[0]["best_acc"] == pytest.approx(first.best().val_acc)
    assert rows[0]["trained"] == first.trained == 7 and rows[0]["trials"] == 8  # 8 trials, one infeasible
    assert rows[0]["budget_macs"] == 2_000_000_000
    assert rows[1]["status"] == "interrupted"  # run.json says running, but no search holds the run
    with RunDir(tmp_path / "second").locked():  # now one does (this process)
        assert main(["runs", str(tmp_path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[1]["status"] == "running"
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "first" in out and "second" in out and "notes" not in out


def test_nas_runs_and_compare_errors(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_nas_compare_json_and_table(tmp_path, capsys):
    a = make_run(tmp_path, "a", n=10, seed=4)
    b = make_run(tmp_path, "b", n=10, seed=5)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    cmp = compare_runs(a, b)
    assert data["hypervolume_ratio"] == pytest.approx(cmp.ratio)
    assert [r["trial"] for r in data["a"]["front"]] == [t.number for t in cmp.front_a]
    assert data["reference"] == [0.0, 2e9]
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "hypervolume ratio" in out.lower() and "reference" in out.lower()


def test_trial_counts_by_hand():
    """The one counting rule (results.run_dir): what counts as trained, interrupted, running."""
    from results.run_dir import count_trials, trial_status

    trials = [
        ("complete", {"trained": True}),
        ("pruned", {"trained": True}),
        ("failed", {"trained": True}),  # training raised
        ("failed", {"interrupted": True}),  # a killed search left it running; --resume re-queued it
        ("failed", {"trained": False}),  # an architecture the builder rejected: never trained
        ("infeasible", {"trained": False}),
        ("duplicate", {"trained": False}),
        ("running", {}),
        ("waiting", {}),  # queued: counted with running
    ]
    assert count_trials(trials) == {
        "complete": 1, "pruned": 1, "failed": 3, "running": 2, "infeasible": 1, "duplicate": 1,
        "total": 9, "interrupted": 1, "trained": 3,
    }  # fmt: skip
    # a RUNNING trial with a stale status attr is running; a study not written by nas search is read by state
    assert trial_status("RUNNING", {"status": "complete"}, {}) == "running"
    assert trial_status("COMPLETE", {}, {"macs": 5.0}) == "infeasible"
    assert trial_status("COMPLETE", {}, {"macs": -5.0}) == "complete"
    assert trial_status("PRUNED", {}, {}) == "pruned" and trial_status("FAIL", {}, {}) == "failed"


def test_front_objectives_never_mix_measured_and_predicted_latency():
    from dataclasses import replace

    from results.pareto import front_objectives

    # (acc, MACs, predicted ms): 1 is slower than 0 at equal accuracy and MACs, so in three objectives 0
    # dominates 1; 2 trades MACs for accuracy; 3 is pruned and never counts
    trials = [record(0, 0.8, 100, latency=5.0), record(1, 0.8, 100, latency=6.0), record(2, 0.9, 300, latency=4.0),
              record(3, 0.99, 10, status="pruned", state="PRUNED", latency=1.0)]  # fmt: skip
    assert front_objectives(("acc", "macs"), trials) == ("acc", "macs")
    assert front_objectives(("acc",), trials) == ("acc", "macs")  # MACs always: the budget constrains every run
    objs = front_objectives(("acc", "macs", "latency"), trials)
    assert objs == ("acc", "macs", "latency_predicted")
    assert [t.number for t in pareto_front(trials, objs)] == [0, 2]
    assert [t.number for t in pareto_front(trials, ("acc", "macs"))] == [0, 1, 2]  # a tie in two objectives
    # only the front measured (as nas search does): still predicted for all, the same front
    measured = [replace(trials[0], latency_ms_measured=9.0), trials[1], replace(trials[2], latency_ms_measured=2.0),
                trials[3]]  # fmt: skip
    assert front_objectives(("acc", "latency"), measured) == ("acc", "macs", "latency_predicted")
    # every eligible trial measured: measured latency decides (1 is now faster than 0 and dominates it)
    every = [replace(t, latency_ms_measured=m) for t, m in zip(measured, (9.0, 7.0, 2.0, None))]
    objs = front_objectives(("acc", "latency"), every)
    assert objs == ("acc", "macs", "latency_measured")
    assert [t.number for t in pareto_front(every, objs)] == [1, 2]

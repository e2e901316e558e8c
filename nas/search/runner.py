"""Run a search: validate, take the run directory, start Ray, run Tune, finish with the front.

Order matters for the promises the command makes:

1. Everything the user gave is validated (settings, space, budget against the space's smallest
   architecture, data path, latency device) before the run directory or Ray is touched.
2. Ray starts (local, bound to 127.0.0.1 with no dashboard; or ``--address``). A cluster that
   cannot be reached is a one-line error and the run directory is still untouched.
3. The run directory is locked (a second search on it is refused), then created or resumed.
4. Tune runs the trials the study still needs; the Optuna study is the record of the search (in
   the run's journal file, or in the database given with ``--storage``: `storage.RunStorage`).
5. The Pareto front is re-measured (latency), exported and printed; Ray is shut down.

Resume: the Optuna study (journal flushed at every tell, or database) is the source of truth, not Tune's
experiment checkpoint. Tune's ``Tuner.restore`` re-runs trials that were told after its last
checkpoint (training them twice and failing with ``UpdateFinishedTrialError``) and cannot raise
``num_samples``; so each invocation runs a fresh Tune experiment ``tune/segment-K`` for the trials
still missing, after trials left RUNNING by a killed search are marked FAIL ("interrupted") and
their architectures re-enqueued. A finished run resumed with a larger ``--trials`` is extended
the same way. In a database the driver keeps Optuna heartbeats on its running trials; a resume
first waits for those of RUNNING trials to lapse (`storage.wait_for_lapsed_heartbeats`), so it
never takes over trials that another live search is training.

A database that goes away mid-search (the server stopped, the network gone) ends the search as a
full disk does: one line, ``error: lost the study's database URL (what happened); the run is
interrupted: continue with nas search --resume --out RUN once it is reachable`` (the URL without
its password), run.json ``interrupted`` with that first part as its ``error``, exit status 2 (the
CLI's status for one-line errors), Ray shut down. Whichever part meets the outage first notes it
on the searcher's `storage.Outage` without raising or logging (the searcher's callbacks, the
heartbeat thread, Tune's log records); a Tune stopper then ends the experiment at once, and
whatever database error still reaches `run` is told apart by `storage.connection_error`. The
trials it was training stay RUNNING in the study: the resume marks them interrupted and re-queues
them, as after a kill.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from search_space import SearchSpace
from search_space.errors import DiskFullError, UserError
from search_space.files import free_space, is_disk_full
from search_space.text import printable
from search_space.yaml_io import read_text_file

from search_space.units import format_macs
from . import preflight
from results.run_dir import RunDir, default_run_dir, now_iso, space_digest
from .settings import (
    SearchSettings,
    check_space_fits,
    load_space,
    new_settings,
    resumed_settings,
)
from results.storage import DatabaseLost, Heartbeats, Outage, RunStorage, connection_error, database_lost, live_trials

OBJECT_STORE_BYTES = 256 * 1024**2  # the trials exchange only small dicts; keep Ray's store modest


@dataclass
class Plan:
    """Everything validated; nothing written yet."""

    settings: SearchSettings
    space: SearchSpace
    space_text: str
    run_dir: RunDir
    resume: bool
    stored: dict[str, Any] | None
    num_classes: int
    predictor: Any = None
    storage: RunStorage | None = None  # where the study lives (None: the run's journal, as read from run.json)

    @property
    def study_storage(self) -> RunStorage:
        return self.storage if self.storage is not None else RunStorage(self.run_dir)


# -- 1. validation ----------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> Plan:
    from .faults import hooks_from_env

    if args.resume and args.out is None:
        raise UserError("--resume needs --out RUN_DIR (the run directory to continue)")
    storage_url, study_name = getattr(args, "storage", None), getattr(args, "study_name", None)
    if args.resume and study_name is not None:
        raise UserError("--study-name names the study of a new run; a resumed run keeps its own (run.json)")
    hooks = hooks_from_env()  # a malformed testing hook is refused now, before anything starts
    if hooks:
        shown = ", ".join(f"{k}={v}" for k, v in hooks.items())
        print(f"warning: testing hooks are set ({shown}): this search fails or pauses on purpose", file=sys.stderr)
    run_dir = RunDir(Path(args.out) if args.out is not None else default_run_dir())
    stored = None
    if run_dir.in_use():  # first: the most useful thing to say about a directory a search holds
        raise UserError(f"{run_dir.path}: run directory is in use by another nas search")
    if args.resume:
        stored = run_dir.check_resumable()
        settings = resumed_settings(stored["settings"], args)
        preflight.check_resume(run_dir, stored, settings)  # values, record directories: nothing written yet
        space = SearchSpace.load(run_dir.space_yaml)  # the run's own copy: one-line errors if damaged
        space_text = read_text_file(run_dir.space_yaml, "search space file")
        recorded = stored.get("space_sha256")
        if recorded and recorded != space_digest(space_text):
            raise UserError(f"{run_dir.space_yaml}: edited since the run started; a resumed search must search the "
                            "same space (restore the file, or start a new run with --space)")  # fmt: skip
        storage = RunStorage.of_run(run_dir, stored, storage_url)
    else:
        settings = new_settings(args)
        space = load_space(settings.space)
        space_text = (
            resources.files("search_space").joinpath("spaces/default.yaml").read_text()
            if settings.space == "default"
            else read_text_file(settings.space, "search space file")
        )
        run_dir.check_new()
        storage = RunStorage.for_new_run(run_dir, storage_url, study_name)  # the URL parsed, not opened yet
    check_space_fits(settings, space)
    if run_dir.in_use():
        raise UserError(f"{run_dir.path}: run directory is in use by another nas search")
    num_classes = check_data(settings)
    predictor = make_predictor(settings, space) if settings.uses_latency else None
    # last, as it may wait for heartbeats: the storage is reachable, the study name free (a new
    # run) or the study reads end to end and no other search drives it (a resume). Writes nothing.
    if args.resume:
        study = storage.check_resume(stored, lambda line: print(line, file=sys.stderr, flush=True))  # type: ignore[arg-type]
        preflight.check_study(run_dir, stored, study, storage.describe())  # type: ignore[arg-type]
    else:
        storage.check_new()
    return Plan(settings, space, space_text, run_dir, bool(args.resume), stored, num_classes, predictor, storage)


def check_data(settings: SearchSettings) -> int:
    """Load the proxy data once here: a bad spec or path fails before Ray starts."""
    from train_proxy.data import load_data

    bundle = load_data(settings.data, settings.proxy_resolution, fraction=settings.data_fraction, seed=settings.seed)
    lowest = settings.rung_ladder()[0]
    if lowest.data_fraction < settings.data_fraction:  # each rung below sees RUNG_GROWTH x fewer images
        low = load_data(settings.data, settings.proxy_resolution, fraction=lowest.data_fraction, seed=settings.seed)
        n_train = len(low.train)
        if n_train < 2 * low.num_classes:
            raise UserError(f"--rungs {settings.rungs}: the lowest rung would train on {n_train} image(s) of "
                            f"{low.num_classes} classes ({lowest.data_fraction:.3g} of the training split); "
                            "use fewer rungs or a larger --data-fraction")  # fmt: skip
    return int(bundle.num_classes)


def make_predictor(settings: SearchSettings, space: SearchSpace) -> Any:
    from train_proxy.latency_table import LatencyPredictor

    # CPU time (not wall time) for the table: robust to other processes on a shared machine.
    if settings.latency_table is not None:  # the target's table: it must cover every candidate
        predictor = LatencyPredictor.from_table(settings.latency_table)
        predictor.require_cover(space)
    else:
        clock = "cpu" if settings.device == "cpu" else "wall"
        predictor = LatencyPredictor.for_device(settings.device, threads=1, batch_size=1, clock=clock)
    if settings.latency_ms is not None:
        smallest_cfg, smallest = space.smallest()
        ms = predictor.predict(smallest_cfg)
        if ms > settings.latency_ms:
            raise UserError(
                f"no architecture of the space is likely to meet --latency-ms {settings.latency_ms:g}: its smallest "
                f"({format_macs(smallest.macs)} MACs) is predicted at {ms:.2f} ms ({predictor.describe()})"
            )
    return predictor


# -- 2. Ray -----------------------------------------------------------------------------------


def start_ray(address: str | None) -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # trials/ holds the metrics
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from .ray_local import start_local_ray

    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    try:
        if address is None:
            # address="local" on 127.0.0.1 for real (ray.init alone would listen on every interface),
            # and a watchdog that ends Ray's agents when the driver is killed: ray_local.py says why
            start_local_ray(OBJECT_STORE_BYTES, **quiet)
        else:
            host = address.rpartition(":")[0]
            extra = {"_node_ip_address": "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {}
            ray.init(address=address, **extra, **quiet)
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(f"cannot start or reach {where} ({str(exc).splitlines()[0][:200]})") from None


@dataclass(frozen=True)
class Resources:
    concurrency: int
    threads: int
    gpus_per_trial: float
    cluster_cpus: int
    cluster_gpus: float
    nodes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_resources(concurrency: int | None, threads: int | None) -> Resources:
    """Trials per cluster: one CPU thread each by default; GPUs only where the cluster has them."""
    import ray

    total = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    cpus = max(1, int(total.get("CPU", 1)))
    gpus = float(total.get("GPU", 0.0))
    biggest_node = max((int(n["Resources"].get("CPU", 0)) for n in alive), default=cpus)
    if concurrency is None:  # two small proxies share a GPU well
        concurrency = max(1, min(cpus, int(gpus * 2))) if gpus > 0 else cpus
    threads = threads or max(1, cpus // concurrency)
    if threads > biggest_node:
        raise UserError(f"--threads {threads} exceeds the CPUs of the largest Ray node ({biggest_node})")
    # A trial asking for a GPU on a cluster without one would wait forever, silently.
    gpus_per_trial = 0.0 if gpus <= 0 else round(min(1.0, gpus / concurrency), 3)
    return Resources(concurrency, threads, gpus_per_trial, cpus, gpus, len(alive))


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """Live counts and the best trial so far (rich on a terminal, one line per trial otherwise)."""

    def __init__(self, target: int, counts: dict[str, int], best: tuple[float, int] | None, out: Any) -> None:
        self.target, self.counts, self.best = target, dict(counts), best
        self.started = time.monotonic()
        self.out = out
        self.live: Any = None
        self.running = 0
        self.on_change: Any = None

    def renderable(self) -> Any:
        from rich.text import Text

        c = self.counts
        done = c["trained"]
        best = f"{self.best[0]:.4f} @ {format_macs(self.best[1])}" if self.best else "-"
        elapsed = time.monotonic() - self.started
        sep = "\n" if self.out.is_terminal else "  |  "  # two short lines on a terminal, one line in a log
        return Text(
            f"trained {done}/{self.target}: complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}, "
            f"running {self.running}{sep}infeasible {c['infeasible']} (never trained), duplicate {c['duplicate']}, "
            f"best acc {best}, {elapsed:.0f}s"
        )

    def __enter__(self) -> Progress:
        if self.out.is_terminal:
            from rich.live import Live

            self.live = Live(self.renderable(), console=self.out, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.renderable())
            self.live.__exit__(*exc)

    def event(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "start":
            self.running += 1
        elif kind in ("complete", "pruned", "failed", "infeasible", "duplicate"):
            self.counts[kind] += 1
            if info.get("trained"):
                self.running = max(0, self.running - 1)
                self.counts["trained"] += 1
            if kind == "complete" and info.get("val_acc") is not None:
                if self.best is None or info["val_acc"] > self.best[0]:
                    self.best = (float(info["val_acc"]), int(info["macs"]))
        if self.live is not None:
            self.live.update(self.renderable())
        elif kind in ("complete", "pruned", "failed") and info.get("trained"):
            acc = info.get("val_acc")
            detail = f"acc {acc:.4f}" if acc is not None else (info.get("reason") or "")
            self.out.print(f"trial {info['number']}: {kind} {printable(detail)}", highlight=False)
            self.out.print(self.renderable(), highlight=False)
        if kind == "exhausted":
            console = self.live.console if self.live is not None else self.out
            console.print(f"stopping: {info['skips']} infeasible or duplicate candidates in a row", highlight=False)
        if self.on_change is not None and kind in ("complete", "pruned", "failed", "infeasible", "duplicate"):
            self.on_change()


def make_callback(searcher: Any) -> Any:
    from ray.tune import Callback

    class ErrorsToSearcher(Callback):
        """Hands Tune's error text and retries to the searcher (it tells Optuna why a trial failed)."""

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            searcher.on_trial_retry(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            searcher.on_trial_error_text(trial.trial_id, _error_line(trial))

    return ErrorsToSearcher()


def _error_line(trial: Any) -> str | None:
    try:
        error = trial.get_error()
    except Exception:  # noqa: BLE001 - the text is a nicety; never fail the search over it
        return None
    if error is None:
        return None
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None


# -- 3.-5. the search --------------------------------------------------------------------------


def run(plan: Plan, console: Any, err_console: Any) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    s = plan.settings
    started = time.monotonic()
    err_console.print(f"run directory: {printable(plan.run_dir.path)}", highlight=False)
    if plan.study_storage.is_database:  # the URL as run.json records it: never the password
        err_console.print(printable(f"study {plan.study_storage.study_name} in {plan.study_storage.describe()}"), highlight=False)
    if plan.predictor is not None and not plan.predictor.frozen:  # every block is timed before any trial runs
        from train_proxy.latency_warmup import warm_up

        warm_up(plan.predictor, plan.space, lambda line: err_console.print(line, highlight=False))
    previous_term = signal.signal(signal.SIGTERM, _sigterm_to_sigint)
    _terminated.clear()
    try:
        try:
            with _signals_deferred(), _ray_keeps_our_sigterm():  # Ray's start is not interruptible safely
                start_ray(s.address)
        except SystemExit as exc:  # Ray's own SIGTERM handler (exit 15), should a Ray release bypass the guard
            if exc.code != signal.SIGTERM:
                raise
            _terminated.append(signal.SIGTERM)
            raise KeyboardInterrupt from None
        res = plan_resources(s.concurrency, s.threads)
        s = s.with_overrides(concurrency=res.concurrency)
        with plan.run_dir.locked():
            try:
                return _search(plan, s, res, started, console, err_console)
            except KeyboardInterrupt:
                _mark(plan.run_dir, "interrupted")
                raise
            except BaseException as exc:
                lost = _database_lost(plan.study_storage, exc)
                if lost is not None:  # resumable once the database is back: one line, no traceback
                    _mark(plan.run_dir, "interrupted", lost.short)
                    raise lost from None
                if is_disk_full(exc):
                    _mark(plan.run_dir, "interrupted", "disk full")  # best effort: the disk is full
                    raise _disk_full(plan.run_dir, str(exc)) from None
                _mark(plan.run_dir, "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
                raise
    except KeyboardInterrupt:
        if _terminated:  # SIGTERM: the conventional 128 + 15
            print("terminated", file=sys.stderr)
            raise SystemExit(143) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        import ray

        ray.shutdown()


def _database_lost(where: RunStorage, exc: BaseException) -> DatabaseLost | None:
    """``exc`` as the one line of a search whose database went away, or None (another error)."""
    if isinstance(exc, DatabaseLost):
        return exc
    if not where.is_database or not isinstance(exc, Exception):
        return None
    cause = connection_error(exc)
    return None if cause is None else database_lost(where, cause)


def _disk_full(rd: RunDir, detail: str) -> DiskFullError:
    free = free_space(rd.path) or "free space unknown"
    return DiskFullError(f"{rd.path}: disk full ({free}; {detail}); free some space, then continue with "
                         f"nas search --resume --out {rd.path}")  # fmt: skip


_terminated: list[int] = []  # set when SIGTERM (not Ctrl-C) ended the search


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then act on the first one that came."""
    received: list[int] = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    saved = signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
    if received:
        if received[0] == signal.SIGTERM:
            _terminated.append(signal.SIGTERM)
        raise KeyboardInterrupt


@contextmanager
def _ray_keeps_our_sigterm() -> Iterator[None]:
    """Keep the SIGTERM handler in place while Ray starts.

    ray.init installs a handler of its own half-way through its start (``sys.exit(15)``, and the
    head node's one that kills its processes). A SIGTERM landing after that, before the deferral
    restored ours, raised SystemExit wherever the main thread was: once inside logging's lock
    release, where Python can only print it and go on, so the search ran to its end with a
    traceback on stderr. Ray installs both through one function, which does nothing here.
    """
    try:
        import ray._private.utils as ray_utils
    except ImportError:  # pragma: no cover - Ray is a dependency; a release without the module
        yield
        return
    install = getattr(ray_utils, "set_sigterm_handler", None)
    if install is None:  # a Ray release that installs it otherwise: the SystemExit fallback covers it
        yield
        return
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install


def _mark(rd: RunDir, status: str, error: str | None = None) -> None:
    """Record how a search ended early (best effort: never hide the original error)."""
    if not rd.is_run():
        return
    try:
        rd.update(status=status, **({"error": error} if error else {}))
    except Exception:  # noqa: BLE001
        pass


def _sigterm_to_sigint(signum: int, frame: Any) -> None:
    # Tune ends gracefully on SIGINT (one last experiment checkpoint); treat SIGTERM the same.
    _terminated.append(signum)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _search(plan: Plan, s: SearchSettings, res: Resources, started: float, console: Any, err_console: Any) -> int:
    """Steps 3-5 under the run's lock: the run record, the study, the trials, the front."""
    segment = _open_run(plan, s, res)
    storage = _open_study(plan, s, err_console)
    searcher, progress, outage = _make_searcher(plan, s, res, storage, segment, err_console)
    _train(plan, s, res, storage, searcher, progress, outage, segment, err_console)
    return _finish(plan, s, searcher, started, console, err_console)


def _open_run(plan: Plan, s: SearchSettings, res: Resources) -> int:
    """run.json of a new run, or a resumed one's updated; returns the segment (0 for a new run)."""
    rd = plan.run_dir
    if plan.resume:
        data = rd.read_run_json()
        resumes = data.get("resumes", []) + [{"command": list(sys.argv), "at": now_iso()}]
        rd.update(status="running", settings=s.to_json(), resumes=resumes, resources=res.to_json())
        return len(resumes)
    rd.check_new(locked=True)  # again, under the lock: another search may have started here meanwhile
    rd.create(s.to_json(), plan.space_text, plan.study_storage.record())
    rd.update(resources=res.to_json())
    return 0


def _open_study(plan: Plan, s: SearchSettings, err_console: Any) -> Any:
    """The study's storage, the study created (new run) or loaded with its interrupted trials
    marked failed and re-queued (resume)."""
    import optuna

    from .searcher import mark_interrupted

    where = plan.study_storage
    storage = where.open_for_search()
    if where.is_database:
        study = _database_study(where, storage, s, resume=plan.resume)
    if plan.resume:
        if not where.is_database:
            study = optuna.create_study(storage=storage, study_name=where.study_name, directions=s.directions,
                                        load_if_exists=True)  # fmt: skip
        interrupted = mark_interrupted(study)
        if interrupted:
            err_console.print(f"resume: {len(interrupted)} interrupted trial(s) marked failed and re-queued: {interrupted}",
                              highlight=False)  # fmt: skip
    return storage


def _make_searcher(plan: Plan, s: SearchSettings, res: Resources, storage: Any, segment: int,
                   err_console: Any) -> tuple[Any, Progress, Outage]:  # fmt: skip
    """The searcher over the study, its progress display (keeping run.json's counts fresh) and the
    outage note its database guard fills."""
    from results.run_dir import count_frozen

    from .searcher import NasSearcher, make_sampler
    from .status import count_study

    rd, where = plan.run_dir, plan.study_storage
    counts = count_study(storage, where.study_name)
    progress = Progress(s.trials, counts, _best(storage, where.study_name, rd, s), err_console)
    outage = Outage()  # the study's database went away (database storage only)
    searcher = NasSearcher(space=plan.space, settings=s, run_dir=rd, storage=storage,
                           sampler=make_sampler(s, segment), latency_predictor=plan.predictor,
                           threads_per_trial=res.threads, listener=progress.event, study_name=where.study_name,
                           outage=outage)  # fmt: skip
    last_write = [0.0]

    def write_counts() -> None:  # keep run.json's counts fresh for `nas runs` / `nas status`
        if time.monotonic() - last_write[0] > 2.0:
            last_write[0] = time.monotonic()
            # from the study itself: an unreachable database raises (the searcher notes the outage)
            # rather than reading as no trials at all
            rd.update(counts=count_frozen(searcher.study.get_trials(deepcopy=False)))

    progress.on_change = write_counts
    return searcher, progress, outage


def _train(plan: Plan, s: SearchSettings, res: Resources, storage: Any, searcher: Any, progress: Progress,
           outage: Outage, segment: int, err_console: Any) -> None:  # fmt: skip
    """Train the trials the study still needs (one Tune experiment); a lost database or a full disk
    ends it with one line."""
    where = plan.study_storage
    remaining = s.trials - searcher.trained_count()
    if remaining <= 0:
        err_console.print(f"nothing to train: the study already has {searcher.trained_count()} trained trial(s)",
                          highlight=False)  # fmt: skip
        return
    err_console.print(
        f"searching: {remaining} trial(s) to train, {res.concurrency} at a time, {res.threads} thread(s)"
        + (f" and {res.gpus_per_trial:g} GPU" if res.gpus_per_trial else "")
        + f" per trial, on {res.nodes} node(s) ({res.cluster_cpus} CPUs)",
        highlight=False,
    )
    try:
        with progress, Heartbeats(storage, searcher.live_trial_ids, outage):  # heartbeats: database storage only
            run_tune(searcher, s, res, plan.run_dir, segment, remaining)
    except Exception:
        if not (outage and where.is_database):
            raise
    if outage and where.is_database:  # nothing more can be told to the study, or read from it
        raise database_lost(where, outage.cause)  # type: ignore[arg-type]
    if searcher.disk_full:
        raise DiskFullError(searcher.disk_full)


def _finish(plan: Plan, s: SearchSettings, searcher: Any, started: float, console: Any, err_console: Any) -> int:
    """The front (re-measured where latency counts), its files and cards, run.json's last word, the
    closing lines. Returns the exit status (130: the run is unfinished)."""
    from results.run_dir import count_frozen

    from . import pareto

    rd = plan.run_dir
    trained = searcher.trained_count()
    interrupted_now = bool(searcher.live) or (trained < s.trials and not searcher.exhausted)
    status = "interrupted" if interrupted_now else "finished"
    members = pareto.front(searcher.study, s, rd)
    if s.uses_latency and members and not interrupted_now and s.latency_table is None:  # no target here to time
        err_console.print(f"measuring the latency of {len(members)} Pareto architecture(s) on {s.device}", highlight=False)
        pareto.measure_front(members, s)
    pareto.export(rd, members, searcher.study)
    counts = count_frozen(searcher.study.get_trials(deepcopy=False))
    wall = time.monotonic() - started
    rd.update(status=status, counts=counts, pareto=pareto.summary(members), last_wall_seconds=round(wall, 1))
    pareto.write_cards(rd, members, plan.study_storage)  # after run.json says how the search ended: the cards quote it
    console.print(pareto.table(members, s))
    console.print(
        f"{status}: {trained} trained (complete {counts['complete']}, pruned {counts['pruned']}, failed "
        f"{counts['failed']}), infeasible {counts['infeasible']} never trained, duplicate {counts['duplicate']}; "
        f"{wall:.0f}s. Configs: {printable(rd.pareto_dir)}/",
        highlight=False,
    )
    if interrupted_now:
        console.print(f"continue with: nas search --resume --out {printable(rd.path)}", highlight=False)
        return 130
    return 0


def run_tune(
    searcher: Any, s: SearchSettings, res: Resources, rd: RunDir, segment: int, trials: int, *, early_stopping: bool = True
) -> None:
    """One Tune experiment (``tune/segment-K``) training ``trials`` architectures from ``searcher``.

    ``early_stopping=False`` runs every trial through all rungs (benchmarks comparing equal work).
    """
    from ray import tune

    from .faults import hooks_from_env
    from .objective import search_trial

    trainable = tune.with_resources(
        tune.with_parameters(search_trial, settings=s.to_json(), hooks=hooks_from_env()),
        resources={"cpu": res.threads, "gpu": res.gpus_per_trial},
    )
    scheduler = rung_scheduler(s) if early_stopping else None
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=res.concurrency,
            reuse_actors=True,  # ~10x trial throughput for short trials: no process start per trial
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"segment-{segment}",
            storage_path=str(rd.tune_dir.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            callbacks=[make_callback(searcher)],
            log_to_file=False,
            stop=make_stopper(searcher),
        ),
    )
    watch = _DiskFullLogFilter(searcher)
    handlers: list[Any] = [h for name in ("", "ray", "optuna") for h in logging.getLogger(name).handlers]
    handlers += [logging.getLogger(name) for name in _POOL_LOGGERS]  # their records may reach no handler but Python's last resort
    for handler in handlers:
        handler.addFilter(watch)
    try:
        tuner.fit()
    except Exception:
        if searcher.disk_full:  # Tune's own state files came out empty: the disk, not a bug
            raise DiskFullError(searcher.disk_full) from None
        raise
    finally:
        for handler in handlers:
            handler.removeFilter(watch)
    searcher.flush_pending()


def rung_scheduler(s: SearchSettings) -> Any:
    """Ray Tune's ASHA over the search's rungs (None with one rung: nothing to stop).

    A trial reports once per rung with ``budget`` = RUNG_GROWTH ** rung (`objective`), so ASHA's
    milestones (grace period 1, reduction factor RUNG_GROWTH, max_t the top rung's budget) fall
    exactly on the rungs: after each rung below the top, a trial goes on only when its accuracy
    is among the best 1/RUNG_GROWTH of the trials that reported that rung so far. ASHA gets its
    own metric and mode (the searcher's are not passed down)."""
    from ray.tune.schedulers import ASHAScheduler

    ladder = s.rung_ladder()
    if len(ladder) < 2:
        return None
    from results.settings import RUNG_GROWTH

    return ASHAScheduler(time_attr="budget", metric="val_acc", mode="max", grace_period=ladder[0].budget,
                         max_t=ladder[-1].budget, reduction_factor=RUNG_GROWTH)  # fmt: skip


# SQLAlchemy's connection pools log (with a traceback) a connection that could not be reset
# when it was given back: a database going away mid-query
_POOL_LOGGERS = tuple(f"sqlalchemy.pool.impl.{name}" for name in ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool"))


def make_stopper(searcher: Any) -> Any:
    """Ends the Tune experiment at once when the searcher's database is gone (`storage.Outage`):
    its trials cannot be told anyway (they stay RUNNING in the study; a resume re-queues them)."""
    from ray.tune.stopper import Stopper

    class StopOnOutage(Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return bool(getattr(searcher, "outage", None))

    return StopOnOutage()


class _DiskFullLogFilter(logging.Filter):
    """Tune logs a traceback each time it cannot save its experiment state (not what a run resumes
    from: the journal is). On a full disk, note it on the searcher (no new trials start, the runner
    ends with one line) instead of printing the same traceback again and again. A record about a
    lost database (whatever slipped past the searcher's own guard) is noted on its outage and
    dropped the same way."""

    def __init__(self, searcher: Any) -> None:
        super().__init__()
        self.searcher = searcher

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        outage = getattr(self.searcher, "outage", None)
        if exc is not None and outage is not None and connection_error(exc) is not None:
            if not record.name.startswith("sqlalchemy."):  # a pool's reset failure alone is no outage yet
                outage.note(exc)
            return False
        text = f"{record.getMessage()} {exc or ''}"
        if record.name.startswith("optuna") and "Caught an error from sqlalchemy" in text and outage is not None:
            return False  # Optuna retries a failed bulk query another way; a real outage is noted on its next error
        full = exc is not None and is_disk_full(exc)
        if full or "No space left on device" in text or "errno 28" in text.lower():
            self.searcher.disk_full = self.searcher.disk_full or "no space left for Ray Tune's state"
            return False
        return True


def _trial_name(trial: Any) -> str:
    """Tune's name for a trial: its Optuna number, as in RUN_DIR/trials/NNNNN."""
    return f"trial_{int(trial.config['number']):05d}"


def _database_study(where: RunStorage, storage: Any, s: SearchSettings, *, resume: bool) -> Any:
    """The run's study in its database: created by a new run (its name must still be free: two
    searches may have picked one at once), loaded by a resume, whose RUNNING trials must all have
    lapsed heartbeats (prepare() waited for that; a search started since then is refused)."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    try:
        study = optuna.create_study(storage=storage, study_name=where.study_name, directions=s.directions,
                                    load_if_exists=resume)  # fmt: skip
    except DuplicatedStudyError:
        raise UserError(f"study name '{where.study_name}' is already used by a different search in "
                        f"{where.describe()} (choose another --study-name)") from None  # fmt: skip
    if resume:
        alive = live_trials(study)
        if alive:
            raise UserError(f"study '{where.study_name}' in {where.describe()} is being run by another search "
                            f"(trial(s) {', '.join(map(str, sorted(alive.values())))} keep a live heartbeat)")  # fmt: skip
    else:  # which run a study belongs to, for anyone browsing a shared database (optuna-dashboard)
        study.set_user_attr("run_dir", str(where.run_dir.path.resolve()))
    return study


def _best(storage: Any, study_name: str, rd: RunDir, s: SearchSettings) -> tuple[float, int] | None:
    """The most accurate eligible trial so far (accuracy, MACs), for the progress line."""
    from results.run import rank_trials, trial_record

    from .status import study_trials

    records = [trial_record(t, rd.path, s) for t in study_trials(storage, study_name)]
    top = rank_trials([t for t in records if t.eligible], "acc")
    return (top[0].val_acc, top[0].macs) if top else None  # type: ignore[return-value]

"""Proxy fidelity: how well each cheap signal ranks architectures like a longer training does.

N architectures are drawn (seeded) from a search space. For each one this module computes the
cheap signals a search can rank by

* ``proxy``: validation accuracy after a short proxy training (``epochs_proxy`` epochs at
  ``proxy_resolution`` on ``proxy_fraction`` of the training split),
* ``synflow``, ``naswot``, ``gradnorm``: zero-cost scores at the proxy resolution,
* ``macs``, ``params``: analytic counts at the deploy resolution,

and a reference: validation accuracy after a longer training (``epochs_ref`` epochs at
``ref_resolution`` on all the data). Each signal is then compared with the reference by Kendall's
tau, Spearman's rho (``scipy.stats``) and the top-k overlap (the share of the reference's k best
architectures that the signal also puts in its k best), each with a percentile bootstrap interval
over architectures (`bootstrap_agreement`). Every signal is read as "larger predicts
better" (for MACs and params that is the "bigger is better" baseline zero-cost scores must beat).

Architectures are evaluated in parallel worker processes, one torch thread each (on a 2-core
machine two single-threaded trainings finish sooner than one two-threaded one, and more threads
than free cores slow torch down badly). Trainings use the same seed for every architecture, so
rankings reflect architectures, not seeds; their warm-up is a fifth of the run (at most an epoch).

Cost: one reference epoch at full width on Fashion-MNIST's 48,000 training images takes 5-15
CPU-minutes per architecture of the default space (measured: docs/fidelity.md), so a study is a
matter of an hour on 2 cores; `benchmarks/bench_proxy_fidelity.py` is the study behind the
search's default proxy. On digits the reference accuracies crowd at 0.94-0.98 and rankings are
mostly noise.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from search_space import ArchConfig, SearchSpace, analytic_cost
from search_space.errors import UserError

from . import proxy_defaults as D

SIGNALS = ("proxy", "synflow", "naswot", "gradnorm", "macs", "params")
ZERO_COST = ("synflow", "naswot", "gradnorm")


@dataclass(frozen=True)
class FidelitySettings:
    """One study. The proxy is the default proxy (`train_proxy.proxy_defaults`), the reference its
    named reference (REF_*: the full network on all the data); `nas fidelity` takes its defaults
    from here."""

    n: int = 6
    seed: int = D.SEED
    epochs_proxy: int = D.EPOCHS
    epochs_ref: int = D.REF_EPOCHS
    proxy_resolution: int = D.RESOLUTION
    ref_resolution: int = D.REF_RESOLUTION
    proxy_fraction: float = D.DATA_FRACTION
    proxy_width: float = D.WIDTH  # width multiplier of the proxy model (the reference trains at full width)
    top_k: int | None = None  # default: max(1, n // 3)
    data: str = "digits"
    batch_size: int = D.BATCH_SIZE
    score_batch_size: int = D.SCORE_BATCH_SIZE
    threads: int = 1
    workers: int = 2
    space: str | None = None  # a search space YAML; None: the packaged default

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"fidelity: {msg}")

        need(self.n >= 3, f"needs at least 3 architectures to rank, got --trials {self.n}")
        need(self.epochs_proxy >= 1 and self.epochs_ref >= 1, "epochs must be >= 1")
        for name in ("proxy_resolution", "ref_resolution"):
            value = getattr(self, name)
            need(value >= 32 and value % 32 == 0, f"{name.replace('_', ' ')} {value} is not a positive multiple of 32")
        why = D.fraction_problem(self.proxy_fraction)
        need(why is None, f"data fraction {why}, got {self.proxy_fraction}")
        why = D.width_problem(self.proxy_width)
        need(why is None, f"proxy width {why}, got {self.proxy_width}")
        why = D.batch_size_problem(self.batch_size)
        need(why is None, f"batch size {why}, got {self.batch_size}")
        need(
            self.top_k is None or 1 <= self.top_k < self.n, f"top-k must be in [1, n), got --top {self.top_k} for n={self.n}"
        )
        need(self.threads >= 1 and self.workers >= 1, "threads and workers must be >= 1")
        need(
            self.epochs_ref > self.epochs_proxy
            or self.ref_resolution > self.proxy_resolution
            or self.proxy_fraction < D.FULL_DATA_FRACTION
            or self.proxy_width < D.FULL_WIDTH,
            "the reference must train longer, at a higher resolution or on more data than the proxy",
        )

    @property
    def k(self) -> int:
        return self.top_k if self.top_k is not None else max(1, self.n // 3)


@dataclass
class FidelityReport:
    settings: FidelitySettings
    architectures: list[dict[str, Any]]  # per architecture: config, signals, reference, timings
    signals: dict[str, dict[str, Any]]  # per signal: kendall_tau, spearman_rho, top_k_overlap, ...
    seconds: float
    excluded: list[int] = field(default_factory=list)  # indices whose reference training failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": {**asdict(self.settings), "top_k": self.settings.k},
            "signals": self.signals,
            "architectures": self.architectures,
            "excluded": self.excluded,
            "seconds": self.seconds,
        }


# -- sampling and evaluation ----------------------------------------------------------------


def sample_architectures(settings: FidelitySettings) -> list[ArchConfig]:
    """``n`` distinct architectures drawn with one seeded generator."""
    space = SearchSpace.load(settings.space) if settings.space else SearchSpace.default()
    rng = random.Random(settings.seed)
    cfgs: list[ArchConfig] = []
    for _ in range(50 * settings.n):
        cfg = space.sample(rng)
        if cfg not in cfgs:
            cfgs.append(cfg.replace(name=f"arch{len(cfgs)}"))
        if len(cfgs) == settings.n:
            return cfgs
    raise UserError(f"fidelity: the space yields fewer than {settings.n} distinct architectures")


def evaluate_architecture(index: int, cfg: ArchConfig, settings: FidelitySettings) -> dict[str, Any]:
    """Every signal and the reference accuracy of one architecture (runs in a worker process)."""
    from .trainer import ProxySpec, train_proxy, warmup_epochs
    from .zero_cost import zero_cost_scores

    cost = analytic_cost(cfg)
    row: dict[str, Any] = {"index": index, "name": cfg.name, "macs": cost.macs, "params": cost.params}
    seconds: dict[str, float] = {"macs": 0.0, "params": 0.0}

    spec = ProxySpec(resolution=settings.proxy_resolution, epochs=settings.epochs_proxy,
                     batch_size=settings.batch_size, data_fraction=settings.proxy_fraction,
                     width_multiplier=settings.proxy_width,
                     warmup_epochs=warmup_epochs(settings.epochs_proxy), seed=settings.seed,
                     threads=settings.threads, device="cpu")  # fmt: skip
    proxy = train_proxy(cfg, spec, settings.data)
    row["proxy"] = proxy.val_acc if proxy.status == "ok" else math.nan
    row["proxy_status"] = proxy.status if proxy.status == "ok" else f"{proxy.status}: {proxy.failure_reason}"
    seconds["proxy"] = proxy.train_seconds

    for name in ZERO_COST:
        start = time.perf_counter()
        row[name] = zero_cost_scores(cfg, (name,), data=settings.data, resolution=settings.proxy_resolution,
                                     batch_size=settings.score_batch_size, seed=settings.seed,
                                     threads=settings.threads)[name]  # fmt: skip
        seconds[name] = time.perf_counter() - start

    ref_spec = ProxySpec(resolution=settings.ref_resolution, epochs=settings.epochs_ref,
                         batch_size=settings.batch_size, warmup_epochs=warmup_epochs(settings.epochs_ref),
                         width_multiplier=D.FULL_WIDTH, data_fraction=D.FULL_DATA_FRACTION,  # the full network
                         seed=settings.seed, threads=settings.threads, device="cpu")  # fmt: skip
    ref = train_proxy(cfg, ref_spec, settings.data)
    row["reference"] = ref.val_acc if ref.status == "ok" else math.nan
    row["reference_status"] = ref.status if ref.status == "ok" else f"{ref.status}: {ref.failure_reason}"
    seconds["reference"] = ref.train_seconds
    row["seconds"] = seconds
    row["blocks"] = [f"{s.block}x{s.depth}" for s in cfg.stages]
    row["config"] = cfg.to_dict()
    return row


# -- rank agreement -------------------------------------------------------------------------


def top_k_overlap(signal: list[float], reference: list[float], k: int) -> float:
    """|top-k by signal  &  top-k by reference| / k (ties broken by position, deterministically)."""

    def top(values: list[float]) -> set[int]:
        return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])

    return len(top(signal) & top(reference)) / k


def rank_agreement(signal: list[float], reference: list[float], k: int) -> dict[str, Any]:
    """Kendall tau, Spearman rho (with p-values) and top-k overlap over the pairs that are finite."""
    from scipy import stats

    pairs = [(s, r) for s, r in zip(signal, reference) if math.isfinite(s) and math.isfinite(r)]
    out: dict[str, Any] = {"n": len(pairs), "kendall_tau": None, "kendall_p": None,
                           "spearman_rho": None, "spearman_p": None, "top_k_overlap": None}  # fmt: skip
    if len(pairs) < 3:
        return out
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(xs)) > 1 and len(set(ys)) > 1:  # a constant ranking has no correlation
        tau = stats.kendalltau(xs, ys)
        rho = stats.spearmanr(xs, ys)
        out.update(kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue),
                   spearman_rho=float(rho.statistic), spearman_p=float(rho.pvalue))  # fmt: skip
    out["top_k_overlap"] = top_k_overlap(xs, ys, min(k, len(pairs)))
    return out


def bootstrap_agreement(
    signal: list[float], reference: list[float], k: int, *, resamples: int = 2000, level: float = 0.9, seed: int = 0
) -> dict[str, float | None]:
    """Percentile bootstrap intervals (architectures resampled with replacement) of Kendall tau,
    Spearman rho and the top-k overlap: ``<name>_low`` / ``<name>_high`` at ``level``.

    A resample whose signal or reference is constant has no rank correlation and is left out of
    that statistic's interval (the overlap still counts it)."""
    import numpy as np
    from scipy import stats

    pairs = [(s, r) for s, r in zip(signal, reference) if math.isfinite(s) and math.isfinite(r)]
    names = ("kendall_tau", "spearman_rho", "top_k_overlap")
    out: dict[str, float | None] = {f"{n}_{end}": None for n in names for end in ("low", "high")}
    if len(pairs) < 3:
        return out
    xs, ys = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(resamples):
        pick = rng.integers(0, len(xs), len(xs))
        x, y = xs[pick], ys[pick]
        # duplicated architectures are ties, which is what a resample of them means
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            draws["kendall_tau"].append(float(stats.kendalltau(x, y).statistic))
            draws["spearman_rho"].append(float(stats.spearmanr(x, y).statistic))
        draws["top_k_overlap"].append(top_k_overlap(list(x), list(y), min(k, len(x))))
    tail = (1.0 - level) / 2 * 100
    for name, values in draws.items():
        if values:
            out[f"{name}_low"], out[f"{name}_high"] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return out


def bootstrap_tau_difference(
    signal: list[float], baseline: list[float], reference: list[float], *, resamples: int = 2000,
    level: float = 0.9, seed: int = 0,
) -> dict[str, float | None]:
    """Paired bootstrap of Kendall tau(signal, reference) - tau(baseline, reference): the same
    resampled architectures score both, so the interval says whether one signal ranks better than
    another rather than whether each is above zero. ``ahead`` is the share of resamples where the
    signal's tau is higher. Resamples where either tau is undefined are left out."""
    import numpy as np
    from scipy import stats

    rows = [t for t in zip(signal, baseline, reference) if all(math.isfinite(v) for v in t)]
    out: dict[str, float | None] = {"difference": None, "difference_low": None, "difference_high": None, "ahead": None}
    if len(rows) < 3:
        return out
    xs, bs, ys = (np.array(col) for col in zip(*rows))
    out["difference"] = float(stats.kendalltau(xs, ys).statistic - stats.kendalltau(bs, ys).statistic)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        pick = rng.integers(0, len(ys), len(ys))
        x, b, y = xs[pick], bs[pick], ys[pick]
        if np.ptp(x) > 0 and np.ptp(b) > 0 and np.ptp(y) > 0:
            diffs.append(float(stats.kendalltau(x, y).statistic - stats.kendalltau(b, y).statistic))
    if diffs:
        tail = (1.0 - level) / 2 * 100
        out["difference_low"], out["difference_high"] = (float(v) for v in np.percentile(diffs, [tail, 100 - tail]))
        out["ahead"] = float(np.mean(np.array(diffs) > 0))
    return out


# -- the study ------------------------------------------------------------------------------


def run_fidelity(
    settings: FidelitySettings, progress: Callable[[dict[str, Any]], None] | None = None
) -> FidelityReport:
    """Evaluate every architecture (in ``settings.workers`` processes) and compare the signals."""
    start = time.perf_counter()
    cfgs = sample_architectures(settings)
    rows: list[dict[str, Any]] = []
    workers = min(settings.workers, len(cfgs))
    if workers == 1:
        for i, cfg in enumerate(cfgs):
            rows.append(evaluate_architecture(i, cfg, settings))
            if progress:
                progress(rows[-1])
    else:
        # spawn: a forked child of a process that already ran OpenMP work can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(evaluate_architecture, i, cfg, settings) for i, cfg in enumerate(cfgs)]
            for future in as_completed(futures):
                rows.append(future.result())
                if progress:
                    progress(rows[-1])
    rows.sort(key=lambda r: r["index"])
    excluded = [r["index"] for r in rows if not math.isfinite(r["reference"])]
    reference = [r["reference"] for r in rows]
    signals = {}
    for name in SIGNALS:
        values = [float(r[name]) for r in rows]
        agreement = rank_agreement(values, reference, settings.k)
        agreement.update(bootstrap_agreement(values, reference, settings.k, seed=settings.seed))
        timing = [r["seconds"][name] for r in rows]
        agreement["seconds_per_arch"] = sum(timing) / len(timing)
        signals[name] = agreement
    signals_ref_seconds = sum(r["seconds"]["reference"] for r in rows) / len(rows)
    for row in rows:
        for key in ("proxy", "reference", *ZERO_COST):
            if not math.isfinite(row[key]):
                row[key] = None  # JSON has no NaN / infinity
    report = FidelityReport(settings, rows, signals, time.perf_counter() - start, excluded)
    report.signals["reference"] = {"seconds_per_arch": signals_ref_seconds}
    return report


# -- presentation ---------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_with_interval(agreement: dict[str, Any], name: str) -> str:
    """"+0.42 [+0.10, +0.71]": the statistic and its bootstrap interval, where there is one."""
    value, low, high = agreement.get(name), agreement.get(f"{name}_low"), agreement.get(f"{name}_high")
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:+.3f}"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def _si(value: float) -> str:
    """1.23G, 45.6M, 7.8k: counts of very different sizes in one column."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def format_table(report: FidelityReport) -> str:
    s = report.settings
    k = s.k
    lines = [
        f"{s.n} architectures (seed {s.seed}, {s.space or 'default space'}), data {s.data}; "
        f"proxy: {s.epochs_proxy} epoch(s) at {s.proxy_resolution} px, width x{s.proxy_width:g}, on "
        f"{s.proxy_fraction:.0%} of the data; reference: {s.epochs_ref} epoch(s) at {s.ref_resolution} px, full width, "
        "all the data",
        "",
        f"{'arch':<7} {'blocks':<36} {'MACs':>7} {'params':>7} {'proxy':>6} {'synflow':>9} {'naswot':>7} "
        f"{'gradnorm':>8} {'ref':>6}",
    ]
    for r in report.architectures:
        lines.append(
            f"{r['name']:<7} {' '.join(r['blocks']):<36} {_si(r['macs']):>7} {_si(r['params']):>7} "
            f"{_fmt(r['proxy'], '.3f'):>6} {_fmt(r['synflow'], '.3g'):>9} {_fmt(r['naswot'], '.1f'):>7} "
            f"{_fmt(r['gradnorm'], '.3g'):>8} {_fmt(r['reference'], '.3f'):>6}"
        )
    lines += [
        "",
        f"{'signal':<9} {'Kendall tau [90% CI]':>22} {'Spearman rho [90% CI]':>22} {f'top-{k} overlap':>14} "
        f"{'s/arch':>8}",
    ]
    for name in SIGNALS:
        a = report.signals[name]
        overlap = "-" if a["top_k_overlap"] is None else f"{round(a['top_k_overlap'] * k)}/{k}"
        lines.append(
            f"{name:<9} {format_with_interval(a, 'kendall_tau'):>22} {format_with_interval(a, 'spearman_rho'):>22} "
            f"{overlap:>14} {a['seconds_per_arch']:>8.2f}"
        )
    lines.append(f"{'reference':<9} {'':>22} {'':>22} {'':>14} {report.signals['reference']['seconds_per_arch']:>8.2f}")
    if report.excluded:
        lines.append(f"excluded (reference training failed): {', '.join(f'arch{i}' for i in report.excluded)}")
    lines.append(f"total {report.seconds:.0f} s")
    return "\n".join(lines)

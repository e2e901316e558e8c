"""EfficientNet-style search for (alpha, beta, gamma): grid, constraint, proxy training, ranking.

Candidates are the grid points whose constant alpha*beta^1.5*gamma^2 lies within a tolerance of
the target (CMT: 2.5). Each candidate's phi=1 model is trained as a proxy and the candidates are
ranked by proxy validation accuracy. By default each phi=1 model's widths are first matched to
its MACs target (base x constant, within `scaling`'s MACs tolerance, 3%): applied mechanically,
rounding gives one candidate up to a third more MACs than another with the same constant, and the
proxy would rank compute, not how the compute is allocated between depth, width and resolution.

Proxy resolution: the base model would train at ``proxy_resolution``; a candidate trains at that
times its deploy-resolution gain (scaled resolution / base resolution, e.g. 256/224), rounded to
a multiple of 32. So a candidate's larger input is kept in the proxy rather than thrown away;
but the 32 px grid is coarse at low resolution (at 64 px only gains of >= 1.25 show), and the
report says when gamma was invisible to the proxy. On the embedded digits data (8x8 images
upsampled) a larger input adds no image detail, only larger feature maps: use real data
(``cifar10:PATH``, ``imagefolder:PATH``) to judge resolution.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from search_space import ArchConfig, UserError
from search_space.transforms import round_resolution

from train_proxy import proxy_defaults as D

from .compound import DEFAULT_TOLERANCE, Coefficients, Scaled, expand
from .family import format_table

DEFAULT_GRID = "alpha=1.1:1.4:0.1,beta=1.1:1.4:0.1,gamma=1.05:1.25:0.05"
DEFAULT_TARGET = 2.5  # CMT's quoted constant
DEFAULT_MAX_CANDIDATES = 4
MAX_GRID_POINTS = 100_000
_RANGE = re.compile(r"^\s*([0-9.eE+-]+)\s*(?::\s*([0-9.eE+-]+)\s*:\s*([0-9.eE+-]+))?\s*$")


@dataclass(frozen=True)
class Grid:
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    gamma: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.alpha) * len(self.beta) * len(self.gamma)


def parse_grid(text: str | None) -> Grid:
    """'alpha=1.1:1.4:0.1,beta=1.2,gamma=1.05:1.25:0.05' (start:stop:step, stop included, or one value).

    Keys left out take their range from the default grid.
    """
    values = dict(_parse_grid_items(DEFAULT_GRID))
    if text is not None:
        values.update(_parse_grid_items(text))
    grid = Grid(values["alpha"], values["beta"], values["gamma"])
    if grid.size > MAX_GRID_POINTS:
        raise UserError(f"--grid has {grid.size} points, more than {MAX_GRID_POINTS}; use coarser steps")
    return grid


def _parse_grid_items(text: str) -> list[tuple[str, tuple[float, ...]]]:
    items = []
    seen = set()
    for part in str(text).split(","):
        key, sep, spec = part.partition("=")
        key = key.strip()
        if not sep or key not in ("alpha", "beta", "gamma"):
            raise UserError(f"--grid: '{part.strip()}' is not KEY=START:STOP:STEP with KEY alpha, beta or gamma")
        if key in seen:
            raise UserError(f"--grid: {key} is given twice")
        seen.add(key)
        items.append((key, _parse_range(key, spec)))
    return items


def _parse_range(key: str, spec: str) -> tuple[float, ...]:
    match = _RANGE.match(spec)
    try:
        numbers = [float(g) for g in match.groups() if g is not None] if match else None
    except ValueError:
        numbers = None
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise UserError(f"--grid {key}: '{spec}' is not a number or START:STOP:STEP")
    if len(numbers) == 1:
        values = (numbers[0],)
    else:
        start, stop, step = numbers
        if step <= 0 or stop < start:
            raise UserError(f"--grid {key}: empty range '{spec}' (need START <= STOP and STEP > 0)")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_GRID_POINTS:
            raise UserError(f"--grid {key}: '{spec}' has {count} values; use a coarser step")
        values = tuple(round(start + i * step, 10) for i in range(count))
    for v in values:
        if v <= 1:
            raise UserError(
                f"--grid {key}: value {v:g} is not > 1 (every coefficient must grow its dimension; "
                "start the range above 1, e.g. 1.1:1.4:0.1)"
            )
    return values


def candidates(grid: Grid, target: float, tolerance: float) -> list[Coefficients]:
    """Grid points within ``tolerance`` (relative) of the target constant, closest first."""
    points = [Coefficients(a, b, g) for a, b, g in itertools.product(grid.alpha, grid.beta, grid.gamma)]
    inside = [c for c in points if abs(c.constant / target - 1) <= tolerance + 1e-12]
    if not inside:
        closest = min(points, key=lambda c: abs(c.constant / target - 1))
        raise UserError(
            f"no grid point has alpha*beta^1.5*gamma^2 within {100 * tolerance:g}% of {target:g}: the closest, "
            f"alpha={closest.alpha:g} beta={closest.beta:g} gamma={closest.gamma:g}, gives {closest.constant:.3f} "
            f"({100 * (closest.constant / target - 1):+.1f}%); widen --grid or --tolerance"
        )
    return sorted(inside, key=lambda c: (abs(c.constant / target - 1), c.alpha, c.beta, c.gamma))


@dataclass
class CandidateResult:
    coefficients: Coefficients
    scaled: Scaled  # the phi=1 model at deploy resolution
    proxy_resolution: int
    status: str = "pending"
    val_acc: float = float("nan")
    best_val_acc: float = float("nan")
    epochs: int = 0
    train_seconds: float = 0.0
    proxy_params: int = 0
    proxy_macs: int = 0
    failure_reason: str | None = None
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        s = self.scaled
        return {
            **self.coefficients.as_dict(),
            "resolution": s.config.resolution,
            "depths": [st.depth for st in s.config.stages],
            "widths": [st.width for st in s.config.stages],
            "params": s.cost.params,
            "macs": s.cost.macs,
            "target_macs": round(s.target_macs),
            "deviation": s.deviation,
            "proxy_resolution": self.proxy_resolution,
            "proxy_params": self.proxy_params,
            "proxy_macs": self.proxy_macs,
            "status": self.status,
            "val_acc": _json_float(self.val_acc),
            "best_val_acc": _json_float(self.best_val_acc),
            "epochs": self.epochs,
            "train_seconds": self.train_seconds,
            "failure_reason": self.failure_reason,
        }


@dataclass
class CoeffsReport:
    base: ArchConfig
    target: float
    tolerance: float
    grid: Grid
    eligible: int  # grid points within tolerance
    results: list[CandidateResult]  # ranked, best first
    settings: dict[str, Any]

    @property
    def best(self) -> CandidateResult | None:
        ok = [r for r in self.results if r.status in ("ok", "stopped") and math.isfinite(r.val_acc)]
        return ok[0] if ok else None

    @property
    def gamma_invisible(self) -> bool:
        """All candidates trained at one proxy resolution though their gammas differ."""
        gammas = {r.coefficients.gamma for r in self.results}
        return len(gammas) > 1 and len({r.proxy_resolution for r in self.results}) == 1

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "base": self.base.name,
            "target": self.target,
            "tolerance": self.tolerance,
            "grid": {"alpha": list(self.grid.alpha), "beta": list(self.grid.beta), "gamma": list(self.grid.gamma)},
            "grid_points": self.grid.size,
            "eligible": self.eligible,
            "trained": len(self.results),
            "settings": self.settings,
            "gamma_invisible_to_proxy": self.gamma_invisible,
            "candidates": [r.to_dict() for r in self.results],
            "best": None if best is None else best.coefficients.as_dict(),
        }


def proxy_resolution_for(base: ArchConfig, scaled: ArchConfig, proxy_resolution: int) -> int:
    """The base's proxy resolution times the candidate's deploy-resolution gain, on the 32 px grid."""
    return round_resolution(proxy_resolution * scaled.resolution / base.resolution)


def search_coefficients(
    base: ArchConfig,
    *,
    target: float = DEFAULT_TARGET,
    grid: Grid | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    epochs: int = D.EPOCHS,
    proxy_resolution: int = D.COEFFS_RESOLUTION,
    proxy_width: float = D.WIDTH,
    data: str = "digits",
    data_fraction: float = D.DATA_FRACTION,
    batch_size: int = D.BATCH_SIZE,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    seed: int = D.SEED,
    threads: int | None = None,
    match_macs: bool = True,
    on_result: Callable[[CandidateResult], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> CoeffsReport:
    """Train the phi=1 model of the ``max_candidates`` grid points closest to ``target`` as proxies
    and rank them. The proxy is the default proxy (`train_proxy.proxy_defaults`) at
    ``COEFFS_RESOLUTION``. ``tolerance`` defaults to `scaling`'s one MACs tolerance: the constant
    is the phi=1 MACs growth, so it bounds that growth against the target's as --match-macs bounds
    a model's MACs against its target (each phi=1 model is matched within the default)."""
    if not math.isfinite(target) or target <= 1:
        raise UserError(f"--target must be a number > 1, got {target:g}")
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be in (0, 1), got {tolerance:g}")
    why = D.width_problem(proxy_width)
    if why:
        raise UserError(f"--proxy-width {why}, got {proxy_width:g}")
    why = D.fraction_problem(data_fraction)
    if why:
        raise UserError(f"--data-fraction {why}, got {data_fraction:g}")
    grid = grid or parse_grid(None)
    eligible = candidates(grid, target, tolerance)
    chosen = eligible[:max_candidates]
    scaled = [expand(base, 1.0, c, match_macs=match_macs) for c in chosen]  # refuses absurd/impossible ones first

    from train_proxy.data import load_data  # late: torch-heavy, and only this command trains

    if on_start is not None:  # everything the user gave is valid: the command starts for real
        on_start()
    from train_proxy.trainer import DATA_SEED, ProxySpec, train_proxy

    data_cache: dict[int, Any] = {}
    results: list[CandidateResult] = []
    for coeffs, s in zip(chosen, scaled):
        res = proxy_resolution_for(base, s.config, proxy_resolution)
        result = CandidateResult(coeffs, s, res)
        if res not in data_cache:  # the same stratified fraction (the trainer's seed) for every candidate
            data_cache[res] = load_data(data, res, fraction=data_fraction, seed=DATA_SEED)
        spec = ProxySpec(
            resolution=res,
            epochs=epochs,
            batch_size=batch_size,
            data_fraction=data_fraction,
            width_multiplier=proxy_width,
            seed=seed,
            threads=threads,
        )  # the warm-up follows the one rule (proxy_defaults.warmup_epochs)
        trained = train_proxy(s.config, spec, data_cache[res])
        result.status = trained.status
        result.val_acc = trained.val_acc
        result.best_val_acc = trained.best_val_acc
        result.epochs = trained.epochs
        result.train_seconds = trained.train_seconds
        result.proxy_params = trained.params
        result.proxy_macs = trained.macs
        result.failure_reason = trained.failure_reason
        result.history = list(trained.history)
        results.append(result)
        if on_result is not None:
            on_result(result)
    results.sort(key=_rank_key)
    settings = {
        "epochs": epochs,
        "proxy_resolution": proxy_resolution,
        "proxy_width": proxy_width,
        "data": data,
        "data_fraction": data_fraction,
        "batch_size": batch_size,
        "seed": seed,
        "max_candidates": max_candidates,
        "match_macs": match_macs,
    }
    return CoeffsReport(base, target, tolerance, grid, len(eligible), results, settings)


def _rank_key(r: CandidateResult) -> tuple:
    usable = r.status in ("ok", "stopped") and math.isfinite(r.val_acc)
    return (not usable, -(r.val_acc if usable else 0.0), r.scaled.cost.macs)


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_report(report: CoeffsReport) -> str:
    s = report.settings
    lines = [
        f"Coefficient search for {report.base.name}: alpha*beta^1.5*gamma^2 within {100 * report.tolerance:g}% of "
        f"{report.target:g}; {report.eligible} of {report.grid.size} grid points eligible, {len(report.results)} "
        "trained (closest constants first)",
        f"proxy: phi=1 model{' (widths matched to its MACs target)' if s['match_macs'] else ''}, {s['epochs']} "
        f"epoch(s) on {s['data']} (fraction {s['data_fraction']:g}, batch {s['batch_size']}), width x"
        f"{s['proxy_width']:g}, base proxy resolution {s['proxy_resolution']} px times each candidate's "
        f"resolution gain (32 px grid), seed {s['seed']}",
        "",
    ]
    header = ["rank", "alpha", "beta", "gamma", "const", "res", "depths", "widths", "params", "MACs", "dev",
              "proxy res", "proxy acc", "time", "status"]  # fmt: skip
    rows = []
    for i, r in enumerate(report.results, 1):
        sc = r.scaled
        rows.append([
            str(i), f"{r.coefficients.alpha:g}", f"{r.coefficients.beta:g}", f"{r.coefficients.gamma:g}",
            f"{r.coefficients.constant:.3f}", str(sc.config.resolution),
            ",".join(str(x.depth) for x in sc.config.stages), ",".join(str(x.width) for x in sc.config.stages),
            f"{sc.cost.params / 1e6:.1f} M", f"{sc.cost.macs / 1e9:.2f} G", f"{100 * sc.deviation:+.1f}%",
            str(r.proxy_resolution),
            f"{100 * r.val_acc:.1f}%" if math.isfinite(r.val_acc) else "-",
            f"{r.train_seconds:.0f} s", r.status if not r.failure_reason else f"{r.status}: {r.failure_reason}",
        ])  # fmt: skip
    lines += format_table(header, rows)
    lines.append("")
    lines.append("MACs are multiply-accumulates at the deploy resolution; dev = against base MACs x constant.")
    if report.gamma_invisible:
        lines.append(
            f"note: every candidate trained at {report.results[0].proxy_resolution} px, so gamma made no difference "
            "to the proxy; raise --proxy-resolution (e.g. 128) to tell gammas apart"
        )
    best = report.best
    if best is None:
        lines.append("best: none (every proxy training failed)")
    else:
        c = best.coefficients
        lines.append(
            f"best: alpha={c.alpha:g} beta={c.beta:g} gamma={c.gamma:g} (constant {c.constant:.3f}), proxy accuracy "
            f"{100 * best.val_acc:.1f}%  ->  scaling expand --alpha {c.alpha:g} --beta {c.beta:g} --gamma {c.gamma:g}"
        )
    return "\n".join(lines)

"""CMT's compound scaling rule, applied to an `ArchConfig` and checked by counting, not assumed.

depth x alpha^phi, width x beta^phi, resolution x gamma^phi; MACs then grow by about
(alpha * beta^1.5 * gamma^2)^phi. Rounding (search_space.transforms holds every rule) moves the
real MACs away from that target, so every scaled model is counted and, with ``match_macs``, its
width multiplier is searched until the count lands within a tolerance of the target.

Rules beyond the rounding in ``search_space.transforms``:
* the CMT stem's channels scale with the same width factor as the stages (CMT-B's 38 = 32 x the
  width ratio 76/64), rounded to a multiple of 8 (at least 8); the head's ``fc_dim`` (CMT's 1280)
  is kept, as every CMT model keeps it;
* heads, FFN/MLP ratios, kernels and block types are kept;
* the stochastic depth maximum (``drop_path_rate``) is kept as the base's. The official rates follow
  no depth or size law (CMT: Ti 0.1, XS 0.08, S 0.1, B 0.25, each tuned with its own epochs: 800,
  400, 300, 300; VAN: 0.1 for B0-B2, 0.2 for B3), so none is extrapolated; the per-block linear
  spacing already spreads the rate over the added or removed blocks. Retune it for a final training
  (``nas train --drop-path``), e.g. raise it towards CMT-B's 0.25 for phi >= 1;
* a CMT K/V reduction that no longer divides its stage's feature map at the new resolution is
  replaced by the divisor of the feature size nearest to it (by ratio; a tie goes to the larger
  reduction, the cheaper attention). Every change is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from search_space import ArchConfig, Cost, StageConfig, UserError, analytic_cost
from search_space.blocks import block_types, get_block
from search_space.config import KNOB_FIELDS, field_label
from search_space.text import printable
from search_space.units import format_count, format_macs
from search_space.transforms import round_depth, round_resolution, scale_widths, width_divisor

DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA = 1.2, 1.3, 1.15
MAX_MACS = 1e13  # ~1000x CMT-B: beyond this a member is not a model anyone can train or run
MAX_PARAMS = 1e10  # 40 GB of fp32 weights alone
MIN_NOMINAL_RESOLUTION = 16  # below this the resolution would round under the 32 px minimum
DEFAULT_TOLERANCE = 0.03


@dataclass(frozen=True)
class Coefficients:
    """alpha (depth), beta (width), gamma (resolution); each must be > 1."""

    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    gamma: float = DEFAULT_GAMMA

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{name} must be a finite number, got {value!r}")
            if value <= 1:
                raise UserError(
                    f"{name} must be > 1, got {value:g} (compound scaling grows depth, width and resolution with phi)"
                )

    @property
    def constant(self) -> float:
        """MACs growth per unit of phi: alpha * beta^1.5 * gamma^2 (CMT's rule; 2.35 for the defaults)."""
        return self.alpha * self.beta**1.5 * self.gamma**2

    def as_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "constant": self.constant}


@dataclass(frozen=True)
class KVChange:
    """A stage knob (CMT's K/V reduction) that had to change to divide the stage's feature map."""

    stage: int  # 1-based
    old: int
    new: int
    feature_size: int
    knob: str = "kv_reduction"

    def describe(self) -> str:
        return (
            f"stage{self.stage}: {field_label(self.knob)} {self.old} does not divide the {self.feature_size}x"
            f"{self.feature_size} feature map, used {self.new}"
        )


@dataclass(frozen=True)
class Scaled:
    """One scaled model with its count against the compound-scaling target."""

    base: ArchConfig
    config: ArchConfig
    phi: float
    coefficients: Coefficients
    base_cost: Cost
    cost: Cost
    target_macs: float
    width_multiplier: float = 1.0  # on top of beta^phi; 1.0 unless MACs were matched
    matched: bool = False
    adjusted: tuple[str, ...] = ()  # parts moved by one rounding step in the neighbour scan
    kv_changes: tuple[KVChange, ...] = field(default=())

    @property
    def deviation(self) -> float:
        """(actual - target) / target."""
        return (self.cost.macs - self.target_macs) / self.target_macs

    def to_yaml(self) -> str:
        """The scaled config as YAML, headed by comments saying how it was made and what it counts."""
        c = self.coefficients
        lines = [
            f"# {printable(self.config.name)}: {printable(self.base.name)} compound-scaled with phi={format_phi(self.phi)}, alpha={c.alpha:g}, "
            f"beta={c.beta:g}, gamma={c.gamma:g} (alpha*beta^1.5*gamma^2 = {c.constant:.3f}).",
            f"# MACs (\"FLOPs\"): {format_macs(self.cost.macs)} against the target {format_macs(self.target_macs)} "
            f"({100 * self.deviation:+.1f}%); params {format_count(self.cost.params)}.",
        ]
        if self.matched:
            lines.append(
                f"# Widths matched to the MACs target: multiplier {self.width_multiplier:.4f} on top of beta^phi"
                + (f", then {', '.join(self.adjusted)} moved by one rounding step." if self.adjusted else ".")
            )
        lines += [f"# {change.describe()}." for change in self.kv_changes]
        return "\n".join(lines) + "\n" + self.config.to_yaml()

    def to_dict(self) -> dict:
        return {
            "base": self.base.name,
            "name": self.config.name,
            "phi": self.phi,
            "coefficients": self.coefficients.as_dict(),
            "base_resolution": self.base.resolution,
            "resolution": self.config.resolution,
            "base_depths": [s.depth for s in self.base.stages],
            "depths": [s.depth for s in self.config.stages],
            "base_widths": [s.width for s in self.base.stages],
            "widths": [s.width for s in self.config.stages],
            "heads": read_values(self.config, "heads"),  # null for a stage whose block reads no heads
            "base_stem_channels": self.base.stem.channels,
            "stem_channels": self.config.stem.channels,
            "base_params": self.base_cost.params,
            "params": self.cost.params,
            "base_macs": self.base_cost.macs,
            "target_macs": round(self.target_macs),
            "macs": self.cost.macs,
            "deviation": self.deviation,
            "matched": self.matched,
            "width_multiplier": self.width_multiplier,
            "adjusted": list(self.adjusted),
            "kv_changes": [vars(c) for c in self.kv_changes],
            "drop_path_rate": self.config.drop_path_rate,
        }


def read_values(cfg: ArchConfig, knob: str) -> list:
    """``knob`` of every stage of ``cfg``, None where the stage's block type does not read it."""
    return [getattr(stage, knob) if knob in get_block(stage.block).knobs else None for stage in cfg.stages]


def structural_knobs() -> tuple[str, ...]:
    """The knobs that tie a block's width or feature map (`BlockType.divides_width`,
    ``divides_feature_map``: heads, K/V reduction), which scaling keeps or repairs."""
    tied = {knob for bt in block_types() for knob in (*bt.divides_width, *bt.divides_feature_map)}
    return tuple(knob for knob in KNOB_FIELDS if knob in tied)


def knob_rows(base: ArchConfig, cfg: ArchConfig) -> list[list[str]]:
    """Rows ``[label, base values, scaled values]`` of a base-vs-scaled table, one per structural
    knob (`structural_knobs`) that some stage's block reads; "-" for a stage whose block ignores it
    (no heads row for a VAN-only model, VAN's stages show "-" in a hybrid's)."""

    def listing(config: ArchConfig, knob: str) -> str:
        return ",".join("-" if v is None else str(v) for v in read_values(config, knob))

    return [
        [field_label(knob), listing(base, knob), listing(cfg, knob)]
        for knob in structural_knobs()
        if any(v is not None for v in read_values(base, knob) + read_values(cfg, knob))
    ]


def format_phi(phi: float) -> str:
    return f"{phi:g}"


def scaled_name(base_name: str, phi: float) -> str:
    return f"{base_name}_phi{format_phi(phi)}"


def check_phi(base: ArchConfig, base_macs: int, phi: float, coeffs: Coefficients) -> None:
    """Refuse a phi that is not a number or that gives an absurd model, before building anything."""
    if not isinstance(phi, (int, float)) or not math.isfinite(phi):
        raise UserError(f"phi must be a finite number, got {phi!r}")
    log10_target = math.log10(base_macs) + phi * math.log10(coeffs.constant)
    if log10_target > math.log10(MAX_MACS):
        raise UserError(
            f"phi={format_phi(phi)} is absurd: the scaled model would need about {_power_of_ten(log10_target)} "
            f"MACs per image (base {base_macs:.3g} x {coeffs.constant:.3f}^{format_phi(phi)}), beyond the "
            f"{MAX_MACS:.0e} limit of what fits in memory and time"
        )
    log10_res = math.log10(base.resolution) + phi * math.log10(coeffs.gamma)
    if log10_res < math.log10(MIN_NOMINAL_RESOLUTION):
        raise UserError(
            f"phi={format_phi(phi)} is absurd: it shrinks the {base.resolution} px resolution to "
            f"{_power_of_ten(log10_res)} px, below the 32 px a network with total stride 32 needs"
        )


def expand(
    base: ArchConfig,
    phi: float,
    coeffs: Coefficients | None = None,
    *,
    match_macs: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
) -> Scaled:
    """Scale ``base`` by ``phi``; with ``match_macs`` search the width multiplier to hit the MACs target."""
    coeffs = coeffs or Coefficients()
    base_cost = analytic_cost(base)
    check_phi(base, base_cost.macs, phi, coeffs)
    target = base_cost.macs * coeffs.constant**phi
    name = name or scaled_name(base.name, phi)
    if match_macs:
        cfg, kv, m, adjusted = _match(base, phi, coeffs, target, tolerance, name)
    else:
        (cfg, kv), m, adjusted = scale(base, phi, coeffs, 1.0, name), 1.0, ()
    cost = analytic_cost(cfg)
    _check_size(cfg, cost, phi)
    return Scaled(base, cfg, phi, coeffs, base_cost, cost, target, m, match_macs, adjusted, kv)


def scale(
    base: ArchConfig, phi: float, coeffs: Coefficients, width_multiplier: float = 1.0, name: str | None = None
) -> tuple[ArchConfig, tuple[KVChange, ...]]:
    """The mechanical rule: depths, widths (x ``width_multiplier`` on top of beta^phi), resolution."""
    resolution = round_resolution(base.resolution * coeffs.gamma**phi)
    depth_factor = coeffs.alpha**phi
    stages = tuple(replace(s, depth=round_depth(s.depth * depth_factor)) for s in base.stages)
    cfg = base.replace(stages=stages, resolution=resolution, name=name or scaled_name(base.name, phi))
    cfg = scale_widths(cfg, coeffs.beta**phi * width_multiplier)
    cfg, changes = fix_kv_reductions(cfg)
    cfg.validate(f"{cfg.name} (scaled from {base.name})")
    return cfg, changes


def fix_kv_reductions(cfg: ArchConfig) -> tuple[ArchConfig, tuple[KVChange, ...]]:
    """Make every knob that must divide the feature map (``BlockType.divides_feature_map``: CMT's
    K/V reduction) divide its stage's feature map at the config's resolution."""
    stages: list[StageConfig] = []
    changes: list[KVChange] = []
    for i, (stage, size) in enumerate(zip(cfg.stages, cfg.feature_sizes())):
        for knob in get_block(stage.block).divides_feature_map:
            old = getattr(stage, knob)
            if size >= 1 and size % old:
                new = nearest_divisor(size, old)
                changes.append(KVChange(i + 1, old, new, size, knob))
                stage = replace(stage, **{knob: new})
        stages.append(stage)
    return (cfg.replace(stages=tuple(stages)) if changes else cfg), tuple(changes)


def nearest_divisor(size: int, wanted: int) -> int:
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / wanted)), -d))


# -- matching the MACs target -------------------------------------------------------------
_MIN_MULTIPLIER, _MAX_MULTIPLIER = 1 / 64, 64.0


def _match(
    base: ArchConfig, phi: float, coeffs: Coefficients, target: float, tolerance: float, name: str
) -> tuple[ArchConfig, tuple[KVChange, ...], float, tuple[str, ...]]:
    """Search the width multiplier m (on top of beta^phi) so that MACs land within ``tolerance``.

    MACs(m) is a non-decreasing step function (widths are rounded), so: bracket the target, bisect
    m in log space down to the two adjacent steps around it, keep the closer one; if rounding steps
    are still too coarse, move single stages (or the stem) by one rounding multiple at a time.
    """
    cache: dict[float, tuple[ArchConfig, tuple[KVChange, ...], int]] = {}

    def at(m: float) -> tuple[ArchConfig, tuple[KVChange, ...], int]:
        if m not in cache:
            cfg, kv = scale(base, phi, coeffs, m, name)
            cache[m] = (cfg, kv, analytic_cost(cfg).macs)
        return cache[m]

    lo = hi = 1.0
    if at(1.0)[2] <= target:
        while at(hi)[2] <= target and hi < _MAX_MULTIPLIER:
            lo, hi = hi, hi * 1.25
    else:
        while at(lo)[2] > target and lo > _MIN_MULTIPLIER:
            hi, lo = lo, lo / 1.25
    if at(lo)[2] <= target < at(hi)[2]:
        for _ in range(80):  # log-space bisection; stops once both ends give the same rounding step
            mid = math.sqrt(lo * hi)
            if at(mid)[2] <= target:
                lo = mid
            else:
                hi = mid
            if hi / lo < 1 + 1e-12:
                break
    # the closer of the two steps; among equal counts the multiplier nearest 1 (phi=0 gives the base)
    m = min((1.0, lo, hi), key=lambda v: (abs(at(v)[2] - target), abs(math.log(v))))
    cfg, kv, macs = at(m)
    adjusted: tuple[str, ...] = ()
    if abs(macs - target) > tolerance * target:
        cfg, macs, adjusted = _neighbour_scan(cfg, target, tolerance)
    if abs(macs - target) > tolerance * target:
        floor_cfg, _, floor_macs = at(_MIN_MULTIPLIER)
        if floor_macs > target * (1 + tolerance):
            why = (
                f"even the narrowest widths ({_list(s.width for s in floor_cfg.stages)}) give "
                f"{format_macs(floor_macs)}, {100 * (floor_macs / target - 1):+.1f}%: depth, resolution, stem and "
                "head alone exceed the target"
            )
        else:
            why = (
                f"the nearest width rounding step gives {format_macs(macs)} ({100 * (macs / target - 1):+.1f}%); "
                "the steps of the width rounding are too coarse here"
            )
        raise UserError(
            f"cannot match the MACs target {format_macs(target)} within {100 * tolerance:g}% at "
            f"phi={format_phi(phi)}: {why}"
        )
    return cfg, kv, m, adjusted


def _neighbour_scan(cfg: ArchConfig, target: float, tolerance: float) -> tuple[ArchConfig, int, tuple[str, ...]]:
    """Greedy: move one stage width (or the stem) by one rounding multiple while it brings MACs closer."""
    macs = analytic_cost(cfg).macs
    adjusted: list[str] = []
    for _ in range(64):
        if abs(macs - target) <= tolerance * target:
            break
        best: tuple[int, ArchConfig, str] | None = None
        for candidate, part in _neighbours(cfg):
            c = analytic_cost(candidate).macs
            if best is None or abs(c - target) < abs(best[0] - target):
                best = (c, candidate, part)
        if best is None or abs(best[0] - target) >= abs(macs - target):
            break
        macs, cfg = best[0], best[1]
        if best[2] not in adjusted:
            adjusted.append(best[2])
    return cfg, macs, tuple(adjusted)


def _neighbours(cfg: ArchConfig):  # type: ignore[no-untyped-def]
    for i, stage in enumerate(cfg.stages):
        step = width_divisor(stage)
        for width in (stage.width - step, stage.width + step):
            if width >= step:
                stages = cfg.stages[:i] + (replace(stage, width=width),) + cfg.stages[i + 1 :]
                yield cfg.replace(stages=stages), f"stage{i + 1}"
    if cfg.stem.kind == "conv3":
        for channels in (cfg.stem.channels - 8, cfg.stem.channels + 8):
            if channels >= 8:
                yield cfg.replace(stem=replace(cfg.stem, channels=channels)), "stem"


def _check_size(cfg: ArchConfig, cost: Cost, phi: float) -> None:
    if cost.macs > MAX_MACS or cost.params > MAX_PARAMS:
        raise UserError(
            f"phi={format_phi(phi)} is absurd: {cfg.name} would need {cost.macs:.3g} MACs per image and "
            f"{cost.params:.3g} parameters ({4 * cost.params / 1e9:.3g} GB of fp32 weights), beyond the "
            f"{MAX_MACS:.0e} MACs / {MAX_PARAMS:.0e} params limit"
        )


def _power_of_ten(log10_value: float) -> str:
    if -300 < log10_value < 300:
        return f"{10**log10_value:.3g}"
    return f"10^{log10_value:.0f}"


def _list(values) -> str:  # type: ignore[no-untyped-def]
    return ",".join(str(v) for v in values)

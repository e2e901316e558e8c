"""The settings of one search: parsed from the command line, validated, stored in run.json.

Everything a user can get wrong is checked here, before the run directory or Ray is touched, and
reported as one `UserError` line. "FLOPs" budgets are multiply-accumulates (MACs), as in the VAN
and CMT papers, and apply to the architecture at its deploy resolution (the space's), while the
proxy trains at ``proxy_resolution``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search_space import SearchSpace
from search_space.errors import UserError

from ..units import format_count, format_macs, parse_count, parse_macs

OBJECTIVES = ("acc", "macs", "latency")
SAMPLERS = ("tpe", "nsga2", "random")
DEVICES = ("cpu", "cuda")

# The default proxy: the recipe of docs/fidelity.md (benchmarks/bench_proxy_fidelity.py) with the
# best rank agreement per CPU-second among the training proxies measured there: one epoch at 32 px,
# width x0.5, on a tenth of the training split (4,800 images), scored on the whole validation part
# (Kendall tau +0.52 against a full-width epoch on all the data, where width x0.25 gave +0.27).
# 16 trials of it keep `nas search --budget 4GFLOPs` on Fashion-MNIST within 10 minutes on 2 CPU
# cores (20 would not). Scale up for real searches.
DEFAULT_TRIALS = 16
DEFAULT_EPOCHS = 1
DEFAULT_PROXY_RESOLUTION = 32
DEFAULT_PROXY_WIDTH = 0.5  # proxy width multiplier: about half the training cost per image on the CPU
DEFAULT_BATCH_SIZE = 64
DEFAULT_DATA_FRACTION = 0.1
DEFAULT_OBJECTIVES = ("acc", "macs")
DEFAULT_SAMPLER = "tpe"
DEFAULT_DATA = "digits"  # of settings built without data (library use); the CLI resolves default_data_spec()
DEFAULT_MAX_FAILURES = 1

# Options a resumed run may change; every other one must match what the run was started with,
# because it changes what the trials already in the study mean.
MUTABLE_ON_RESUME = ("trials", "concurrency", "address", "max_failures", "threads")


@dataclass(frozen=True)
class SearchSettings:
    budget_macs: int
    max_params: int | None = None
    latency_ms: float | None = None
    device: str = "cpu"  # the latency device (predictor and Pareto re-measurement)
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    sampler: str = DEFAULT_SAMPLER
    trials: int = DEFAULT_TRIALS  # architectures to train; infeasible and duplicate ones are free
    epochs: int = DEFAULT_EPOCHS
    proxy_resolution: int = DEFAULT_PROXY_RESOLUTION
    proxy_width: float = DEFAULT_PROXY_WIDTH  # width multiplier of the proxy model (deploy widths x this)
    concurrency: int | None = None  # None: one trial per CPU of the cluster (resolved by the runner)
    seed: int = 0
    data: str = DEFAULT_DATA
    space: str = "default"  # "default" or the path the space was read from
    batch_size: int = DEFAULT_BATCH_SIZE
    data_fraction: float = DEFAULT_DATA_FRACTION
    address: str | None = None
    max_failures: int = DEFAULT_MAX_FAILURES  # Ray retries of a trial that raised or lost its worker
    threads: int | None = None  # CPU threads per trial; None: CPUs of the cluster / concurrency
    latency_table: str | None = None  # a table built on the target (nas latency-table build); None: measured here

    # -- derived ------------------------------------------------------------------------
    @property
    def uses_latency(self) -> bool:
        return self.latency_ms is not None or "latency" in self.objectives

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o == "acc" else "minimize" for o in self.objectives]

    def constraint_names(self) -> list[str]:
        names = ["macs"]
        if self.max_params is not None:
            names.append("params")
        if self.latency_ms is not None:
            names.append("latency")
        return names

    # -- run.json -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "budget_macs" not in values:
            raise UserError("run.json: settings lack 'budget_macs' (not a run directory of this version?)")
        values["objectives"] = tuple(values.get("objectives", DEFAULT_OBJECTIVES))
        return cls(**values)

    def with_overrides(self, **changes: Any) -> SearchSettings:
        return replace(self, **changes)


def settings_shape_problem(data: Any) -> str | None:
    """What is wrong with the JSON types of stored settings (None when every known key fits its
    field; a missing or null key is left to the reader)."""
    import types
    import typing

    if not isinstance(data, Mapping):
        return f"settings is a {type(data).__name__}, expected an object"
    hints = typing.get_type_hints(SearchSettings)

    def fits(value: Any, hint: Any) -> bool:
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return any(fits(value, arg) for arg in typing.get_args(hint))
        if hint is type(None):
            return value is None
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is str:
            return isinstance(value, str)
        if typing.get_origin(hint) is tuple:
            return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        return True

    for f in fields(SearchSettings):
        value = data.get(f.name)
        if value is not None and not fits(value, hints[f.name]):
            wanted = str(hints[f.name]).replace("<class '", "").replace("'>", "")
            return f"settings.{f.name} is {type(value).__name__} {str(value)[:40]!r}, expected {wanted}"
    return None


@dataclass(frozen=True)
class RunSettings(SearchSettings):
    """The settings of a run as a reader finds them in run.json: `SearchSettings` itself, loaded
    leniently. A key missing from an old or partial run.json is None (unknown: never today's
    default, which may not be what that run used; ``objectives`` falls back to the default pair),
    and keys this version does not know are kept in ``extra``."""

    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run_json(cls, data: Mapping[str, Any] | None) -> RunSettings:
        data = data if isinstance(data, Mapping) else {}
        known = [f.name for f in fields(SearchSettings)]
        values: dict[str, Any] = {name: data.get(name) for name in known}
        values["objectives"] = tuple(data.get("objectives") or DEFAULT_OBJECTIVES)
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


# -- parsing --------------------------------------------------------------------------------


def parse_objectives(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in str(text).split(","))
    if not parts or any(not p for p in parts):
        raise UserError(f"malformed --objectives '{text}' (expected e.g. acc,macs)")
    for p in parts:
        if p not in OBJECTIVES:
            raise UserError(f"unknown objective '{p}' in --objectives (choose from {', '.join(OBJECTIVES)})")
    if len(set(parts)) != len(parts):
        raise UserError(f"--objectives '{text}' names an objective twice")
    if parts[0] != "acc":
        raise UserError(f"--objectives '{text}' must start with acc (proxy accuracy is always optimised)")
    return parts


def parse_latency(text: str) -> float:
    try:
        value = float(str(text).strip().removesuffix("ms"))
    except ValueError:
        raise UserError(f"malformed --latency-ms '{text}' (expected milliseconds, e.g. 15)") from None
    if not math.isfinite(value):
        raise UserError(f"--latency-ms '{text}' is not a finite number of milliseconds")
    if value <= 0:
        raise UserError(f"--latency-ms '{text}' must be a positive number of milliseconds")
    return value


def parse_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"malformed --data-fraction '{text}' (expected a number in (0, 1])") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise UserError(f"--data-fraction {text} must be in (0, 1]")
    return value


def parse_width(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"malformed --proxy-width '{text}' (expected a width multiplier, e.g. 0.5)") from None
    if not math.isfinite(value) or not 0 < value <= 4:
        raise UserError(f"--proxy-width {text} must be in (0, 4]")
    return value


def parse_address(text: str) -> str:
    text = str(text).strip()
    if text == "auto":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"malformed --address '{text}' (expected HOST:PORT of a Ray head, or auto)")
    return text


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave on the command line (argparse defaults are None), parsed."""
    given: dict[str, Any] = {}
    if args.budget is not None:
        given["budget_macs"] = parse_macs(args.budget)
    if args.params is not None:
        given["max_params"] = parse_count(args.params)
    if args.latency_ms is not None:
        given["latency_ms"] = parse_latency(args.latency_ms)
    if args.objectives is not None:
        given["objectives"] = parse_objectives(args.objectives)
    if args.data_fraction is not None:
        given["data_fraction"] = parse_fraction(args.data_fraction)
    if args.address is not None:
        given["address"] = parse_address(args.address)
    if args.proxy_width is not None:
        given["proxy_width"] = parse_width(args.proxy_width)
    if args.space is not None:
        given["space"] = str(Path(args.space).resolve())  # recorded absolute: a resume may run elsewhere
    if getattr(args, "latency_table", None) is not None:
        given["latency_table"] = str(Path(args.latency_table).resolve())
    for name in ("device", "sampler", "trials", "epochs", "proxy_resolution", "concurrency", "seed", "data",
                 "batch_size", "max_failures", "threads"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    return given


def new_settings(args: argparse.Namespace) -> SearchSettings:
    """Settings of a new run from the command line (no I/O beyond parsing)."""
    given = explicit_options(args)
    if "budget_macs" not in given:
        raise UserError("--budget is required (e.g. --budget 4GFLOPs; FLOPs means multiply-accumulates)")
    from train_proxy.data import default_data_spec

    # recorded resolved, never "default": run.json names the data the run used
    data = {} if "data" in given else {"data": default_data_spec()}
    settings = SearchSettings(**given, **data)
    check_consistency(settings, given)
    return settings


def resumed_settings(stored: Mapping[str, Any], args: argparse.Namespace) -> SearchSettings:
    """The stored settings of a run, with the options a resume may change applied."""
    base = SearchSettings.from_json(stored)
    given = explicit_options(args)
    changes = {}
    for name, value in given.items():
        old = getattr(base, name)
        if name in MUTABLE_ON_RESUME:
            changes[name] = value
        elif value != old:
            flag = "--" + {"budget_macs": "budget", "max_params": "params"}.get(name, name).replace("_", "-")
            raise UserError(
                f"{flag} {_show(name, value)} differs from the run's {_show(name, old)}; "
                f"--resume continues a run with its own settings (only --trials, --concurrency, --address, "
                f"--max-failures, --threads may change)"
            )
    settings = base.with_overrides(**changes)
    check_consistency(settings, given)
    return settings


def _show(name: str, value: Any) -> str:
    if name == "budget_macs":
        return format_macs(value).replace(" ", "")
    if name == "max_params" and value is not None:
        return format_count(value).replace(" ", "")
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def check_consistency(s: SearchSettings, given: Mapping[str, Any]) -> None:
    """Checks across options (single options are checked by their parsers)."""
    if s.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{s.sampler}' (choose from {', '.join(SAMPLERS)})")
    if s.device not in DEVICES:
        raise UserError(f"unknown device '{s.device}' (choose from {', '.join(DEVICES)})")
    if "device" in given and not s.uses_latency:
        raise UserError("--device is the latency device; it needs --latency-ms or a latency objective")
    if s.latency_table is not None and not s.uses_latency:
        raise UserError("--latency-table predicts latency; it needs --latency-ms or a latency objective")
    if s.latency_table is not None and "device" in given:
        raise UserError("--latency-table names its own (target) device; drop --device")
    for name in ("trials", "epochs"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    if s.batch_size < 2:  # batch norm needs two samples: every trial would fail
        raise UserError(f"--batch-size must be >= 2 (batch norm needs two samples), got {s.batch_size}")
    if s.concurrency is not None and s.concurrency < 1:
        raise UserError(f"--concurrency must be >= 1, got {s.concurrency}")
    if s.threads is not None and s.threads < 1:
        raise UserError(f"--threads must be >= 1, got {s.threads}")
    if s.max_failures < 0:
        raise UserError(f"--max-failures must be >= 0, got {s.max_failures}")
    if not 0 <= s.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32), got {s.seed}")
    if s.proxy_resolution < 32 or s.proxy_resolution % 32:
        raise UserError(f"--proxy-resolution {s.proxy_resolution} is not a positive multiple of 32")


# -- checks that need the space ---------------------------------------------------------------


def load_space(space: str) -> SearchSpace:
    return SearchSpace.default() if space == "default" else SearchSpace.load(space)


def check_space_fits(s: SearchSettings, space: SearchSpace) -> None:
    """Refuse budgets that no architecture of the space can meet (nothing would ever train)."""
    if s.proxy_resolution > space.resolution:
        raise UserError(
            f"--proxy-resolution {s.proxy_resolution} exceeds the space's deploy resolution {space.resolution}"
        )
    _, smallest = space.smallest()
    if smallest.macs > s.budget_macs:
        raise UserError(
            f"no architecture of the space fits the budget: its smallest has {format_macs(smallest.macs)} MACs "
            f"at {space.resolution} px, more than the budget of {format_macs(s.budget_macs)} MACs"
        )
    if s.max_params is not None:
        fewest = fewest_params(space)
        if fewest > s.max_params:
            raise UserError(
                f"no architecture of the space fits --params {format_count(s.max_params)}: its smallest has "
                f"{format_count(fewest)} params (and the smallest by MACs has {format_macs(smallest.macs)} MACs)"
            )


def fewest_params(space: SearchSpace) -> int:
    """The fewest parameters of any architecture in the space."""
    return space.smallest(by="params")[1].params

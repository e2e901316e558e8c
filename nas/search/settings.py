"""The settings of one search parsed from the command line and validated.

Everything a user can get wrong is checked here, before the run directory or Ray is touched, and
reported as one `UserError` line. The settings themselves (what run.json stores) are
`results.settings`; the proxy's defaults and limits are `train_proxy.proxy_defaults`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from results.settings import (  # noqa: F401 - the search's settings, re-exported for its modules
    OBJECTIVES,
    SAMPLERS,
    DEVICES,
    DEFAULT_TRIALS,
    DEFAULT_EPOCHS,
    DEFAULT_PROXY_RESOLUTION,
    DEFAULT_PROXY_WIDTH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATA_FRACTION,
    DEFAULT_RUNGS,
    RUNG_GROWTH,
    DEFAULT_OBJECTIVES,
    DEFAULT_SAMPLER,
    DEFAULT_DATA,
    DEFAULT_MAX_FAILURES,
    MUTABLE_ON_RESUME,
    SearchSettings,
    RunSettings,
    settings_shape_problem,
)
from search_space import SearchSpace
from search_space.errors import UserError
from train_proxy import proxy_defaults as proxy
from train_proxy.latency import DEFAULT_DEVICE as DEFAULT_LATENCY_DEVICE  # noqa: F401 - SearchSettings.device

from search_space.units import format_count, format_macs, parse_count, parse_macs

DEFAULT_SEED = proxy.SEED

# the flag of each setting where it is not the setting's name with dashes (run.json keeps the names)
FLAGS = {"budget_macs": "--budget", "max_params": "--params", "device": "--latency-device"}


def flag_of(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


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
    why = proxy.fraction_problem(value)
    if why:
        raise UserError(f"--data-fraction {text} {why}")
    return value


def parse_width(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"malformed --proxy-width '{text}' (expected a width multiplier, e.g. 0.5)") from None
    why = proxy.width_problem(value)
    if why:
        raise UserError(f"--proxy-width {text} {why}")
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
    if getattr(args, "latency_device", None) is not None:
        given["device"] = args.latency_device  # SearchSettings.device is the latency device
    for name in ("sampler", "trials", "rungs", "epochs", "proxy_resolution", "concurrency", "seed", "data",
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
            flag = flag_of(name)
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
        raise UserError(f"unknown --latency-device '{s.device}' (choose from {', '.join(DEVICES)})")
    if "device" in given and not s.uses_latency:
        raise UserError("--latency-device is the device whose latency is predicted; it needs --latency-ms or a "
                        "latency objective")  # fmt: skip
    if s.latency_table is not None and not s.uses_latency:
        raise UserError("--latency-table predicts latency; it needs --latency-ms or a latency objective")
    if s.latency_table is not None and "device" in given:
        raise UserError("--latency-table names its own (target) device; drop --latency-device")
    for name in ("trials", "epochs"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    why = proxy.rungs_problem(s.rungs)
    if why:
        raise UserError(f"--rungs {why}, got {s.rungs}")
    why = proxy.batch_size_problem(s.batch_size)  # batch norm needs two samples: every trial would fail
    if why:
        raise UserError(f"--batch-size {why}, got {s.batch_size}")
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

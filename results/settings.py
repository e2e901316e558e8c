"""The settings of one search as run.json stores them: `SearchSettings` (what `nas search` runs
with) and `RunSettings` (the same, read leniently from an older or partial run.json).

`nas.search.settings` parses them from the command line; every reader (`results.run`) reads them
from here. "FLOPs" budgets are multiply-accumulates (MACs), as in the VAN and CMT papers, and
apply to the architecture at its deploy resolution (the space's), while the proxy trains at
``proxy_resolution``. The proxy's defaults are `train_proxy.proxy_defaults`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from search_space.errors import UserError
from train_proxy import proxy_defaults as proxy

OBJECTIVES = ("acc", "macs", "latency")
SAMPLERS = ("tpe", "nsga2", "random")
DEVICES = ("cpu", "cuda")

# 24 architectures at the lowest rung, the best third of them again at the top rung (the default
# proxy), keep `nas search --budget 4GFLOPs` on Fashion-MNIST within 10 minutes on 2 CPU cores
# (docs/search.md: the measured wall time). Scale up for real searches.
DEFAULT_TRIALS = 24
DEFAULT_EPOCHS = proxy.EPOCHS
DEFAULT_PROXY_RESOLUTION = proxy.RESOLUTION
DEFAULT_PROXY_WIDTH = proxy.WIDTH
DEFAULT_BATCH_SIZE = proxy.BATCH_SIZE
DEFAULT_DATA_FRACTION = proxy.DATA_FRACTION
DEFAULT_RUNGS = proxy.RUNGS
RUNG_GROWTH = proxy.RUNG_GROWTH
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
    data_fraction: float = DEFAULT_DATA_FRACTION  # of the top rung (`rung_ladder`)
    rungs: int = DEFAULT_RUNGS  # fidelity rungs; 1: every trial trains the one proxy
    low_rung_val_fraction: float = proxy.LOW_RUNG_VAL_FRACTION  # validation share scored below the top rung
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

    def rung_ladder(self) -> list[proxy.Rung]:
        """The search's rungs, lowest first (`train_proxy.proxy_defaults.rung_ladder`)."""
        return proxy.rung_ladder(self.epochs, self.proxy_width, self.data_fraction, self.rungs,
                                 self.low_rung_val_fraction)

    @property
    def top_rung(self) -> int:
        return self.rungs - 1

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
        values.setdefault("rungs", 1)  # a run from before rungs trained one proxy
        values.setdefault("low_rung_val_fraction", 1 / 6)  # runs from before it was recorded scored a sixth
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
        if values["rungs"] is None and isinstance(data.get("budget_macs"), int):
            values["rungs"] = 1  # a run from before rungs trained one proxy
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})



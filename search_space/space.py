"""Search spaces: a YAML description of per-stage choices, sampled define-by-run into `ArchConfig`s.

A knob is written as a scalar (fixed), a list (categorical choice) or a mapping
``{low, high, step}`` (integer range). Knobs that only matter for some block types (each block type
lists its own in ``BlockType.knobs``: heads for CMT/ACmix, K/V reduction for CMT, ...) are only
suggested when the sampled block reads them, so a sampler sees a conditional (define-by-run) space.

``SearchSpace.suggest(trial)`` works with an Optuna trial or with ``RandomChooser`` (seeded), so
random sampling and Optuna sampling share one code path.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import yaml

from .blocks.registry import block_names, get_block
from .config import DOWNSAMPLING_FIELDS, LIMITS, STAGE_FIELDS, ArchConfig, HeadConfig, StageConfig, StemConfig, _shown
from .cost import Cost
from .errors import ConfigError
from .yaml_io import load_yaml_file


@dataclass(frozen=True)
class Downsampling:
    """A stem and patch-embedding style, set for the whole network (the space's ``downsampling``),
    named after the family whose published models use it.

    Args:
        conv_stem: a ``conv3`` stem (stride 2) before stage 1, with the space's ``stem_channels``;
            else none, and stage 1's patch embedding reads the image.
        first_embed: (kernel, stride) of stage 1's patch embedding.
        embed: (kernel, stride) of the other stages' patch embeddings.
        embed_norm: the patch embeddings' norm.
        out_norm: the norm at the end of every stage.
    """

    conv_stem: bool
    first_embed: tuple[int, int]
    embed: tuple[int, int]
    embed_norm: str
    out_norm: str

    def stage_fields(self, index: int) -> dict[str, Any]:
        """The `DOWNSAMPLING_FIELDS` of stage ``index``."""
        kernel, stride = self.first_embed if index == 0 else self.embed
        return dict(embed_kernel=kernel, embed_stride=stride, embed_norm=self.embed_norm, out_norm=self.out_norm)

    def stem(self, channels: int) -> StemConfig:
        return StemConfig("conv3", channels) if self.conv_stem else StemConfig("none", 0)


DOWNSAMPLING_STYLES = {
    "cmt": Downsampling(conv_stem=True, first_embed=(2, 2), embed=(2, 2), embed_norm="ln", out_norm="none"),
    "van": Downsampling(conv_stem=False, first_embed=(7, 4), embed=(3, 2), embed_norm="bn", out_norm="ln"),
}
DOWNSAMPLING = tuple(sorted(DOWNSAMPLING_STYLES))  # the choices of the space's ``downsampling``
SET_BY_DOWNSAMPLING = DOWNSAMPLING_FIELDS  # search_space.config's one list of them
# every other StageConfig field may be a knob; which block types read which is theirs to say
STAGE_KNOBS = tuple(name for name in STAGE_FIELDS if name not in SET_BY_DOWNSAMPLING)
TOP_KNOBS = ("downsampling", "stem_channels", "head_fc_dim")
_TOP_LIMITS = {"stem_channels": "stem.channels", "head_fc_dim": "head.fc_dim"}  # their bounds in LIMITS
_KNOB_TYPES: dict[str, type] = {f.name: {"int": int, "float": float}.get(str(f.type), str) for f in fields(StageConfig)}
_NUMERIC: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float)}
_ARTICLE = {int: "an integer", float: "a number", str: "a string"}


class Chooser(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int: ...


class RandomChooser:
    """Uniform random choices from a seeded generator, with Optuna's trial interface."""

    def __init__(self, seed: int | random.Random) -> None:
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = value = self.rng.choice(list(choices))
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        self.params[name] = value = self.rng.randrange(low, high + 1, step)
        return value


MAX_RANGE_VALUES = 1024
MAX_STAGE_COMBINATIONS = 100_000  # categorical mixes of one stage walked by validation


@dataclass(frozen=True)
class Knob:
    """A fixed value, a categorical choice or an integer range."""

    choices: tuple[Any, ...] | None = None
    low: int | None = None
    high: int | None = None
    step: int = 1

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Knob":
        if isinstance(raw, Mapping):
            unknown = set(raw) - {"low", "high", "step"}
            if unknown or "low" not in raw or "high" not in raw:
                raise ConfigError(f"{where}: a range needs exactly 'low', 'high' and optionally 'step'")
            low, high, step = raw["low"], raw["high"], raw.get("step", 1)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)):
                raise ConfigError(f"{where}: range bounds must be integers")
            if step < 1 or low > high:
                raise ConfigError(f"{where}: empty range low={_shown(low)} high={_shown(high)} step={_shown(step)}")
            count = (high - low) // step + 1
            if count > MAX_RANGE_VALUES:  # every value is checked against the block types: keep it finite
                raise ConfigError(f"{where}: range low={_shown(low)} high={_shown(high)} step={_shown(step)} has "
                                  f"{_shown(count)} values; at most {MAX_RANGE_VALUES} (raise step or narrow it)")  # fmt: skip
            return cls(low=low, high=high, step=step)
        if isinstance(raw, list):
            if not raw:
                raise ConfigError(f"{where}: empty list of choices")
            if not all(isinstance(v, (int, float, str)) for v in raw):
                raise ConfigError(f"{where}: choices must be numbers or strings")
            return cls(choices=tuple(raw))
        if isinstance(raw, (int, float, str)):
            return cls(choices=(raw,))
        raise ConfigError(f"{where}: expected a value, a list of choices or a {{low, high}} range")

    def values(self) -> tuple[Any, ...]:
        if self.choices is not None:
            return self.choices
        return tuple(range(self.low, self.high + 1, self.step))  # type: ignore[arg-type]

    def suggest(self, chooser: Chooser, name: str) -> Any:
        if self.choices is not None:
            return self.choices[0] if len(self.choices) == 1 else chooser.suggest_categorical(name, self.choices)
        if self.low == self.high:
            return self.low
        return chooser.suggest_int(name, self.low, self.high, step=self.step)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    """A search space: per network and per stage, each knob a value, a list or an integer range.

    Loaded from YAML (`load`, `default`, `from_dict`) and validated choice by choice; `suggest`
    draws an `ArchConfig` define-by-run from an Optuna trial, `sample` from a seeded generator.

    Example:
        ```python
        from search_space import SearchSpace
        space = SearchSpace.default()
        cfg = space.sample(0)   # the same seed gives the same architecture
        ```
    """

    name: str
    resolution: int
    num_classes: int
    top: Mapping[str, Knob]
    stages: tuple[Mapping[str, Knob], ...]

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> "SearchSpace":
        """A validated space from plain data; an unknown key or knob is a `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        known = {"name", "resolution", "num_classes", "stages", *TOP_KNOBS}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
        stages_raw = data.get("stages")
        if not isinstance(stages_raw, list) or not stages_raw:
            raise ConfigError(f"{source}: 'stages' must be a non-empty list")
        top = {
            key: Knob.parse(data.get(key, default), f"{source}: {key}")
            for key, default in (("downsampling", "cmt"), ("stem_channels", 32), ("head_fc_dim", 0))
        }
        stages = []
        for i, raw in enumerate(stages_raw):
            where = f"{source}: stages[{i}]"
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{where}: expected a mapping")
            bad = sorted(set(map(str, raw)) - set(STAGE_KNOBS))
            if bad:
                raise ConfigError(f"{where}: unknown knob '{bad[0]}' (known: {', '.join(STAGE_KNOBS)})")
            for required in ("block", "depth", "width"):
                if required not in raw:
                    raise ConfigError(f"{where}: missing required knob '{required}'")
            stages.append({k: Knob.parse(v, f"{where}.{k}") for k, v in raw.items()})
        resolution, num_classes = data.get("resolution", 224), data.get("num_classes", 1000)
        for key, value in (("resolution", resolution), ("num_classes", num_classes)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        space = cls(str(data.get("name", "custom")), resolution, num_classes, top, tuple(stages))
        space.validate(source)
        return space

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        """A validated space from a YAML file (what `nas search --space FILE` reads)."""
        data = load_yaml_file(path, "search space file")
        if data is None:
            raise ConfigError(f"{path}: empty search space")
        return cls.from_dict(data, str(path))

    @classmethod
    def default(cls) -> "SearchSpace":
        """The packaged default space, ``search_space/spaces/default.yaml``."""
        text = resources.files("search_space").joinpath("spaces/default.yaml").read_text()
        return cls.from_dict(yaml.safe_load(text), "default space")

    # -- sampling ---------------------------------------------------------------------
    def suggest(self, chooser: Chooser, num_classes: int | None = None) -> ArchConfig:
        """Define-by-run: ask ``chooser`` (an Optuna trial or RandomChooser) for every choice."""
        style = DOWNSAMPLING_STYLES[self.top["downsampling"].suggest(chooser, "downsampling")]
        stem_channels = self.top["stem_channels"].suggest(chooser, "stem_channels") if style.conv_stem else 0
        fc_dim = self.top["head_fc_dim"].suggest(chooser, "head_fc_dim")
        stages = []
        for i, knobs in enumerate(self.stages):
            prefix = f"s{i + 1}."
            block = knobs["block"].suggest(chooser, prefix + "block")
            block_type = get_block(block)
            values: dict[str, Any] = {"block": block}
            for key, knob in knobs.items():
                if key == "block" or not block_type.reads(key):
                    continue
                values[key] = knob.suggest(chooser, prefix + key)
            if "mlp_ratio" in values:
                values["mlp_ratio"] = float(values["mlp_ratio"])
            stages.append(StageConfig(**values, **style.stage_fields(i)))
        cfg = ArchConfig(
            name="sample",
            resolution=self.resolution,
            num_classes=num_classes or self.num_classes,
            stem=style.stem(stem_channels),
            stages=tuple(stages),
            head=HeadConfig("conv_bn_act", fc_dim, 0.0) if fc_dim else HeadConfig("linear", 0, 0.0),
        )
        cfg.validate("sampled architecture")
        return cfg

    def sample(self, rng: int | random.Random, num_classes: int | None = None) -> ArchConfig:
        """A uniformly random valid architecture.

        Args:
            rng: a seed or a `random.Random`; the same seed gives the same architecture.
            num_classes: the classifier's classes; default the space's own.
        """
        return self.suggest(RandomChooser(rng), num_classes)

    # -- checks -----------------------------------------------------------------------
    def validate(self, source: str = "space") -> None:
        """Types, then every choice against its bound (`search_space.config.LIMITS`, or the bound
        a block family declares for its knob), then the block types' rules choice by choice, then
        the extreme corners. Nothing is costed or built before every value is within bounds."""
        if self.resolution < 32 or self.resolution % 32:
            raise ConfigError(f"{source}: resolution {_shown(self.resolution)} is not a positive multiple of 32")
        for key in ("resolution", "num_classes"):
            problem = LIMITS[key].problem(key, getattr(self, key))
            if problem:
                raise ConfigError(f"{source}: {problem}")
        for value in self.top["downsampling"].values():
            if value not in DOWNSAMPLING:
                raise ConfigError(f"{source}: unknown downsampling '{value}' (choose from {', '.join(DOWNSAMPLING)})")
        for key, name in _TOP_LIMITS.items():
            for value in self.top[key].values():
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{source}: {key}: choice {_short(value)} is not an integer")
                problem = LIMITS[name].problem(key, value)
                if problem:
                    raise ConfigError(f"{source}: {problem}")
        if len(self.stages) != 4:
            raise ConfigError(f"{source}: the space must have 4 stages (total stride 32), got {len(self.stages)}")
        for i, knobs in enumerate(self.stages):
            where = f"{source}: stages[{i}]"
            for block in knobs["block"].values():
                if block not in block_names():
                    raise ConfigError(f"{where}: unknown block type '{block}' (choose from {', '.join(block_names())})")
            for key, knob in knobs.items():  # types first: costing a corner does arithmetic on them
                kind = _KNOB_TYPES[key]
                for value in knob.values():
                    if not isinstance(value, _NUMERIC.get(kind, kind)) or isinstance(value, bool):
                        raise ConfigError(f"{where}.{key}: choice {_short(value)} is not {_ARTICLE[kind]}")
            _check_stage_bounds(knobs, where)
            size = self.resolution // (4 * 2**i)
            for block in knobs["block"].values():  # the block types' own constraints, choice by choice
                block_type = get_block(block)
                for knob in block_type.divides_width:
                    for value in _divisor_values(knobs, knob):
                        for width in knobs["width"].values():
                            if width % value:
                                raise ConfigError(
                                    f"{where}: width choice {width} is not divisible by {knob} choice {value}"
                                )
                for knob in block_type.divides_feature_map:
                    for value in _divisor_values(knobs, knob):
                        if size % value:
                            raise ConfigError(
                                f"{where}: {knob} choice {value} does not divide the {size}x{size} feature map"
                            )
        # every extreme corner must be a valid architecture (catches bad depths, ratios, kernels)
        self.smallest()

    def corner(self, pick: str) -> list[ArchConfig]:
        """Architectures taking the min (or max) of every ordered knob, over all categorical mixes."""
        fn = min if pick == "min" else max
        ordered = {"depth", "width", "mlp_ratio"}
        per_stage = []
        for knobs in self.stages:
            fixed = {k: fn(v.values()) for k, v in knobs.items() if k in ordered}
            free = [k for k in knobs if k not in ordered]
            count = math.prod(len(knobs[k].values()) for k in free)
            if count > MAX_STAGE_COMBINATIONS:
                raise ConfigError(f"{self.name}: a stage mixes {count} categorical choices (at most "
                                  f"{MAX_STAGE_COMBINATIONS}); use fewer values per knob")  # fmt: skip
            combos = [dict(zip(free, vals)) for vals in itertools.product(*(knobs[k].values() for k in free))]
            per_stage.append([{**fixed, **c} for c in combos])
        return per_stage  # type: ignore[return-value]

    def smallest(self, by: str = "macs") -> tuple[ArchConfig, Cost]:
        """The architecture with the fewest MACs (``by="macs"``) or parameters (``by="params"``).

        At the "min" corner the widths are fixed, so the patch embeddings no longer depend on the
        choices and stage costs add up: the cheapest option is picked stage by stage, for each
        downsampling family (parameters do not depend on the resolution; MACs at the space's).
        """
        from .counting import analytic_cost

        if by not in ("macs", "params"):
            raise ValueError(f"smallest(by={by!r}): choose 'macs' or 'params'")
        best: tuple[ArchConfig, Cost] | None = None
        for down in self.top["downsampling"].values():
            style = DOWNSAMPLING_STYLES[down]
            stem_channels = min(self.top["stem_channels"].values()) if style.conv_stem else 0
            fc_dim = min(self.top["head_fc_dim"].values())
            stages: list[StageConfig] = []
            for i, options in enumerate(self.corner("min")):
                candidates = []
                for values in options:
                    block_type = get_block(values["block"])
                    values = {k: v for k, v in values.items() if block_type.reads(k)}
                    values["mlp_ratio"] = float(values.get("mlp_ratio", 4.0))
                    candidates.append(StageConfig(**values, **style.stage_fields(i)))
                stages.append(min(candidates, key=lambda s: getattr(_stage_cost(s, i, self.resolution), by)))
            cfg = ArchConfig(
                name="smallest",
                resolution=self.resolution,
                num_classes=self.num_classes,
                stem=style.stem(stem_channels),
                stages=tuple(stages),
                head=HeadConfig("conv_bn_act", fc_dim, 0.0) if fc_dim else HeadConfig("linear", 0, 0.0),
            )
            cfg.validate("smallest architecture of the space")
            cost = analytic_cost(cfg)
            if best is None or getattr(cost, by) < getattr(best[1], by):
                best = (cfg, cost)
        assert best is not None
        return best


def _check_stage_bounds(knobs: Mapping[str, Knob], where: str) -> None:
    """Every numeric choice of a stage against its bound: the bound of each block type offered
    there that reads the knob (its own, or the backstop), and the backstop for a knob no offered
    block reads (as `ArchConfig.validate` checks a knob its block ignores)."""
    block_types = [get_block(block) for block in knobs["block"].values()]
    for key, knob in knobs.items():
        if key not in LIMITS:
            continue  # block, channel_attention: names, checked elsewhere
        readers = [bt for bt in block_types if bt.reads(key)]
        limits = [bt.limit(key) for bt in readers] or [(LIMITS[key], "")]
        values = knob.values() if knob.choices is not None else (knob.low, knob.high)  # a range: its ends
        for value in values:
            for limit, who in limits:
                problem = limit.problem(key, value, who)
                if problem:
                    raise ConfigError(f"{where}.{key}: {problem}")


def _short(value: Any) -> str:
    """A choice for a message, at most 60 characters."""
    text = _shown(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _divisor_values(knobs: Mapping[str, Knob], name: str) -> tuple[int, ...]:
    """A divisor knob's choices (the StageConfig default when the space leaves it out). Values
    below 1 are skipped here: checking the corners reports them by name."""
    values = knobs[name].values() if name in knobs else (StageConfig.__dataclass_fields__[name].default,)
    return tuple(v for v in values if v >= 1)


def _stage_cost(stage: StageConfig, index: int, resolution: int) -> Cost:
    """A stage's blocks and shared module (what its choices change) at the space's resolution."""
    block_type = get_block(stage.block)
    size = resolution // (4 * 2**index)
    return block_type.cost(stage, size) * stage.depth + block_type.shared_cost(stage, size)

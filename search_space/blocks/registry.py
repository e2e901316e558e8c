"""The one block registry: everything the engine knows about a block type, declared by the block.

A block is a token mixer plus a channel FFN with norms and residuals. Every block takes and
returns NCHW tensors, so any stage may use any block. A block type may also own a per-stage
``shared`` module (CMT's relative position bias), built once per stage and passed to each block.

A block family is one module of this package that calls ``register(BlockType(...))``; modules are
discovered (every module of the package is imported once, on first use of the registry), so
adding a family edits no other file. Helper modules that register nothing are harmless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from torch import nn

from .. import config
from ..config import KNOB_FIELDS, LIMITS, Limit, StageConfig, _shown
from ..cost import ZERO, Cost
from ..discovery import import_package_modules

# Stage fields every block reads (or the stage itself uses: depth, the patch embedding, the
# stage-end norm): `search_space.config.COMMON_STAGE_FIELDS`, the one list. Any other StageConfig
# field is a block knob: read only by the block types that declare it in ``knobs``, ignored (and
# not sampled) for the others.
COMMON_STAGE_FIELDS = frozenset(config.COMMON_STAGE_FIELDS)
DEFAULT_COLOUR = "#9a9a9a"


def _no_summary(stage: StageConfig) -> Mapping[str, str]:
    return {}


def _no_check(stage: StageConfig, size: int) -> Optional[str]:
    return None


@dataclass(frozen=True)
class BlockType:
    """A block family. Only ``name``, ``build``, ``cost`` are required.

    * ``build(stage, size, drop_path=rate)``: one block; ``size`` is the stage's feature side at
      the config resolution, ``drop_path`` its stochastic-depth rate.
    * ``cost(stage, size)``: params and MACs of one block at a ``size`` x ``size`` feature map.
    * ``build_shared`` / ``shared_cost``: the optional per-stage module, sized at the config
      resolution (built once per stage, passed to every block's forward as ``shared``).
    * ``knobs``: the StageConfig fields beyond the common ones that the block reads (e.g. heads).
      The search space samples them only for this block; the latency table keys on them.
    * ``divides_width``: knobs that must divide the stage width (heads); widths are rounded to
      multiples of them.
    * ``divides_feature_map``: knobs that must divide the stage's feature side at the config
      resolution (CMT's K/V reduction); scaling repairs them when the resolution changes.
    * ``check(stage, size)``: any further rule, returning a problem (one phrase) or None.
    * ``limits``: the family's own bound of some of its knobs, where the family's use of a knob
      calls for a tighter one than the backstop of `search_space.config.LIMITS` (never a looser
      one), with the reason in its ``why``. `ArchConfig.validate` and `SearchSpace.validate`
      check every stage of the family against it before anything is built or counted.
    * ``odd``: knobs that must be positive odd numbers (centred kernels). The rule holds for the
      knob in every stage, as the bounds do: a stage whose block ignores the knob keeps a value
      that stays valid should the stage switch to this block (`knob_problem`).
    * ``summary(stage)``: the block's cells of per-stage tables, keyed by column: ``heads``,
      ``kv_reduction``, ``kernels``; a missing column is shown as "-".
    * ``label``: its name for people (cards, plots, help); the registry name when not given.
    * ``colour``: its colour in plots.
    """

    name: str
    build: Callable[..., nn.Module]
    cost: Callable[[StageConfig, int], Cost]
    build_shared: Optional[Callable[[StageConfig, int], Optional[nn.Module]]] = None
    shared_cost: Callable[[StageConfig, int], Cost] = lambda stage, size: ZERO
    description: str = ""
    knobs: tuple[str, ...] = ()
    divides_width: tuple[str, ...] = ()
    divides_feature_map: tuple[str, ...] = ()
    check: Callable[[StageConfig, int], Optional[str]] = _no_check
    summary: Callable[[StageConfig], Mapping[str, str]] = _no_summary
    colour: str = DEFAULT_COLOUR
    limits: Mapping[str, Limit] = field(default_factory=dict, hash=False)
    odd: tuple[str, ...] = ()
    label: str = ""

    @property
    def display_name(self) -> str:
        """The family's name for people: its ``label``, else its registry name."""
        return self.label or self.name

    def reads(self, field: str) -> bool:
        """Whether this block type depends on the stage field ``field``."""
        return field in self.knobs or field not in block_knobs()

    def read_fields(self) -> tuple[str, ...]:
        """The StageConfig fields this block type depends on, in declaration order: the common
        ones and its own knobs (what the architecture hash covers)."""
        return tuple(name for name in config.STAGE_FIELDS if self.reads(name))

    def knob_problem(self, stage: StageConfig) -> Optional[str]:
        """The first knob of ``stage`` that breaks a value rule (``odd``), or None. A knob this
        block reads follows this block's rules; one it ignores follows those of the blocks that
        read it (so that it stays valid should the stage switch to one of them)."""
        for knob in KNOB_FIELDS:
            if knob in self.odd or (knob in odd_knobs() and not self.reads(knob)):
                value = getattr(stage, knob)
                if value < 1 or value % 2 == 0:
                    return f"{knob} must be a positive odd number, got {_shown(value)}"
        return None

    def limit(self, name: str) -> tuple[Limit, str]:
        """The bound of stage field ``name`` in a stage of this family, and whose it is ("" for the
        backstop of `LIMITS`, "<family>'s " for the family's own)."""
        own = self.limits.get(name)
        return (own, f"{self.name}'s ") if own is not None else (LIMITS[name], "")

    def problem(self, stage: StageConfig, size: int, resolution: int) -> Optional[str]:
        """The first thing wrong with ``stage`` for this block type (``size``: feature side), or None."""
        for knob in self.divides_width:
            value = getattr(stage, knob)
            if stage.width % value:
                return f"width {stage.width} is not divisible by {knob} {value}"
        for knob in self.divides_feature_map:
            value = getattr(stage, knob)
            if size % value:
                return (
                    f"{knob} {value} does not divide the stage's {size}x{size} feature map at resolution {resolution}"
                )
        return self.check(stage, size)

    def width_multiple(self, stage: StageConfig) -> int:
        """The number every width of this block must be a multiple of (1 when unconstrained)."""
        return math.lcm(1, *(getattr(stage, knob) for knob in self.divides_width))


_REGISTRY: dict[str, BlockType] = {}
_loaded = False
_block_knobs: frozenset[str] | None = None
_odd_knobs: frozenset[str] | None = None


def register(block_type: BlockType) -> BlockType:
    global _block_knobs, _odd_knobs
    if block_type.name in _REGISTRY:
        raise ValueError(f"block type '{block_type.name}' registered twice")
    declared = (*block_type.knobs, *block_type.divides_width, *block_type.divides_feature_map, *block_type.odd)
    for knob in declared:
        if knob not in KNOB_FIELDS:
            raise ValueError(
                f"block type '{block_type.name}': knob '{knob}' is not a block-specific StageConfig field "
                f"(choose from {', '.join(KNOB_FIELDS)})"
            )
        if knob not in block_type.knobs:
            raise ValueError(f"block type '{block_type.name}': '{knob}' is constrained but not listed in knobs")
    for knob, own in block_type.limits.items():
        if knob not in block_type.knobs:
            raise ValueError(f"block type '{block_type.name}': '{knob}' has limits but is not listed in knobs")
        backstop = LIMITS.get(knob)
        if backstop is None:
            raise ValueError(f"block type '{block_type.name}': '{knob}' is not a numeric knob; it takes no limits")
        if not (isinstance(own, Limit) and backstop.low <= own.low <= own.high <= backstop.high):
            raise ValueError(f"block type '{block_type.name}': the limits of '{knob}' must be a Limit within "
                             f"[{backstop.low:g}, {backstop.high:g}] (search_space.config.LIMITS)")  # fmt: skip
    _REGISTRY[block_type.name] = block_type
    _block_knobs = _odd_knobs = None
    return block_type


def _ensure_loaded() -> None:
    """Import every module of this package once (registration is their import side effect)."""
    global _loaded
    if _loaded:
        return
    import_package_modules(__package__)
    _loaded = True  # only once every import succeeded: a broken module keeps failing loudly


def block_names() -> tuple[str, ...]:
    _ensure_loaded()
    return tuple(sorted(_REGISTRY))


def block_types() -> tuple[BlockType, ...]:
    return tuple(_REGISTRY[name] for name in block_names())


def block_knobs() -> frozenset[str]:
    """Every field some registered block type declares as its own knob."""
    global _block_knobs
    if _block_knobs is None:
        _ensure_loaded()
        _block_knobs = frozenset(knob for bt in _REGISTRY.values() for knob in bt.knobs)
    return _block_knobs


def odd_knobs() -> frozenset[str]:
    """Every knob some registered block type declares ``odd``."""
    global _odd_knobs
    if _odd_knobs is None:
        _ensure_loaded()
        _odd_knobs = frozenset(knob for bt in _REGISTRY.values() for knob in bt.odd)
    return _odd_knobs


def readers_of(knob: str) -> tuple[BlockType, ...]:
    """The registered block types that read ``knob``."""
    return tuple(bt for bt in block_types() if knob in bt.knobs)


def blocks_phrase(names: Iterable[str] | None = None) -> str:
    """Block families for prose, by their labels, in the registry's order: ``"ACmix, CMT and VAN"``
    (``names``: registry names; default every registered family; an unknown name as given)."""
    wanted = set(block_names() if names is None else names)
    labels = [bt.display_name for bt in block_types() if bt.name in wanted]
    labels += sorted(n for n in wanted if n not in _REGISTRY)  # unknown names, as given
    if len(labels) <= 1:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def get_block(name: str) -> BlockType:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(f"unknown block type '{name}' (choose from {', '.join(block_names())})") from None

"""The channel/spatial attention registry: name -> how to build it and what it costs.

Each module lives in its own file in this package and registers itself on import; the package
is scanned once (``pkgutil``), so adding a file is all it takes to add a choice. The names are
the values of a stage's ``channel_attention`` field, and config validation reads them here.

An attention module takes and returns a block's NCHW token-mixer output (same shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..cost import Cost
from ..discovery import import_package_modules

BOTTLENECK_RATIO = 0.25
MIN_BOTTLENECK = 8


def bottleneck_width(channels: int) -> int:
    """Hidden width of every excitation/transform bottleneck here (SE, GC, CAT, wavelet).

    One rule for all modules keeps them comparable in the search: C/4 with a floor of 8 (the
    space's widths are 32..512; the papers' C/16 would leave 2-channel bottlenecks in stage 1).
    """
    return max(MIN_BOTTLENECK, int(channels * BOTTLENECK_RATIO))


NO_ATTENTION = "none"  # the choice that applies nothing (none.py): listed first, drawn without hatching

# Hatches for modules that declare none, in the order they are handed out (matplotlib patterns; a
# module's own ``hatch`` is never handed to another one).
HATCH_POOL = ("//", "..", "xx", "\\\\", "oo", "++", "--", "||", "**", "OO", "/o", "\\|", "x*", "o-", "+o", "|*")


@dataclass(frozen=True)
class AttentionType:
    """A channel/spatial attention module. Only ``label`` and ``hatch`` are about people:

    * ``label``: its name in cards, plots and help (``"SE"``); the registry name upper-cased when
      not given.
    * ``hatch``: its matplotlib hatch in plots (the block-mix figure of `nas report`). When not
      given, the registry hands it one of `HATCH_POOL` that no other module uses (`attention_style`);
      two modules may not declare the same one.
    """

    name: str
    build: Callable[[int], nn.Module]  # channels -> module
    cost: Callable[[int, int], Cost]  # (channels, side of the square feature map) -> one module's cost
    size_dependent: bool  # True when MACs grow with the feature map (the cost needs the real size)
    description: str
    reference: str = ""
    label: str = ""
    hatch: str | None = None

    @property
    def display_name(self) -> str:
        return self.label or self.name.upper()


@dataclass(frozen=True)
class AttentionStyle:
    """How plots draw a stage's channel attention: a hatch over the block's colour, and a legend label."""

    hatch: str
    label: str


_REGISTRY: dict[str, AttentionType] = {}
_loaded = False
_names: tuple[str, ...] | None = None  # cached: validation asks for every stage of every sample
_styles: dict[str, AttentionStyle] | None = None


def register(kind: AttentionType) -> AttentionType:
    global _names, _styles
    if kind.name in _REGISTRY:
        raise ValueError(f"channel attention '{kind.name}' registered twice")
    if kind.hatch is not None:
        if kind.hatch == "" and kind.name != NO_ATTENTION:
            raise ValueError(f"channel attention '{kind.name}': an empty hatch would draw it as '{NO_ATTENTION}'")
        taken = [other.name for other in _REGISTRY.values() if other.hatch == kind.hatch]
        if taken:
            raise ValueError(f"channel attention '{kind.name}': hatch '{kind.hatch}' is already {taken[0]}'s")
    _REGISTRY[kind.name] = kind
    _names = _styles = None
    return kind


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    import_package_modules(__name__.rsplit(".", 1)[0])
    _loaded = True  # only once every import succeeded: a broken module keeps failing loudly


def attention_names() -> tuple[str, ...]:
    """Registered names, ``none`` first, the rest sorted."""
    global _names
    _ensure_loaded()
    if _names is None:
        _names = tuple(sorted(_REGISTRY, key=lambda n: (n != NO_ATTENTION, n)))
    return _names


def attention_styles() -> dict[str, AttentionStyle]:
    """Every registered module's plot style, by name: its own hatch, or one handed out from
    `HATCH_POOL` (in name order, skipping the hatches modules declare), so that no two modules
    are drawn alike."""
    global _styles
    names = attention_names()
    if _styles is None:
        declared = {kind.hatch for kind in _REGISTRY.values() if kind.hatch is not None}
        free = iter([h for h in HATCH_POOL if h not in declared])
        styles = {}
        for name in names:
            kind = _REGISTRY[name]
            hatch = kind.hatch if kind.hatch is not None else next(free, None)
            if hatch is None:
                raise ValueError(f"channel attention '{name}': no hatch left in HATCH_POOL; declare one")
            styles[name] = AttentionStyle(hatch, kind.display_name)
        _styles = styles
    return _styles


def attention_style(name: str) -> AttentionStyle:
    """The plot style of channel attention ``name`` (see `attention_styles`)."""
    get_attention(name)  # an unknown name: a ConfigError naming the choices
    return attention_styles()[name]


def get_attention(name: str) -> AttentionType:
    kind = _REGISTRY.get(name)  # fast path: the analytic count asks once per block
    if kind is not None:
        return kind
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        from ..errors import ConfigError

        choices = ", ".join(attention_names())
        raise ConfigError(f"unknown channel_attention '{name}' (choose from {choices})") from None

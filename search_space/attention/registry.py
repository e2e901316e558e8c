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


@dataclass(frozen=True)
class AttentionType:
    name: str
    build: Callable[[int], nn.Module]  # channels -> module
    cost: Callable[[int, int], Cost]  # (channels, side of the square feature map) -> one module's cost
    size_dependent: bool  # True when MACs grow with the feature map (the cost needs the real size)
    description: str
    reference: str = ""


_REGISTRY: dict[str, AttentionType] = {}
_loaded = False
_names: tuple[str, ...] | None = None  # cached: validation asks for every stage of every sample


def register(kind: AttentionType) -> AttentionType:
    global _names
    if kind.name in _REGISTRY:
        raise ValueError(f"channel attention '{kind.name}' registered twice")
    _REGISTRY[kind.name] = kind
    _names = None
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
        _names = tuple(sorted(_REGISTRY, key=lambda n: (n != "none", n)))
    return _names


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

"""The one block registry: block type name -> how to build it and what it costs.

A block is a token mixer plus a channel FFN with norms and residuals. Every block takes and
returns NCHW tensors, so any stage may use any block. A block type may also own a per-stage
``shared`` module (CMT's relative position bias), built once per stage and passed to each block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from ..config import StageConfig
from ..cost import ZERO, Cost


@dataclass(frozen=True)
class BlockType:
    name: str
    # (stage, feature size at config resolution, drop_path=rate): the block's stochastic depth rate
    build: Callable[..., nn.Module]
    cost: Callable[[StageConfig, int], Cost]  # one block at a size x size feature map
    build_shared: Optional[Callable[[StageConfig, int], Optional[nn.Module]]] = None
    shared_cost: Callable[[StageConfig, int], Cost] = lambda stage, size: ZERO
    description: str = ""


_REGISTRY: dict[str, BlockType] = {}


def register(block_type: BlockType) -> BlockType:
    if block_type.name in _REGISTRY:
        raise ValueError(f"block type '{block_type.name}' registered twice")
    _REGISTRY[block_type.name] = block_type
    return block_type


def _ensure_loaded() -> None:
    # Import every block module (idempotent): importing one family directly must not hide the others.
    from . import acmix, cmt, van  # noqa: F401  (registration side effect)


def block_names() -> tuple[str, ...]:
    _ensure_loaded()
    return tuple(sorted(_REGISTRY))


def get_block(name: str) -> BlockType:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(f"unknown block type '{name}' (choose from {', '.join(block_names())})") from None

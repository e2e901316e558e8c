"""``none``: no attention (the block's mixer output passes through unchanged)."""

from __future__ import annotations

from torch import nn

from ..cost import ZERO
from .registry import AttentionType, register

register(
    AttentionType(
        name="none",
        build=lambda channels: nn.Identity(),
        cost=lambda channels, size: ZERO,
        size_dependent=False,
        description="no attention",
        label="none",
        hatch="",  # plots: no hatching
    )
)

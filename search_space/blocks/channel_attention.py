"""The blocks' entry points to the attention registry (``search_space/attention/``).

``build_channel_attention`` builds the module a stage's ``channel_attention`` names, applied to
a block's token-mixer output; ``channel_attention_cost`` is one module's cost. Modules whose MACs
grow with the feature map (gc, cat, wavelet) need ``size``, the side of the block's square map.
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from ..attention import get_attention
from ..attention.eca import EfficientChannelAttention, eca_kernel
from ..attention.se import SqueezeExcite
from ..cost import Cost

__all__ = [
    "EfficientChannelAttention", "SqueezeExcite", "build_channel_attention", "channel_attention_cost", "eca_kernel",
]  # fmt: skip


def build_channel_attention(kind: str, channels: int) -> nn.Module:
    return get_attention(kind).build(channels)


@lru_cache(maxsize=4096)  # few (kind, width, size) triples recur across thousands of samples
def channel_attention_cost(kind: str, channels: int, size: int | None = None) -> Cost:
    attention = get_attention(kind)
    if size is None:
        if attention.size_dependent:
            raise TypeError(f"channel_attention_cost('{kind}', ...) needs the feature map size")
        size = 1
    return attention.cost(channels, size)

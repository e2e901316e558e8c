"""``eca``: efficient channel attention (Wang et al., 2020): GAP -> 1-D conv across channels -> gate."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..cost import Cost
from .registry import AttentionType, register


def eca_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: nearest odd number to (log2(C) + b) / gamma."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # B, 1, C
        w = self.conv(s).sigmoid().transpose(1, 2).unsqueeze(-1)  # B, C, 1, 1
        return x * w


def eca_cost(channels: int, size: int) -> Cost:
    k = eca_kernel(channels)
    return Cost(k, k * channels)  # one k-tap filter slid over the C pooled values


register(
    AttentionType(
        name="eca",
        build=EfficientChannelAttention,
        cost=eca_cost,
        size_dependent=False,
        description="ECA: GAP -> 1-D conv over channels (adaptive odd kernel) -> sigmoid channel gate",
        reference="Wang et al., ECA-Net, CVPR 2020",
        label="ECA",
        hatch="..",  # plots: drawn over the block colour
    )
)

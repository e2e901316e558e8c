"""``se``: squeeze-and-excitation (Hu et al., 2018): GAP -> 1x1 -> ReLU -> 1x1 -> sigmoid gate."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..cost import Cost
from .registry import AttentionType, bottleneck_width, register


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or bottleneck_width(channels)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.expand(self.act(self.reduce(s))).sigmoid()


def excitation_cost(channels: int, hidden: int) -> Cost:
    """The two 1x1 convs (with biases) on a 1x1 map; shared by SE and the wavelet module."""
    return C.conv(channels, hidden, 1, 1) + C.conv(hidden, channels, 1, 1)


def se_cost(channels: int, size: int) -> Cost:
    return excitation_cost(channels, bottleneck_width(channels))


register(
    AttentionType(
        name="se",
        build=SqueezeExcite,
        cost=se_cost,
        size_dependent=False,
        description="squeeze-excitation: GAP -> 1x1 (C/4, min 8) -> ReLU -> 1x1 -> sigmoid channel gate",
        reference="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
        label="SE",
        hatch="//",  # plots: drawn over the block colour
    )
)

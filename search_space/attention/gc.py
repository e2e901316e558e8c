"""``gc``: the global context block of GCNet (Cao et al., 2019).

Context modelling: a 1x1 conv (C -> 1) gives one attention logit per position, softmax over the
H*W positions, and the features' attention-weighted sum gives one C-vector per image. Transform:
1x1 conv C -> h, LayerNorm, ReLU, 1x1 conv h -> C (on a 1x1 map, so held here as two linears on
the C-vector). Fusion: the result is added at every position (the paper's default, "channel
add"). As in the official code the last layer starts at zero, so the module starts as an
identity, and every conv/linear has a bias.

Bottleneck h: the paper uses C/16 (r16) in its ResNet setting and reports r4 slightly more
accurate; here h = ``bottleneck_width(C)`` = max(8, C/4), the one rule of this package.

Counting: the context conv (C MACs per position) and the weighted sum, a (C x HW) @ (HW x 1)
matrix product (C*HW MACs), both grow with the feature map; the transform runs on a 1x1 map
(2*C*h MACs). Softmax, LayerNorm, ReLU and the broadcast add are not MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..cost import Cost
from .registry import AttentionType, bottleneck_width, register


class GlobalContext(nn.Module):
    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or bottleneck_width(channels)
        self.context = nn.Conv2d(channels, 1, 1)  # W_k: attention logits
        # the official 1x1 convs on the 1x1 context, as linears on the C-vector (same weights and
        # MACs); LayerNorm(h) then has 1-D parameters, which the trainer keeps out of weight decay
        self.transform = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.context(x).flatten(2).softmax(-1)  # B, 1, HW
        context = torch.matmul(x.flatten(2), weights.transpose(1, 2))  # B, C, 1: a matrix product
        return x + self.transform(context.squeeze(-1))[..., None, None]


def gc_cost_with(channels: int, size: int, hidden: int) -> Cost:
    n = size * size
    return (
        C.conv(channels, 1, 1, n)  # context logits
        + Cost(0, channels * n)  # attention-weighted sum over positions
        + C.linear(channels, hidden, 1)
        + C.norm(hidden)
        + C.linear(hidden, channels, 1)
    )


def gc_cost(channels: int, size: int) -> Cost:
    return gc_cost_with(channels, size, bottleneck_width(channels))


register(
    AttentionType(
        name="gc",
        build=GlobalContext,
        cost=gc_cost,
        size_dependent=True,
        description="global context: softmax attention pooling -> 1x1 (C/4, min 8) -> LN -> ReLU -> 1x1, added",
        reference="Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond, 2019",
        label="GC",
        hatch="xx",  # plots: drawn over the block colour
    )
)

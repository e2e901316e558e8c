"""``wavelet``: wavelet-compression channel attention (WaveNet-C, Salman et al., 2022).

The paper shows that global average pooling is recursive Haar compression: keeping only the
low-low (LL) band of a 2-D Haar transform halves each side, and repeating until 1x1 leaves the
mean (up to a scale factor; exactly the mean with the LL filter normalised to [[1/4, 1/4],
[1/4, 1/4]]). With the fixed LL filter this module would therefore *be* SE.

What makes it different here, as in the authors' released code (a learned 2x2 stride-2 filter
applied recursively): the 2x2 filter is trainable, one per channel and shared by all levels.
Any 2x2 filter is a combination of the four Haar analysis filters (LL, LH, HL, HH), so the
excitation is fed by a learned per-channel mix of all four bands at every level, not by the LL
band only. It starts as the normalised LL filter, i.e. as GAP on power-of-two maps. An odd side
is zero-padded to even before each level (Haar with zero extension). The excitation is SE's:
1x1 C -> h -> C with biases, ReLU, sigmoid gate on the input, h = max(8, C/4).

Counting: each level is a depthwise 2x2 stride-2 conv, 4*C MACs per output position, summed
over the levels (about 4/3 * C * H*W in all); the excitation is 2*C*h. Padding, ReLU, sigmoid
and the gating product are not MACs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost as C
from ..cost import Cost
from .registry import AttentionType, bottleneck_width, register
from .se import excitation_cost


def compression_sides(size: int) -> list[int]:
    """Output side of each compression level for a size x size map: ceil-halving down to 1."""
    sides = []
    while size > 1:
        size = (size + 1) // 2
        sides.append(size)
    return sides


class WaveletChannelAttention(nn.Module):
    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or bottleneck_width(channels)
        self.compress = nn.Conv2d(channels, channels, 2, stride=2, groups=channels, bias=False)
        nn.init.constant_(self.compress.weight, 0.25)  # the normalised Haar LL filter
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        s = x
        while s.shape[-2] > 1 or s.shape[-1] > 1:
            s = self.compress(F.pad(s, (0, s.shape[-1] % 2, 0, s.shape[-2] % 2)))
        return s  # B, C, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.expand(self.act(self.reduce(self.squeeze(x)))).sigmoid()


def wavelet_cost_with(channels: int, size: int, hidden: int) -> Cost:
    compression = C.params(4 * channels) + Cost(0, sum(4 * channels * s * s for s in compression_sides(size)))
    return compression + excitation_cost(channels, hidden)


def wavelet_cost(channels: int, size: int) -> Cost:
    return wavelet_cost_with(channels, size, bottleneck_width(channels))


register(
    AttentionType(
        name="wavelet",
        build=WaveletChannelAttention,
        cost=wavelet_cost,
        size_dependent=True,
        description="WaveNet-C: recursive learned 2x2 (Haar-initialised) compression to 1x1 -> SE excitation",
        reference="Salman et al., WaveNets: Wavelet Channel Attention Networks, 2022 (arXiv 2211.02695)",
        label="wavelet",
        hatch="oo",  # plots: drawn over the block colour
    )
)

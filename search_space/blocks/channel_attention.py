"""Optional channel attention applied to a block's token-mixer output: SE and ECA."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import cost as C
from ..cost import ZERO, Cost

SE_RATIO = 0.25


def se_hidden(channels: int) -> int:
    return max(8, int(channels * SE_RATIO))


def eca_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: nearest odd number to (log2(C) + b) / gamma."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = se_hidden(channels)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.expand(self.act(self.reduce(s))).sigmoid()


class EfficientChannelAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # B, 1, C
        w = self.conv(s).sigmoid().transpose(1, 2).unsqueeze(-1)  # B, C, 1, 1
        return x * w


def build_channel_attention(kind: str, channels: int) -> nn.Module:
    if kind == "se":
        return SqueezeExcite(channels)
    if kind == "eca":
        return EfficientChannelAttention(channels)
    return nn.Identity()


def channel_attention_cost(kind: str, channels: int) -> Cost:
    if kind == "se":
        hidden = se_hidden(channels)
        return C.conv(channels, hidden, 1, 1) + C.conv(hidden, channels, 1, 1)
    if kind == "eca":
        k = eca_kernel(channels)
        return Cost(k, k * channels)
    return ZERO

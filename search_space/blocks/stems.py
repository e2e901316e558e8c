"""Stems and patch embeddings of both families, with their cost models."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..config import StageConfig, StemConfig
from ..cost import ZERO, Cost
from .layers import make_norm2d


class ConvStem(nn.Module):
    """CMT's stem: 3x3 stride-2 conv, then two 3x3 convs, each followed by GELU and BatchNorm."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2 if i == 0 else 1, padding=1),
                nn.GELU(),
                nn.BatchNorm2d(channels),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_stem(stem: StemConfig, in_channels: int) -> tuple[nn.Module, int]:
    """Returns the stem and its output channels."""
    if stem.kind == "conv3":
        return ConvStem(in_channels, stem.channels), stem.channels
    return nn.Identity(), in_channels


def stem_cost(stem: StemConfig, in_channels: int, resolution: int) -> Cost:
    if stem.kind != "conv3":
        return ZERO
    n, ch = (resolution // 2) ** 2, stem.channels
    return C.conv(in_channels, ch, 3, n) + C.norm(ch) + (C.conv(ch, ch, 3, n) + C.norm(ch)) * 2


class PatchEmbed(nn.Module):
    """Downsampling conv + norm: VAN's overlapping 7x7/4 and 3x3/2 (BN), CMT's 2x2/2 (LN)."""

    def __init__(self, in_channels: int, stage: StageConfig) -> None:
        super().__init__()
        k, s = stage.embed_kernel, stage.embed_stride
        self.proj = nn.Conv2d(in_channels, stage.width, k, stride=s, padding=k // 2 if k > s else 0)
        self.norm = make_norm2d(stage.embed_norm, stage.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def patch_embed_cost(in_channels: int, stage: StageConfig, out_size: int) -> Cost:
    return C.conv(in_channels, stage.width, stage.embed_kernel, out_size * out_size) + C.norm(stage.width)

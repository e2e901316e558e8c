"""VAN block: Large Kernel Attention token mixer + convolutional FFN (Guo et al., 2022).

LKA decomposes a large kernel into a depthwise conv, a dilated depthwise conv and a 1x1 conv;
its output is used as an elementwise attention map on the input. BatchNorm and layer scale
(1e-2) as in the released VAN.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..config import StageConfig
from ..cost import Cost
from .channel_attention import build_channel_attention, channel_attention_cost
from .layers import DropPath
from .registry import BlockType, register

LAYER_SCALE_INIT = 1e-2


class LargeKernelAttention(nn.Module):
    def __init__(self, dim: int, kernel: int = 5, dilated_kernel: int = 7, dilation: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.depthwise_dilated = nn.Conv2d(
            dim, dim, dilated_kernel, padding=dilation * (dilated_kernel // 2), dilation=dilation, groups=dim
        )
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.pointwise(self.depthwise_dilated(self.depthwise(x)))
        return x * attn


class VANAttention(nn.Module):
    """1x1 -> GELU -> LKA -> 1x1, with its own shortcut (the released VAN's SpatialAttention)."""

    def __init__(self, dim: int, stage: StageConfig) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.lka = LargeKernelAttention(dim, stage.lka_kernel, stage.lka_dilated_kernel, stage.lka_dilation)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.lka(self.act(self.proj_in(x)))) + x


class ConvFFN(nn.Module):
    """1x1 expand -> 3x3 depthwise conv -> GELU -> 1x1 project."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class VANBlock(nn.Module):
    """Convs keep the model's default init (He on fan-out divided by groups), as VAN's code does."""

    def __init__(self, stage: StageConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = stage.width
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = VANAttention(dim, stage)
        self.channel_attn = build_channel_attention(stage.channel_attention, dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.ffn = ConvFFN(dim, stage.hidden)
        self.layer_scale_1 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim, 1, 1))
        self.layer_scale_2 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim, 1, 1))
        self.drop_path = DropPath(drop_path)  # on both residual branches, as VAN's code does

    def forward(self, x: torch.Tensor, shared: object = None) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.channel_attn(self.attn(self.norm1(x))))
        x = x + self.drop_path(self.layer_scale_2 * self.ffn(self.norm2(x)))
        return x


def van_block_cost(stage: StageConfig, size: int) -> Cost:
    dim, hidden, n = stage.width, stage.hidden, size * size
    mixer = (
        C.conv(dim, dim, 1, n)
        + C.conv(dim, dim, stage.lka_kernel, n, groups=dim)
        + C.conv(dim, dim, stage.lka_dilated_kernel, n, groups=dim)
        + C.conv(dim, dim, 1, n)
        + C.conv(dim, dim, 1, n)
    )
    ffn = C.conv(dim, hidden, 1, n) + C.conv(hidden, hidden, 3, n, groups=hidden) + C.conv(hidden, dim, 1, n)
    extras = C.norm(dim) * 2 + C.params(2 * dim)  # two BatchNorms, two layer scales
    return mixer + channel_attention_cost(stage.channel_attention, dim, size) + ffn + extras


def van_summary(stage: StageConfig) -> dict[str, str]:
    k, kd = stage.lka_kernel, stage.lka_dilated_kernel
    return {"kernels": f"LKA {k}x{k} + {kd}x{kd} d{stage.lka_dilation}"}


register(
    BlockType(
        name="van",
        build=lambda stage, size, drop_path=0.0: VANBlock(stage, drop_path=drop_path),
        cost=van_block_cost,
        description="VAN: LKA (DW conv, dilated DW conv, 1x1) attention map + conv FFN, BatchNorm",
        knobs=("lka_kernel", "lka_dilated_kernel", "lka_dilation"),
        odd=("lka_kernel", "lka_dilated_kernel"),  # centred depthwise kernels
        summary=van_summary,
        label="VAN",
        colour="#1f77b4",
    )
)

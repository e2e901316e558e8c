"""Small layers shared by several blocks."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (same parameters as a token LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm2d(kind: str, channels: int, eps: float = 1e-5) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=eps)
    raise ValueError(f"unknown norm kind '{kind}'")


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a whole sample with probability
    ``rate`` and scale the kept samples by 1 / (1 - rate), so the expected output is unchanged.
    Identity in eval mode and at rate 0 (it has no parameters and costs no MACs)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"

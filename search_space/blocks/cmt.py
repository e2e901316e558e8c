"""CMT block: Local Perception Unit, Lightweight MHSA and Inverted Residual FFN (Guo et al., 2022).

Follows the released CMT code: the K/V reduction is a k x k stride-k depthwise conv + BatchNorm,
the relative position bias is one parameter per stage shaped (heads, N, N/k^2) for the configured
resolution and shared by the stage's blocks. At another input size the bias is interpolated, so
one model trains at a low proxy resolution and deploys at its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost as C
from ..config import StageConfig
from ..cost import Cost
from .layers import DropPath, LayerNorm2d
from .channel_attention import build_channel_attention, channel_attention_cost
from .registry import BlockType, register
from .traced_macs import counting

# Attention over fewer keys than this is written out on the CPU (scores, softmax, weighted sum). There
# SDPA with a float mask (the relative position bias) takes its math path, whose softmax, like
# PyTorch's own, is slow on rows shorter than its vector width; the K/V grids of a 32 px proxy have
# 1-4 keys. Forward and backward at batch 64, one thread: 0.42x SDPA's CPU time with 64 queries and 4
# keys (CMT's first stage at 32 px), 0.6-0.8x with 4-16 queries, the same with one key; from 16 keys
# on SDPA is as fast or faster. Equal to SDPA to float rounding (tests/test_cmt_attention.py).
WRITTEN_OUT_KEYS = 16


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v, written out (`WRITTEN_OUT_KEYS`). The softmax's max shift
    cancels, so it is a constant to autograd."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + bias
    e = (scores - scores.detach().amax(-1, keepdim=True)).exp()
    return torch.matmul(e / e.sum(-1, keepdim=True), v)


def kv_grid(size: int, reduction: int) -> int:
    """Side of the reduced K/V grid (inputs are zero-padded up to a multiple of the reduction)."""
    return math.ceil(size / reduction)


class RelativePositionBias(nn.Module):
    """Per-stage bias added to the attention logits, (heads, N, N/k^2) at the configured size."""

    def __init__(self, heads: int, size: int, reduction: int) -> None:
        super().__init__()
        self.size, self.kv_size = size, kv_grid(size, reduction)
        self.bias = nn.Parameter(torch.empty(heads, size * size, self.kv_size * self.kv_size))
        nn.init.normal_(self.bias, 0.0, 1.0)  # standard normal, as CMT's code (torch.randn)

    def forward(self, h: int, w: int, kh: int, kw: int) -> torch.Tensor:
        heads = self.bias.shape[0]
        # Traced (ONNX, TorchScript export) the sizes are graph values: always resize, so that the
        # exported graph follows the input size (bilinear to the same size is exact).
        traced = torch.jit.is_tracing()
        if not traced and (h, w, kh, kw) == (self.size, self.size, self.kv_size, self.kv_size):
            return self.bias
        bias = self.bias.reshape(heads, self.size * self.size, self.kv_size, self.kv_size)
        if traced or (kh, kw) != (self.kv_size, self.kv_size):  # resize along the key grid
            bias = F.interpolate(bias, size=(kh, kw), mode="bilinear", align_corners=False)
        bias = bias.reshape(heads, self.size, self.size, kh * kw).permute(0, 3, 1, 2)
        if traced or (h, w) != (self.size, self.size):  # resize along the query grid
            bias = F.interpolate(bias, size=(h, w), mode="bilinear", align_corners=False)
        return bias.permute(0, 2, 3, 1).reshape(heads, h * w, kh * kw)


class LightweightMHSA(nn.Module):
    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.heads, self.reduction = heads, reduction
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if reduction > 1:
            self.reduce = nn.Sequential(
                nn.Conv2d(dim, dim, reduction, stride=reduction, groups=dim), nn.BatchNorm2d(dim)
            )

    def forward(self, x: torch.Tensor, bias: RelativePositionBias) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        q = self.q(tokens).reshape(b, h * w, self.heads, -1).transpose(1, 2)
        kv = x
        if self.reduction > 1:
            pad_h, pad_w = (-h) % self.reduction, (-w) % self.reduction
            if torch.jit.is_tracing() or pad_h or pad_w:  # other inputs than the configured (traced: any)
                kv = F.pad(kv, (0, pad_w, 0, pad_h))
            kv = self.reduce(kv)
        kh, kw = kv.shape[-2:]
        kv = kv.flatten(2).transpose(1, 2)
        k = self.k(kv).reshape(b, kh * kw, self.heads, -1).transpose(1, 2)
        v = self.v(kv).reshape(b, kh * kw, self.heads, -1).transpose(1, 2)
        mask = bias(h, w, kh, kw).to(q.dtype).unsqueeze(0)
        if kh * kw < WRITTEN_OUT_KEYS and q.is_cpu and not torch.jit.is_tracing() and not counting():  # exports: SDPA
            out = attend(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


class InvertedResidualFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden))
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.dw_act = nn.GELU()
        self.dw_norm = nn.BatchNorm2d(hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)
        x = self.dw_norm(self.dw_act(self.dwconv(x) + x))
        return self.project(x)


class CMTBlock(nn.Module):
    def __init__(self, stage: StageConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = stage.width
        self.lpu = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = LightweightMHSA(dim, stage.heads, stage.kv_reduction)
        self.channel_attn = build_channel_attention(stage.channel_attention, dim)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.ffn = InvertedResidualFFN(dim, stage.hidden)
        # CMT's code drops the attention and FFN branches, not the LPU's residual
        self.drop_path = DropPath(drop_path)

    def init_weights(self) -> None:
        """CMT's code: kaiming_normal_(mode="fan_out") on every conv, i.e. std sqrt(2 / fan_out) with
        fan_out = out_channels * kh * kw, NOT divided by groups (depthwise convs start ~sqrt(C)
        smaller than under the model's default He-per-group rule). Called by the model after its
        default init."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, shared: RelativePositionBias) -> torch.Tensor:
        x = x + self.lpu(x)
        x = x + self.drop_path(self.channel_attn(self.attn(self.norm1(x), shared)))
        x = x + self.drop_path(self.ffn(self.norm2(x)))
        return x


def cmt_block_cost(stage: StageConfig, size: int) -> Cost:
    dim, hidden, r = stage.width, stage.hidden, stage.kv_reduction
    n, m = size * size, kv_grid(size, r) ** 2
    lpu = C.conv(dim, dim, 3, n, groups=dim)
    reduce = C.conv(dim, dim, r, m, groups=dim) + C.norm(dim) if r > 1 else Cost()
    attention = (
        C.norm(dim)
        + C.linear(dim, dim, n)  # q
        + reduce
        + C.linear(dim, dim, m) * 2  # k, v from the reduced map
        + Cost(0, 2 * n * m * dim)  # q.k^T and attn.v over all heads
        + C.linear(dim, dim, n)  # output projection
    )
    ffn = (
        C.norm(dim)
        + C.conv(dim, hidden, 1, n)
        + C.norm(hidden)
        + C.conv(hidden, hidden, 3, n, groups=hidden)
        + C.norm(hidden)
        + C.conv(hidden, dim, 1, n)
        + C.norm(dim)
    )
    return lpu + attention + channel_attention_cost(stage.channel_attention, dim, size) + ffn


def cmt_shared_cost(stage: StageConfig, size: int) -> Cost:
    return C.params(stage.heads * size * size * kv_grid(size, stage.kv_reduction) ** 2)


register(
    BlockType(
        name="cmt",
        build=lambda stage, size, drop_path=0.0: CMTBlock(stage, drop_path=drop_path),
        cost=cmt_block_cost,
        build_shared=lambda stage, size: RelativePositionBias(stage.heads, size, stage.kv_reduction),
        shared_cost=cmt_shared_cost,
        description="CMT: LPU + lightweight MHSA (stride-k DW conv K/V, relative position bias) + IRFFN",
        knobs=("heads", "kv_reduction"),
        divides_width=("heads",),
        divides_feature_map=("kv_reduction",),  # the bias is sized for an exact K/V grid
        summary=lambda stage: {"heads": str(stage.heads), "kv_reduction": str(stage.kv_reduction)},
        label="CMT",
        colour="#2ca02c",
    )
)

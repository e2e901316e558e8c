"""``cat``: collaborative channel + spatial attention with learned traits (Wu et al., 2022).

CAT runs a channel branch and a spatial branch in parallel (CBAM's two attentions) and lets
trainable scalars, the "colla-factors", decide how much each pooling and each branch counts:

* channel branch: global average, max and entropy pooling (GAP, GMP, GEP) over the H*W
  positions give three C-vectors; a shared bottleneck MLP (1x1 C -> h -> C, no biases, as in
  CBAM) maps each; the three outputs are summed with colla-factors, then a sigmoid: (B, C, 1, 1);
* spatial branch: average, max and entropy pooling across the C channels give three H x W maps;
  they are scaled by their colla-factors, concatenated and a 7x7 conv (3 -> 1) plus a sigmoid
  gives (B, 1, H, W);
* fusion: ``x * (rho_c * channel + rho_s * spatial)`` with two more colla-factors.

Entropy pooling is the Shannon entropy of the softmax-normalised values over the pooled axis,
``-sum p log p``: high where the responses are spread out (noise), low where they are peaked.

The paper's code was never released, so where the text leaves a detail open we chose: softmax
as the normalisation (features here are signed, so x / sum x is not a distribution); the
colla-factors are plain trainable scalars, pooling factors starting at 1 (the channel branch
then starts as CBAM's "avg + max", plus entropy) and the two branch factors at 0.5 (the gate
starts in (0, 1)); the spatial conv has a bias and no BatchNorm; h = max(8, C/4) as elsewhere
in this package (CBAM uses C/16).

Counting: the shared MLP on the three pooled vectors (3 * 2*C*h MACs) and the 7x7 conv at every
position (3*49 MACs each). Poolings (entropy included), sigmoids and the colla-factor scalings
are not MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..cost import Cost
from .registry import AttentionType, bottleneck_width, register

SPATIAL_KERNEL = 7
POOLINGS = 3  # average, max, entropy


def entropy_pool(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """Entropy of softmax(x) along ``dim``: -sum p log p = log S - sum(e z) / S, with z = x - max x,
    e = exp z, S = sum e (z's shift cancels, so the max is a constant to autograd).

    Written out rather than as ``softmax * log_softmax``: the same value to float rounding, with one
    exponential instead of two, and PyTorch's CPU softmax kernels are slow along short axes and
    axes other than the last, which is where CAT pools (H*W = 4 positions on a 2x2 map, C channels
    across): 2-4.5x faster forward and backward there, and as fast on long rows.
    """
    z = x - x.detach().amax(dim, keepdim=True)
    e = z.exp()
    total = e.sum(dim, keepdim=True)
    h = total.log() - (e * z).sum(dim, keepdim=True) / total
    return h if keepdim else h.squeeze(dim)


class CollaborativeAttention(nn.Module):
    def __init__(self, channels: int, hidden: int | None = None, kernel: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        hidden = hidden or bottleneck_width(channels)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(POOLINGS, 1, kernel, padding=kernel // 2)
        self.channel_factors = nn.Parameter(torch.ones(POOLINGS))  # GAP, GMP, GEP (channel branch)
        self.spatial_factors = nn.Parameter(torch.ones(POOLINGS))  # mean, max, entropy across C
        self.branch_factors = nn.Parameter(torch.full((2,), 0.5))  # channel, spatial

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # B, C, HW
        pooled = torch.stack((flat.mean(-1), flat.amax(-1), entropy_pool(flat, -1)), -1)  # B, C, 3
        mapped = self.mlp(pooled.unsqueeze(-1)).squeeze(-1)  # the shared MLP on all three at once
        a = self.channel_factors
        mixed = a[0] * mapped[..., 0] + a[1] * mapped[..., 1] + a[2] * mapped[..., 2]
        return mixed.sigmoid()[..., None, None]  # B, C, 1, 1

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spatial_factors
        maps = torch.cat(
            (
                s[0] * x.mean(1, keepdim=True),
                s[1] * x.amax(1, keepdim=True),
                s[2] * entropy_pool(x, 1, keepdim=True),
            ),
            1,
        )
        return self.spatial(maps).sigmoid()  # B, 1, H, W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.branch_factors
        return x * (r[0] * self.channel_gate(x) + r[1] * self.spatial_gate(x))


def cat_cost_with(channels: int, size: int, hidden: int, kernel: int = SPATIAL_KERNEL) -> Cost:
    mlp = C.conv(channels, hidden, 1, POOLINGS, bias=False) + C.conv(hidden, channels, 1, POOLINGS, bias=False)
    spatial = C.conv(POOLINGS, 1, kernel, size * size)
    return mlp + spatial + C.params(2 * POOLINGS + 2)  # colla-factors


def cat_cost(channels: int, size: int) -> Cost:
    return cat_cost_with(channels, size, bottleneck_width(channels))


register(
    AttentionType(
        name="cat",
        build=CollaborativeAttention,
        cost=cat_cost,
        size_dependent=True,
        description="CAT: channel (GAP/GMP/GEP -> shared MLP) and spatial (mean/max/entropy -> 7x7) gates, "
        "mixed by trainable colla-factors",
        reference="Wu et al., CAT: Learning to Collaborate Channel and Spatial Attention from "
        "Multi-Information Fusion, IET Computer Vision 2023 (arXiv 2212.06335)",
        label="CAT",
        hatch="\\\\",  # plots: drawn over the block colour
    )
)

"""Faster CPU forms of layers whose stock kernels are slow at proxy sizes, equal up to float rounding.

At 32 px the feature maps of the default space are 8x8 down to 1x1, smaller than, or not much
larger than, the depthwise kernels the blocks use (VAN's 5x5 and 7x7 dilation-3 LKA, CMT's 3x3
LPU and IRFFN convs). oneDNN's depthwise convolution spends milliseconds per call there, most of
it in the backward pass, whatever the map size: e.g. on one thread of the development CPU, fwd+bwd
of a 7x7 dilation-3 depthwise conv over 512 channels of 2x2 maps, batch 64, took 75 ms, of which
the image touches one tap in 49 (docs/throughput.md).

1x1 convolutions on maps of 4x4 and less pay oneDNN's per-call cost for a tiny matrix product:
there `SmallMapConv2d` runs them as one ``F.linear`` over (batch x pixels, channels).

`SmallMapConv2d` runs such a grouped convolution (any grouped one: ACmix's shift convolution, with 9
input channels per group, is as slow; and a dense one over `FEW_INPUTS` input channels or fewer, as
the spatial attention's 7x7 over pooled maps), on maps with at most `DENSE_TOKENS` pixels per kernel tap
that can reach the image, as one batched matrix product per group: the kernel is scattered into
an (output channels x pixels, input channels x pixels) matrix per group (zero where a tap falls
on the padding), and the map is multiplied by it. Taps that only ever see the zero padding drop
out, and the backward pass is two matrix products and one gather (a depthwise convolution on a 1x1
map, where one tap reaches, is a per-channel scale). Elsewhere it is the stock
convolution. Parameters, their names and shapes are the stock ``nn.Conv2d``'s, so state dicts,
checkpoints and exports are unchanged; `use_fast_kernels` swaps the class of the eligible
convolutions of a built model in place.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Used when output pixels <= DENSE_TOKENS x (taps that reach the image). Measured on one thread,
# fwd+bwd at batch 64: 8x8 maps with 5x5 kernels 1.8x faster, 7x7 dilation 3 6x, 2x2 and 1x1 maps
# 6-60x; 8x8 maps with 3x3 kernels (7 pixels per tap) and 16x16 ones with 5x5 (10) are faster stock.
DENSE_TOKENS = 6
# 1x1 convolutions (groups 1) on maps of at most this many pixels run as one matrix product over
# (batch x pixels, channels): oneDNN's 1x1 kernels cost 1.3-2.6x as much, fwd+bwd at batch 64, on
# 4x4 maps and smaller; from 8x8 on they are as fast or faster.
POINTWISE_TOKENS = 16
# Dense (groups 1) convolutions with at most this many input channels take the matrix path too: the
# spatial-attention convolutions over 2-3 pooled maps (CAT's 7x7, 3 -> 1: on a 2x2 map 0.52x the stock
# CPU fwd+bwd at batch 64, on 8x8 0.74x). With many input channels the matrix is the slow one (a 3x3
# over 32 channels of a 4x4 map: 5x the stock).
FEW_INPUTS = 4


def _reach(size: int, kernel: int, padding: int, dilation: int) -> tuple[int, int, int]:
    """(output size, first and last+1 tap that any output position reads inside the map)."""
    out = size + 2 * padding - dilation * (kernel - 1)
    taps = [i for i in range(kernel) if i * dilation - padding <= size - 1 and out - 1 + i * dilation - padding >= 0]
    return out, (taps[0] if taps else 0), (taps[-1] + 1 if taps else 0)


@functools.lru_cache(maxsize=512)
def tap_matrix_index(h: int, w: int, kh: int, kw: int, ph: int, pw: int, dh: int, dw: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """For output pixel p and input pixel s, the kernel tap (i*kw + j) that multiplies x[s] into
    y[p], or kh*kw (a zero slot) where none does: (Ho*Wo*H*W,) long. And its inverse, for the
    weight gradient: per tap the flat (p, s) positions it occupies, padded with Ho*Wo*H*W (a zero
    slot): (kh*kw, most positions of a tap) long."""
    ho, wo = h + 2 * ph - dh * (kh - 1), w + 2 * pw - dw * (kw - 1)
    cpu = torch.device("cpu")
    oy, ox = torch.arange(ho, device=cpu), torch.arange(wo, device=cpu)
    sy, sx = torch.arange(h, device=cpu), torch.arange(w, device=cpu)
    # tap row i reads input row oy + i*dh - ph: i = (sy - oy + ph) / dh where that is a whole tap
    di = sy.view(1, -1) - oy.view(-1, 1) + ph  # (Ho, H)
    i = torch.where((di % dh == 0) & (di >= 0) & (di < kh * dh), di // dh, -1)
    dj = sx.view(1, -1) - ox.view(-1, 1) + pw  # (Wo, W)
    j = torch.where((dj % dw == 0) & (dj >= 0) & (dj < kw * dw), dj // dw, -1)
    ii, jj = i.view(ho, 1, h, 1), j.view(1, wo, 1, w)
    index = torch.where((ii >= 0) & (jj >= 0), ii * kw + jj, kh * kw).reshape(-1)
    slots = ho * wo * h * w
    positions = [torch.nonzero(index == t).flatten() for t in range(kh * kw)]
    longest = max(1, max(len(p) for p in positions))
    inverse = torch.full((kh * kw, longest), slots, dtype=torch.long, device=cpu)
    for t, p in enumerate(positions):
        inverse[t, : len(p)] = p
    with torch.inference_mode(False):  # plain tensors, whatever mode first asks
        return index.to(device), inverse.to(device)


def _matrix(weight: torch.Tensor, index: torch.Tensor, groups: int, rows: int, cols: int) -> torch.Tensor:
    """Per group the (out channels x output pixels, in channels x input pixels) matrix of a
    grouped kernel: (groups, O*rows, I*cols)."""
    out_ch, per_group = weight.shape[:2]
    w = weight.reshape(groups, out_ch // groups, per_group, -1)
    taps = torch.cat([w, w.new_zeros(*w.shape[:3], 1)], dim=3)  # the last slot: no tap
    m = taps.index_select(3, index).view(groups, out_ch // groups, per_group, rows, cols)
    return m.permute(0, 1, 3, 2, 4).reshape(groups, out_ch // groups * rows, per_group * cols)


def _by_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, G*I, H, W) -> (G, B, I*H*W), contiguous (a batched matrix product reads it whole)."""
    return t.reshape(t.shape[0], groups, -1).transpose(0, 1).contiguous()


class _SmallMapConv(torch.autograd.Function):
    """y = grouped conv(x, weight), stride 1, zero padding. Forward: the stock convolution with the
    kernel cropped to the taps that reach the map, or the matrix product where the stock kernels
    are the slow ones (a dilated kernel keeping several taps; groups of several channels). Backward:
    always the matrix products."""

    @staticmethod
    def forward(ctx, x, weight, index, inverse, geometry):  # type: ignore[no-untyped-def, override]
        (ho, wo), (i0, i1, j0, j1), (ph, pw), (dh, dw), groups = geometry
        b, _, h, w = x.shape
        ctx.save_for_backward(x, weight, index, inverse)
        ctx.geometry = geometry
        dilated = (dh > 1 and i1 - i0 > 1) or (dw > 1 and j1 - j0 > 1)
        if dilated or weight.shape[1] > 1:
            m = _matrix(weight, index, groups, ho * wo, h * w)
            y = torch.bmm(_by_group(x, groups), m.transpose(1, 2))  # G, B, O*out pixels
            return y.transpose(0, 1).reshape(b, weight.shape[0], ho, wo)
        cropped = weight[..., i0:i1, j0:j1]
        return F.conv2d(x, cropped, None, 1, (ph - i0 * dh, pw - j0 * dw), (dh, dw), groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        x, weight, index, inverse = ctx.saved_tensors
        (ho, wo), _, _, _, groups = ctx.geometry
        b, _, h, w = x.shape
        g = _by_group(grad, groups)  # G, B, O*out pixels
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(g, _matrix(weight, index, groups, ho * wo, h * w))  # G, B, I*in pixels
            grad_x = grad_x.transpose(0, 1).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            out_ch, per_group = weight.shape[:2]
            per_pair = torch.bmm(g.transpose(1, 2), _by_group(x, groups))  # G, O*out pixels, I*in pixels
            per_pair = per_pair.view(groups, out_ch // groups, ho * wo, per_group, h * w).permute(0, 1, 3, 2, 4)
            per_pair = per_pair.reshape(out_ch * per_group, -1)
            per_pair = torch.cat([per_pair, per_pair.new_zeros(per_pair.shape[0], 1)], dim=1)  # the padding slot
            grad_w = per_pair.index_select(1, inverse.reshape(-1)).view(-1, *inverse.shape).sum(-1).view_as(weight)
        return grad_x, grad_w, None, None, None


class SmallMapConv2d(nn.Conv2d):
    """A grouped (depthwise included) or few-input, stride-1, zero-padded ``nn.Conv2d`` for maps
    small against its kernel (module docstring); the stock convolution elsewhere, and while tracing or
    scripting (export)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)
        h, w = x.shape[-2:]
        if self.kernel_size == (1, 1) and self.groups == 1:  # pointwise (`eligible`)
            if h * w > POINTWISE_TOKENS:
                return super().forward(x)
            nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
            return y if nhwc else y.contiguous()
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation  # type: ignore[misc]
        ho, i0, i1 = _reach(h, kh, ph, dh)
        wo, j0, j1 = _reach(w, kw, pw, dw)
        if ho < 1 or wo < 1 or i1 <= i0 or j1 <= j0 or ho * wo > DENSE_TOKENS * (i1 - i0) * (j1 - j0):
            return super().forward(x)
        if h * w == ho * wo == 1 and self.groups == self.in_channels == self.out_channels:
            # depthwise on a 1x1 map: one tap reaches, a per-channel scale (fwd+bwd 3.5x faster than the
            # matrix path at batch 64: 576 channels, 593 -> 164 us)
            y = x * self.weight[:, 0, i0, j0].view(1, -1, 1, 1)
            return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
        index, inverse = tap_matrix_index(h, w, kh, kw, ph, pw, dh, dw, x.device)
        geometry = ((ho, wo), (i0, i1, j0, j1), (ph, pw), (dh, dw), self.groups)
        y = _SmallMapConv.apply(x, self.weight, index, inverse, geometry)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return y.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def eligible(module: nn.Module) -> bool:
    """A stock ``nn.Conv2d`` with stride 1 and zero padding given as numbers that is grouped
    (depthwise included), 1x1 without padding, or takes at most `FEW_INPUTS` input channels."""
    if type(module) is not nn.Conv2d or module.stride != (1, 1) or isinstance(module.padding, str):
        return False
    pointwise = module.kernel_size == (1, 1) and module.padding == (0, 0) and module.groups == 1
    few_inputs = module.kernel_size != (1, 1) and module.in_channels <= FEW_INPUTS
    return module.padding_mode == "zeros" and (module.groups > 1 or pointwise or few_inputs)


def use_fast_kernels(model: nn.Module) -> int:
    """Swap every eligible convolution of ``model`` to `SmallMapConv2d`, in place (same
    parameters and state-dict keys); returns how many. Idempotent."""
    swapped = 0
    for module in model.modules():
        if eligible(module):
            module.__class__ = SmallMapConv2d
            swapped += 1
    return swapped


def use_stock_kernels(model: nn.Module) -> int:
    """Undo `use_fast_kernels` (for export or a stock comparison); returns how many."""
    restored = 0
    for module in model.modules():
        if type(module) is SmallMapConv2d:
            module.__class__ = nn.Conv2d
            restored += 1
    return restored


@contextlib.contextmanager
def stock_paths() -> Iterator[None]:
    """Every small-map fast path off inside the block, the straightforward forms on: ACmix's window
    attention as the shifted-view loop, CMT's attention through SDPA, convolutions as oneDNN's (what
    the benchmarks' plain loop and stock trainer run). The one list of those switches."""
    from search_space.blocks import acmix, cmt

    here = sys.modules[__name__]
    switches = ((acmix, "DENSE_TOKENS", 0), (cmt, "WRITTEN_OUT_KEYS", 0), (here, "DENSE_TOKENS", -1),
                (here, "POINTWISE_TOKENS", 0))  # fmt: skip
    saved = [getattr(module, name) for module, name, _ in switches]
    try:
        for module, name, off in switches:
            setattr(module, name, off)
        yield
    finally:
        for (module, name, _), value in zip(switches, saved):
            setattr(module, name, value)

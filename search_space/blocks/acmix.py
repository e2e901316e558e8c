"""ACmix block: self-attention and convolution sharing one 1x1 projection (Pan et al., 2022).

The shared q/k/v projection feeds (1) a local-window self-attention path with a learned
position encoding and (2) a convolution path: a 1x1 "fc" mixes the 3 x heads feature groups into
k_conv^2 maps, then a grouped conv initialised as shift kernels aggregates them. The paths are
mixed by learned scalars (init 0.5 each), followed by an output projection and an MLP.

The window attention loops over the k_att^2 offsets with shifted views of one padded tensor,
so it never materialises the k_att^2-times-larger unfolded key/value tensors. Maps that are small
against the window (proxy resolutions, late stages) instead attend over the whole map in one
scaled_dot_product_attention, masked by how often each pixel falls in each window: the same
result, with two matrix products instead of k_att^2 shifted views (`DENSE_TOKENS`).

Like the official module (LeapLabTHU/ACmix, ResNet/test_bottleneck.py), keys, values and the
position encoding are reflection-padded at the image border, and the shift convolution has no
bias (the official ``reset_parameters`` replaces it with None). ``border="mask"`` instead lets a
border pixel attend only to the window positions inside the image.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost as C
from ..config import Limit, StageConfig
from ..cost import Cost
from .channel_attention import build_channel_attention, channel_attention_cost
from .layers import DropPath
from .registry import BlockType, register
from .traced_macs import counting, record


def _axis(n: int, like: torch.Tensor) -> torch.Tensor:
    """n evenly spaced points in [-1, 1] (arange, not linspace: ONNX export keeps its dtype)."""
    if isinstance(n, torch.Tensor):  # traced (export): n is a graph value, so no Python branch on it
        steps = (n - 1).clamp(min=1).to(like.dtype)
        return torch.arange(n, device=like.device, dtype=like.dtype) * (2.0 / steps) - (n > 1).to(like.dtype)
    return torch.arange(n, device=like.device, dtype=like.dtype) * (2.0 / max(n - 1, 1)) - (1.0 if n > 1 else 0.0)


def coordinate_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    ys, xs = _axis(h, like), _axis(w, like)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij")).unsqueeze(0)  # 1, 2, H, W


def reflect_indices(n: int, pad: int, device: torch.device | None = None) -> torch.Tensor:
    """Source index of each position of an axis of length n padded by `pad` on both sides by
    reflection, reflecting again off the far edge where pad >= n (numpy's mode="reflect").
    For pad < n this is exactly ReflectionPad; a length-1 axis repeats its only element."""
    # n == 1: every index maps to 0 (traced, n is a graph value: clamp, not a Python max)
    period = (2 * (n - 1)).clamp(min=1) if isinstance(n, torch.Tensor) else max(2 * (n - 1), 1)
    i = torch.arange(-pad, n + pad, device=device) % period  # Python-style modulo: non-negative
    return torch.where(i < n, i, period - i)


def reflect_pad(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection-pad the last two dims of t by `pad`.

    ReflectionPad needs pad < H and pad < W; proxy resolutions give last-stage maps smaller
    than that (e.g. 2x2 with a 7x7 window), where the official module would fail. There the
    reflection is repeated (index gather), which agrees with ReflectionPad wherever that is defined.
    """
    *lead, h, w = t.shape
    if not torch.jit.is_tracing() and pad < h and pad < w:  # traced (export): the gather, right at any size
        return F.pad(t.reshape(-1, h, w), (pad, pad, pad, pad), mode="reflect").reshape(*lead, h + 2 * pad, w + 2 * pad)
    t = t.index_select(-2, reflect_indices(h, pad, t.device))
    return t.index_select(-1, reflect_indices(w, pad, t.device))


BORDERS = ("reflect", "mask")
# Maps of at most this many pixels per window position (H*W <= DENSE_TOKENS * k_att^2) attend over
# the whole map with a log-count mask (`window_log_counts`): two matrix products instead of k_att^2
# shifted views. Measured on one CPU thread (fwd+bwd, batch 64): 3-57x faster up to 16x16 maps
# with 7x7 windows; beyond about 6 the dense products cost more than the shifted views save.
DENSE_TOKENS = 6


@functools.lru_cache(maxsize=256)
def window_log_counts(h: int, w: int, ka: int, border: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(H*W, H*W): log of how many of pixel p's ka x ka window positions read pixel s (-inf: none).

    A softmax over a window's ka^2 logits equals a softmax over all pixels of logit + log(count):
    a pixel that the reflection repeats in the window counts as often as it is read, a pixel
    outside the window (or, with ``border="mask"``, a position off the image) not at all.
    """
    pad, cpu = ka // 2, torch.device("cpu")

    def axis(n: int) -> torch.Tensor:  # (n, n): how often position p's window reads position s
        source = reflect_indices(n, pad, cpu) if border == "reflect" else torch.arange(-pad, n + pad, device=cpu)
        return (source.unfold(0, ka, 1).unsqueeze(-1) == torch.arange(n, device=cpu)).sum(1).double()

    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, whatever mode first asks
        return torch.kron(axis(h), axis(w)).log().to(device=device, dtype=dtype)


class ACmixMixer(nn.Module):
    def __init__(
        self, dim: int, heads: int, attn_kernel: int = 7, conv_kernel: int = 3, border: str = "reflect"
    ) -> None:
        super().__init__()
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        self.heads, self.head_dim = heads, dim // heads
        self.attn_kernel, self.conv_kernel, self.border = attn_kernel, conv_kernel, border
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)  # the shared projection
        self.pos = nn.Conv2d(2, self.head_dim, 1)  # position encoding from a coordinate grid
        self.fc = nn.Conv2d(3 * heads, conv_kernel**2, 1, bias=False)
        self.dep_conv = nn.Conv2d(
            conv_kernel**2 * self.head_dim, dim, conv_kernel, padding=conv_kernel // 2, groups=self.head_dim, bias=False
        )
        self.rate_attn = nn.Parameter(torch.tensor(0.5))
        self.rate_conv = nn.Parameter(torch.tensor(0.5))
        self.proj = nn.Conv2d(dim, dim, 1)
        self._init_shift_kernels()

    def _init_shift_kernels(self) -> None:
        k = self.conv_kernel
        shift = torch.zeros(k * k, k, k)
        for i in range(k * k):
            shift[i, i // k, i % k] = 1.0
        with torch.no_grad():
            if self.dep_conv.weight.device.type != "meta":
                self.dep_conv.weight.copy_(shift.expand_as(self.dep_conv.weight))

    def window_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, heads, head_dim, H, W). Each pixel attends to its k_att x k_att window."""
        b, heads, d, h, w = q.shape
        ka, pad = self.attn_kernel, self.attn_kernel // 2
        pe = self.pos(coordinate_grid(h, w, q)).unsqueeze(1)  # 1, 1, d, H, W
        if self._dense(h, w):
            return self._dense_attention(q, k - pe, v)
        q = q * self.head_dim**-0.5  # a Python float (traced, d is a graph value whose power is float32)
        # logits = q . (k_nb + pe_q - pe_nb); q . pe_q is constant over the window and cancels in softmax.
        # Padding is linear, so padding k - pe equals padding k and pe separately (as the official code does).
        if self.border == "reflect":
            k_pad, v_pad = reflect_pad(k - pe, pad), reflect_pad(v, pad)
        else:
            k_pad, v_pad = F.pad(k - pe, (pad, pad, pad, pad)), F.pad(v, (pad, pad, pad, pad))
        offsets = [(dy, dx) for dy in range(ka) for dx in range(ka)]
        logits = torch.stack([(q * k_pad[..., dy : dy + h, dx : dx + w]).sum(2) for dy, dx in offsets], dim=2)
        if self.border == "mask":
            logits = logits.masked_fill(self._outside(h, w, q.device), float("-inf"))
        attn = logits.softmax(dim=2)  # B, heads, ka^2, H, W
        out = torch.zeros_like(v)
        for i, (dy, dx) in enumerate(offsets):
            out = out + attn[:, :, i : i + 1] * v_pad[..., dy : dy + h, dx : dx + w]
        record(2 * b * heads * d * ka * ka * h * w)  # the two elementwise products above
        return out

    def _dense(self, h: int, w: int) -> bool:
        """Attend over the whole map (`DENSE_TOKENS`); never while exporting (sizes are graph
        values there) or counting MACs (the count is that of the k_att^2 window products)."""
        return not torch.jit.is_tracing() and not counting() and h * w <= DENSE_TOKENS * self.attn_kernel**2

    def _dense_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The window attention as one SDPA over all pixels, masked by `window_log_counts`
        (k is k - pe); equal to the shifted-view loop up to float rounding."""
        b, heads, d, h, w = q.shape
        mask = window_log_counts(h, w, self.attn_kernel, self.border, q.dtype, q.device)
        out = F.scaled_dot_product_attention(*(t.flatten(3).transpose(-1, -2) for t in (q, k, v)), attn_mask=mask)
        return out.transpose(-1, -2).reshape(b, heads, d, h, w)

    def _outside(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(ka^2, H, W) mask of window positions that fall on the zero padding."""
        ka, pad = self.attn_kernel, self.attn_kernel // 2
        ys = torch.arange(h, device=device).view(1, h, 1)
        xs = torch.arange(w, device=device).view(1, 1, w)
        dy = torch.arange(ka, device=device).repeat_interleave(ka).view(-1, 1, 1) - pad
        dx = torch.arange(ka, device=device).repeat(ka).view(-1, 1, 1) - pad
        return (ys + dy < 0) | (ys + dy >= h) | (xs + dx < 0) | (xs + dx >= w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.head_dim, h, w).unbind(1)
        attn_out = self.window_attention(q, k, v).reshape(b, c, h, w)
        groups = torch.cat([t.reshape(b, self.heads, self.head_dim, h * w) for t in (q, k, v)], dim=1)
        shifted = self.fc(groups)  # B, kc^2, head_dim, H*W
        shifted = shifted.permute(0, 2, 1, 3).reshape(b, -1, h, w)
        conv_out = self.dep_conv(shifted)
        return self.proj(self.rate_attn * attn_out + self.rate_conv * conv_out)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ACmixBlock(nn.Module):
    def __init__(self, stage: StageConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = stage.width
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = ACmixMixer(dim, stage.heads, stage.attn_kernel, stage.conv_kernel)
        self.channel_attn = build_channel_attention(stage.channel_attention, dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.ffn = MLP(dim, stage.hidden)
        self.drop_path = DropPath(drop_path)  # on both branches, as ACmix's Swin-based model does

    def forward(self, x: torch.Tensor, shared: object = None) -> torch.Tensor:
        x = x + self.drop_path(self.channel_attn(self.mixer(self.norm1(x))))
        x = x + self.drop_path(self.ffn(self.norm2(x)))
        return x


def acmix_block_cost(stage: StageConfig, size: int) -> Cost:
    dim, hidden, heads, n = stage.width, stage.hidden, stage.heads, size * size
    head_dim, ka, kc = dim // heads, stage.attn_kernel, stage.conv_kernel
    mixer = (
        C.conv(dim, 3 * dim, 1, n)  # shared q/k/v projection
        + C.conv(2, head_dim, 1, n)  # position encoding
        + Cost(0, 2 * dim * ka * ka * n)  # window logits and weighted sum of values
        + C.conv(3 * heads, kc * kc, 1, head_dim * n, bias=False)  # fc over the 3*heads groups
        + C.conv(kc * kc * head_dim, dim, kc, n, groups=head_dim, bias=False)  # shift convolution
        + C.params(2)  # rate_attn, rate_conv
        + C.conv(dim, dim, 1, n)  # output projection
    )
    ffn = C.conv(dim, hidden, 1, n) + C.conv(hidden, dim, 1, n)
    return C.norm(dim) * 2 + mixer + channel_attention_cost(stage.channel_attention, dim, size) + ffn


def acmix_summary(stage: StageConfig) -> dict[str, str]:
    return {"heads": str(stage.heads), "kernels": f"window {stage.attn_kernel}, shift conv {stage.conv_kernel}"}


register(
    BlockType(
        name="acmix",
        build=lambda stage, size, drop_path=0.0: ACmixBlock(stage, drop_path=drop_path),
        cost=acmix_block_cost,
        description="ACmix: shared 1x1 q/k/v -> window self-attention + shift convolution, learned mix",
        knobs=("heads", "attn_kernel", "conv_kernel"),
        divides_width=("heads",),
        odd=("attn_kernel", "conv_kernel"),  # a window and a shift kernel centred on the pixel
        summary=acmix_summary,
        label="ACmix",
        colour="#ff7f0e",
        limits={  # tighter than the backstops of search_space.config.LIMITS, for what ACmix does with them
            # the window attention stacks k x k logit maps and loops over k x k shifted views (961 at 31)
            "attn_kernel": Limit(1, 31, "ACmix uses 7x7 windows; attention visits k x k shifted views"),
            # the shift convolution holds width x k^4 weights (3: 81 per channel; 15: 50,625)
            "conv_kernel": Limit(1, 15, "ACmix uses 3; the shift convolution holds width x k^4 weights"),
        },
    )
)

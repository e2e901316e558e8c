"""`train_proxy.fast_kernels` against stock ``nn.Conv2d`` (values and gradients, float64) and a
hand-worked product; which modules it swaps; export sees the stock convolution; CPU bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_space.errors import UserError
from train_proxy import fast_kernels as fk
from train_proxy.trainer import amp_dtype

# (in, out, groups, h, w, kernel, dilation, padding): depthwise (VAN's LKA, CMT's LPU), grouped
# with several channels per group (ACmix's shift convolution), dilated, no padding, 1x1 maps
SHAPES = [
    (4, 4, 4, 1, 1, 3, 1, 1),  # depthwise on a 1x1 map: a per-channel scale by the one tap that reaches
    (6, 6, 6, 1, 1, 7, 3, 9),
    (4, 4, 4, 1, 1, 3, 1, 2),  # padding 2: a 3x3 output from a 1x1 map, the matrix path
    (4, 4, 4, 2, 2, 7, 3, 9),
    (3, 3, 3, 2, 3, 5, 1, 2),
    (5, 5, 5, 8, 8, 5, 1, 2),
    (5, 5, 5, 8, 8, 7, 3, 9),
    (2, 2, 2, 4, 6, 3, 1, 0),
    (2, 2, 2, 5, 5, 3, 2, 1),
    (3, 3, 3, 16, 16, 7, 3, 9),
    (18, 4, 2, 2, 2, 3, 1, 1),
    (27, 6, 3, 4, 4, 3, 1, 1),
    (27, 6, 3, 1, 1, 3, 1, 1),
    (8, 12, 4, 3, 5, 3, 1, 1),
    (8, 16, 1, 2, 2, 1, 1, 0),  # 1x1, groups 1: a matrix product over (batch x pixels, channels)
    (5, 7, 1, 3, 5, 1, 1, 0),
    (5, 7, 1, 8, 8, 1, 1, 0),  # 64 pixels: stock
    (3, 1, 1, 2, 2, 7, 1, 3),  # dense over few input channels: CAT's spatial attention
    (2, 1, 1, 8, 8, 7, 1, 3),  # (CBAM's: 2 pooled maps); 64 pixels <= 6 x 49 taps
    (4, 3, 1, 3, 4, 3, 2, 2),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cin,cout,groups,h,w,k,dilation,padding", SHAPES)
def test_values_and_gradients_equal_the_stock_convolution(cin, cout, groups, h, w, k, dilation, padding, channels_last):
    torch.manual_seed(0)
    stock = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, groups=groups).double()
    fast = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, groups=groups).double()
    fast.load_state_dict(stock.state_dict())
    assert fk.use_fast_kernels(fast) == 1 and type(fast) is fk.SmallMapConv2d
    x = torch.randn(3, cin, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    want = stock(x)
    got = fast(x)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, [x, stock.weight, stock.bias], grad)
    got_grads = torch.autograd.grad(got, [x, fast.weight, fast.bias], grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_a_hand_worked_two_by_two_map():
    """One channel, a 2x2 map x = [[1, 2], [3, 4]], a 3x3 kernel w[i][j] = 10 i + j, zero padding 1.
    y[0,0] reads taps (1,1) (1,2) (2,1) (2,2): 11*1 + 12*2 + 21*3 + 22*4 = 186; y[0,1] taps (1,0)
    (1,1) (2,0) (2,1): 10 + 22 + 60 + 84 = 176; y[1,0] taps (0,1) (0,2) (1,1) (1,2): 1 + 4 + 33 + 48
    = 86; y[1,1] taps (0,0) (0,1) (1,0) (1,1): 0 + 2 + 30 + 44 = 76. Plus the bias, 0.5."""
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.0, 1, 2], [10, 11, 12], [20, 21, 22]]).view(1, 1, 3, 3))
        conv.bias.fill_(0.5)
    conv.__class__ = fk.SmallMapConv2d  # one channel in one group: depthwise
    y = conv(torch.tensor([[1.0, 2], [3, 4]]).view(1, 1, 2, 2))
    assert y.view(2, 2).tolist() == [[186.5, 176.5], [86.5, 76.5]]


def test_only_stride_one_zero_padded_grouped_pointwise_or_few_input_convolutions_are_swapped():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: swapped
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # grouped: swapped
        nn.Conv2d(8, 8, 3, padding=1),  # dense: stock
        nn.Conv2d(8, 8, 2, stride=2, groups=8),  # strided: stock
        nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"),  # reflect padding: stock
        nn.Conv2d(8, 8, 3, padding="same", groups=8),  # padding given as a word: stock
        nn.Conv2d(8, 8, 1),  # 1x1: swapped
        nn.Conv2d(8, 8, 1, padding=1),  # 1x1 with padding: stock
        nn.Conv2d(3, 1, 7, padding=3),  # dense over 3 pooled maps (spatial attention): swapped
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # an RGB stem, strided: stock
    )
    keys = list(model.state_dict())
    assert fk.use_fast_kernels(model) == 4 and fk.use_fast_kernels(model) == 0  # idempotent
    want = ["SmallMapConv2d"] * 2 + ["Conv2d"] * 4 + ["SmallMapConv2d", "Conv2d", "SmallMapConv2d", "Conv2d"]
    assert [type(m).__name__ for m in model] == want
    assert list(model.state_dict()) == keys
    assert fk.use_stock_kernels(model) == 4 and all(type(m) is nn.Conv2d for m in model)


def test_large_maps_and_export_run_the_stock_convolution(monkeypatch):
    calls = []
    monkeypatch.setattr(fk._SmallMapConv, "apply", lambda *a: calls.append(1) or pytest.fail("fast path taken"))
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    fk.use_fast_kernels(conv)
    conv(torch.randn(1, 4, 8, 8))  # 64 output pixels > 6 x 9 taps: stock
    traced = torch.jit.trace(conv, torch.randn(1, 4, 2, 2), check_trace=False)  # tracing (ONNX export): stock
    assert "aten::_convolution" in str(traced.graph) and not calls


def test_cpu_precision_rules(monkeypatch):
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("fp32", cpu) is None
    with pytest.raises(UserError, match="fp16: CUDA only"):
        amp_dtype("fp16", cpu)
    monkeypatch.setattr("train_proxy.trainer.cpu_native_bf16", lambda: False)
    with pytest.raises(UserError, match="no native bfloat16"):
        amp_dtype("bf16", cpu)
    monkeypatch.setattr("train_proxy.trainer.cpu_native_bf16", lambda: True)
    assert amp_dtype("bf16", cpu) is torch.bfloat16


def test_cpu_flags_name_bf16_hardware(monkeypatch):
    from train_proxy import latency

    monkeypatch.setattr(latency, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert latency.cpu_native_bf16()
    monkeypatch.setattr(latency, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert latency.cpu_native_bf16()
    monkeypatch.setattr(latency, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not latency.cpu_native_bf16()


def test_stock_paths_turn_every_small_map_path_off_and_back_on(monkeypatch):
    """Inside `stock_paths` the convolutions (depthwise, pointwise, on a 1x1 map) reach the stock
    convolution and CMT's attention goes through SDPA; after it, the fast forms again."""
    from search_space.blocks import acmix, cmt

    stock_calls, fast_calls = [], []
    real_conv, real_attend, real_apply = nn.Conv2d._conv_forward, cmt.attend, fk._SmallMapConv.apply
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, *a: stock_calls.append(1) or real_conv(self, *a))
    monkeypatch.setattr(cmt, "attend", lambda *a: fast_calls.append("attend") or real_attend(*a))
    monkeypatch.setattr(fk._SmallMapConv, "apply", lambda *a: fast_calls.append("matrix") or real_apply(*a))
    convs = [(nn.Conv2d(8, 8, 3, padding=1, groups=8), 2), (nn.Conv2d(8, 4, 1), 2), (nn.Conv2d(8, 8, 3, padding=1, groups=8), 1)]
    for conv, _ in convs:
        fk.use_fast_kernels(conv)
    mhsa, bias = cmt.LightweightMHSA(8, 2, 1), cmt.RelativePositionBias(2, 2, 1)
    before = (acmix.DENSE_TOKENS, cmt.WRITTEN_OUT_KEYS, fk.DENSE_TOKENS, fk.POINTWISE_TOKENS)

    def run() -> None:
        for conv, size in convs:
            conv(torch.randn(2, 8, size, size))
        mhsa(torch.randn(2, 8, 2, 2), bias)

    with fk.stock_paths():
        run()
    assert len(stock_calls) == 3 and fast_calls == []
    assert (acmix.DENSE_TOKENS, cmt.WRITTEN_OUT_KEYS, fk.DENSE_TOKENS, fk.POINTWISE_TOKENS) == before
    stock_calls.clear()
    run()
    assert stock_calls == [] and fast_calls == ["matrix", "attend"]  # pointwise: F.linear; 1x1 map: a scale

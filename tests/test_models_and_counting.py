"""Blocks, build_model and counting: zoo against the papers, analytic == traced everywhere."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import SearchSpace, analytic_cost, build_model, load_zoo, traced_cost, zoo_names
from search_space.blocks.acmix import ACmixMixer
from search_space.blocks.cmt import RelativePositionBias

# Published figures: (params M, MACs G, params tolerance, MACs check)
# VAN-B0's 0.9 G is 0.88 G to two decimals (the released code's count, which adds conv biases).
PAPERS = {
    "van_b0": (4.1, 0.88),
    "van_b1": (13.9, 2.5),
    "van_b2": (26.6, 5.0),
    "van_b3": (44.8, 9.0),
    "cmt_ti": (9.5, 0.6),
    "cmt_xs": (15.2, 1.5),
    "cmt_s": (26.26, 4.0),  # released code: 26.26 M (the paper's table says 25.1 M)
    "cmt_b": (45.7, 9.3),
}


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_zoo_matches_published_figures(name):
    params_m, macs_g = PAPERS[name]
    cost = analytic_cost(load_zoo(name))
    assert abs(cost.params / 1e6 - params_m) / params_m < 0.01, cost.params
    if name.startswith("van"):  # the bar for VAN: MACs within 3%
        assert abs(cost.macs / 1e9 - macs_g) / macs_g < 0.03, cost.macs
    else:  # CMT publishes one decimal: ours must round to the paper's figure
        assert round(cost.macs / 1e9, 1) == macs_g, cost.macs


def test_cmt_s_follows_released_code():
    assert analytic_cost(load_zoo("cmt_s")).params == 26_256_160


@pytest.mark.parametrize("name", zoo_names())
def test_analytic_equals_traced_for_zoo(name):
    cfg = load_zoo(name)
    assert analytic_cost(cfg) == traced_cost(cfg)


@settings(max_examples=12, deadline=None)  # each traced count takes ~1 s on 2 cores
@given(seed=st.integers(0, 10**6), resolution=st.sampled_from([None, 64, 96]))
def test_analytic_equals_traced_for_random_samples(seed, resolution):
    cfg = SearchSpace.default().sample(seed)
    assert analytic_cost(cfg, resolution) == traced_cost(cfg, resolution)  # params and MACs, exactly


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_forward_at_own_resolution_and_64(name):
    cfg = load_zoo(name)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for res in (cfg.resolution, 64):
            out = model(torch.randn(1, 3, res, res))
            assert out.shape == (1, cfg.num_classes)
            assert torch.isfinite(out).all()


def test_any_block_in_any_stage_trains_a_step(tiny_cfg):
    model = build_model(tiny_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), "unused parameters"


def test_relative_position_bias_interpolates():
    bias = RelativePositionBias(heads=2, size=8, reduction=4)
    assert bias.bias.shape == (2, 64, 4)
    assert bias(8, 8, 2, 2) is bias.bias  # the configured size uses the parameter itself
    assert bias(4, 4, 1, 1).shape == (2, 16, 1)
    assert bias(16, 16, 4, 4).shape == (2, 256, 16)


def _naive_window_attention(mixer: ACmixMixer, q, k, v):
    """Reference: unfold the k x k windows explicitly (the memory-hungry way), padding by
    reflection (numpy's mode="reflect", repeated where the map is smaller than the pad) or by
    zeros with the outside positions masked."""
    b, heads, d, h, w = q.shape
    ka, pad = mixer.attn_kernel, mixer.attn_kernel // 2
    from search_space.blocks.acmix import coordinate_grid

    pe = mixer.pos(coordinate_grid(h, w, q))  # 1, d, H, W
    rows = torch.from_numpy(np.pad(np.arange(h), pad, mode="reflect"))
    cols = torch.from_numpy(np.pad(np.arange(w), pad, mode="reflect"))

    def unfold(t):  # (B, heads, d, H, W) -> (B, heads, d, ka^2, H, W)
        flat = t.reshape(b * heads, d, h, w)
        if mixer.border == "reflect":
            windows = F.unfold(flat[:, :, rows][:, :, :, cols], ka)
        else:
            windows = F.unfold(flat, ka, padding=pad)  # zero padded
        return windows.reshape(b, heads, d, ka * ka, h, w)

    k_nb = unfold(k - pe.unsqueeze(1))
    logits = (q.unsqueeze(3) * d**-0.5 * (k_nb + pe.unsqueeze(1).unsqueeze(3))).sum(2)
    if mixer.border == "mask":
        valid = unfold(torch.ones_like(k))[:, :, :1] > 0  # B, heads, 1, ka^2, H, W
        logits = logits.masked_fill(~valid[:, :, 0], float("-inf"))
    attn = logits.softmax(2)
    return (attn.unsqueeze(2) * unfold(v)).sum(3)


@pytest.mark.parametrize("border", ["reflect", "mask"])
@pytest.mark.parametrize("ka,size", [(3, 5), (7, 6), (5, 2), (7, 3), (7, 1)])
def test_acmix_window_attention_matches_unfolded_reference(ka, size, border):
    torch.manual_seed(0)
    mixer = ACmixMixer(dim=16, heads=2, attn_kernel=ka, border=border)
    q, k, v = (torch.randn(2, 2, 8, size, size) for _ in range(3))
    fast = mixer.window_attention(q, k, v)
    slow = _naive_window_attention(mixer, q, k, v)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_acmix_conv_path_starts_as_shift_kernels():
    mixer = ACmixMixer(dim=8, heads=2, conv_kernel=3)
    w = mixer.dep_conv.weight  # out, kc^2, kc, kc
    assert w.shape == (8, 9, 3, 3)
    assert torch.equal(w.sum((2, 3)), torch.ones(8, 9))
    assert mixer.dep_conv.bias is None  # as in the official code, whose reset_parameters drops it
    assert mixer.rate_attn.item() == 0.5 and mixer.rate_conv.item() == 0.5


def test_analytic_count_is_fast():
    import time

    cfg = SearchSpace.default().sample(1)
    from search_space.counting import _analytic_report

    _analytic_report.cache_clear()
    start = time.perf_counter()
    analytic_cost(cfg)
    assert time.perf_counter() - start < 0.05  # generous: it takes ~0.15 ms (see benchmarks/)

"""Channel/spatial attention modules (search_space/attention/): counts, equivalences, export, CLI.

Expected parameter counts are worked out by hand from the papers' and official code's layer
lists (each test says which); MAC counts follow the project's convention (convs, linears and
matrix products; no norms, activations, softmax, pooling or elementwise gating).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import (
    ArchConfig, ConfigError, Cost, HeadConfig, SearchSpace, StageConfig, StemConfig, analytic_cost, build_model,
    traced_cost,
)  # fmt: skip
from search_space.attention import attention_names, get_attention
from search_space.attention.cat import CollaborativeAttention, cat_cost_with, entropy_pool
from search_space.attention.gc import GlobalContext, gc_cost_with
from search_space.attention.wavelet import WaveletChannelAttention, compression_sides, wavelet_cost_with
from search_space.blocks.channel_attention import build_channel_attention, channel_attention_cost

NEW = ("gc", "cat", "wavelet")
ALL = ("none", "se", "eca") + NEW


def with_attention(cfg: ArchConfig, kinds: list[str]) -> ArchConfig:
    stages = tuple(dataclasses.replace(s, channel_attention=k) for s, k in zip(cfg.stages, kinds))
    return cfg.replace(stages=stages)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- registry ----------------------------------------------------------------------------------
def test_registry_lists_every_module_and_validation_reads_it():
    assert attention_names() == ("none", "cat", "eca", "gc", "se", "wavelet")
    for name in ALL:
        assert get_attention(name).description
    cfg = with_attention(family_cfg("van", "gc"), ["cbam", "gc", "gc", "gc"])
    choices = r"\(choose from none, cat, eca, gc, se, wavelet\)"
    with pytest.raises(ConfigError, match=r"unknown channel_attention 'cbam' " + choices):
        cfg.validate()


def test_each_file_in_the_package_is_one_choice():
    package = Path(__file__).parents[1] / "search_space" / "attention"
    stems = {p.stem for p in package.glob("*.py")} - {"__init__", "registry"}
    assert stems == set(attention_names())  # discovered by scanning the package, named after their file
    with pytest.raises(ConfigError, match="unknown channel_attention 'cbam'"):
        build_channel_attention("cbam", 16)


def test_size_dependent_costs_require_the_map_size():
    assert channel_attention_cost("se", 64) == channel_attention_cost("se", 64, 14)
    for name in NEW:
        with pytest.raises(TypeError, match="feature map size"):
            channel_attention_cost(name, 64)


def test_old_configs_keep_loading_with_unchanged_counts():
    text = """
name: old
resolution: 64
num_classes: 10
stem: {kind: conv3, channels: 8}
head: {kind: linear, fc_dim: 0, dropout: 0.0}
stages:
  - {block: van, depth: 1, width: 64, mlp_ratio: 2.0, channel_attention: se}
  - {block: cmt, depth: 1, width: 64, heads: 2, kv_reduction: 2, mlp_ratio: 2.0, channel_attention: eca}
  - {block: acmix, depth: 1, width: 64, heads: 2, mlp_ratio: 2.0, attn_kernel: 3, channel_attention: none}
  - {block: van, depth: 1, width: 64, mlp_ratio: 2.0}
"""
    cfg = ArchConfig.from_yaml(text)
    assert [s.channel_attention for s in cfg.stages] == ["se", "eca", "none", "none"]
    # SE at C=64 (hidden max(8, 64/4) = 16): 64*16 + 16 + 16*64 + 64 weights and biases, as before
    assert channel_attention_cost("se", 64) == (2128, 2 * 64 * 16)
    # ECA at C=64: kernel = nearest odd to (log2 64 + 1) / 2 = 3.5 -> 3; 3 taps over 64 channels
    assert channel_attention_cost("eca", 64) == (3, 3 * 64)


# -- parameter counts against independent figures -----------------------------------------------
def test_gc_matches_paper_formula_and_official_code_at_c256_r16():
    c, r = 256, 16
    gc = GlobalContext(c, hidden=c // r)
    # GCNet paper, Sec. 4 (bottleneck transform): the transform's weights drop from C*C to 2*C*C/r.
    transform_weights = gc.transform[0].weight.numel() + gc.transform[3].weight.numel()
    assert transform_weights == 2 * c * c // r == 8192
    # Official code (xvjiarui/GCNet, ContextBlock2d(256, 16, pool='att', fusions=['channel_add'])):
    # conv_mask 256*1 + 1, Conv2d(256, 16, 1) 4096 + 16, LayerNorm([16, 1, 1]) 16 + 16, Conv2d(16, 256, 1) 4096 + 256
    # (ours holds the two 1x1 convs on the 1x1 context as linears: the same weights).
    assert n_params(gc) == 257 + 4112 + 32 + 4352 == 8753
    # MACs at 14x14 (196 positions): mask 256*196, weighted sum 256*196, transform 2 * 256*16.
    assert gc_cost_with(c, 14, c // r) == (8753, 2 * 256 * 196 + 2 * 256 * 16)


def test_cat_count_from_the_papers_layer_list():
    # No released code: worked out from the paper's description (CBAM-style shared MLP without
    # biases, a 7x7 conv over the three pooled maps) plus our choices (conv bias, 3 + 3 + 2 colla-factors).
    cat = CollaborativeAttention(64, hidden=16)
    assert n_params(cat) == 64 * 16 * 2 + (3 * 7 * 7 + 1) + 8 == 2204
    # MACs at 8x8: the MLP on three pooled vectors + the 7x7 conv at 64 positions.
    assert cat_cost_with(64, 8, 16) == (2204, 3 * 2 * 64 * 16 + 3 * 49 * 64)


def test_wavelet_count_and_official_excitation():
    w = WaveletChannelAttention(64, hidden=16)
    # one 2x2 depthwise filter per channel (4*64) + SE excitation 64*16+16 + 16*64+64
    assert n_params(w) == 256 + 1040 + 1088 == 2384
    # The released WaveNet-C code's 'Basic' excitation is Linear(C, C/2) -> Linear(C/2, C) with biases:
    # at C=64 that is 64*32+32 + 32*64+64 = 4192, the same as ours with hidden 32.
    official_like = WaveletChannelAttention(64, hidden=32)
    assert n_params(official_like.reduce) + n_params(official_like.expand) == 4192
    # levels on a 7x7 map: 7 -> 4 -> 2 -> 1 (ceil halving with zero padding); 4 MACs per channel per output
    assert compression_sides(7) == [4, 2, 1]
    assert wavelet_cost_with(64, 7, 16).macs == 4 * 64 * (16 + 4 + 1) + 2 * 64 * 16


# -- behaviour against hand-computed references --------------------------------------------------
def test_wavelet_starts_as_global_average_pooling_and_zero_pads_odd_maps():
    torch.manual_seed(0)
    w = WaveletChannelAttention(8)
    x = torch.randn(2, 8, 16, 16)
    torch.testing.assert_close(w.squeeze(x), x.mean((2, 3), keepdim=True))  # the fully recursed Haar LL
    ones = torch.ones(1, 8, 3, 3)  # 3x3 -> pad 4x4 -> [[1, .5], [.5, .25]] -> mean 9/16
    torch.testing.assert_close(w.squeeze(ones), torch.full((1, 8, 1, 1), 9 / 16))


def test_wavelet_filter_reaches_the_detail_bands():
    w = WaveletChannelAttention(1, hidden=8)
    with torch.no_grad():
        w.compress.weight.copy_(torch.tensor([[[[0.5, -0.5], [-0.5, 0.5]]]]))  # Haar HH analysis filter
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert w.squeeze(x).item() == pytest.approx((1 - 2 - 3 + 4) / 2)  # HH band by hand: 0


def test_gc_pools_with_softmax_attention_and_starts_as_identity():
    torch.manual_seed(0)
    gc = GlobalContext(8)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(gc(x), x)  # last conv starts at zero, as in the official code
    with torch.no_grad():
        gc.context.weight.zero_()
        gc.context.bias.zero_()
        gc.transform[3].weight.normal_()
    # uniform attention weights: the context is the plain mean over positions
    want = x + gc.transform(x.mean((2, 3)))[..., None, None]
    torch.testing.assert_close(gc(x), want)


def test_entropy_pooling():
    assert entropy_pool(torch.zeros(1, 1, 16), -1).item() == pytest.approx(math.log(16))  # uniform
    peaked = torch.tensor([[[50.0, 0.0, 0.0, 0.0]]])
    assert entropy_pool(peaked, -1).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shape, dim", [((4, 6, 4), -1), ((4, 6, 2, 2), 1), ((2, 3, 64), -1), ((2, 8, 1), -1)])
def test_entropy_pooling_equals_the_definition_with_its_gradient(shape, dim):
    """The written-out form against -sum(softmax * log_softmax) by PyTorch's own kernels (float64)."""
    x = (torch.randn(*shape, dtype=torch.float64) * 3).requires_grad_()
    weights = torch.randn(*[n for i, n in enumerate(shape) if i != dim % len(shape)], dtype=torch.float64)
    ours = entropy_pool(x, dim)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    want = -(x.softmax(dim) * x.log_softmax(dim)).sum(dim)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), x)
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)
    assert entropy_pool(x, dim, keepdim=True).shape == want.unsqueeze(dim).shape


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    module = build_channel_attention(name, 32)
    perturb(module)
    x = torch.randn(2, 32, 7, 7, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"


def perturb(module: torch.nn.Module) -> None:
    """Move parameters off their (partly zero) initialisation so every path is exercised."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))


# -- analytic == traced inside every block family ------------------------------------------------
def family_cfg(block: str, kind: str, resolution: int = 64) -> ArchConfig:
    common = dict(mlp_ratio=2.0, heads=2, attn_kernel=3, channel_attention=kind)
    return ArchConfig(
        name=f"{block}_{kind}",
        resolution=resolution,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("linear", 0, 0.0),
        stages=(
            StageConfig(block, 1, 16, kv_reduction=2, **common),
            StageConfig(block, 1, 16, kv_reduction=2, **common),
            StageConfig(block, 2, 32, kv_reduction=2, **common),
            StageConfig(block, 1, 32, kv_reduction=1, **common),
        ),
    )


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("block", ["van", "cmt", "acmix"])
@pytest.mark.parametrize("resolution", [64, 96])  # maps 16/8/4/2 and 24/12/6/3 (odd: wavelet padding)
def test_analytic_equals_traced_in_every_block(block, kind, resolution):
    cfg = family_cfg(block, kind, resolution)
    cfg.validate()
    assert analytic_cost(cfg) == traced_cost(cfg)
    # the module is really counted: the difference to no attention is its cost, stage by stage
    plain = family_cfg(block, "none", resolution)
    sizes = cfg.feature_sizes()
    extra = sum(
        (channel_attention_cost(kind, s.width, size) * s.depth for s, size in zip(cfg.stages, sizes)),
        start=Cost(),
    )
    assert analytic_cost(cfg) == analytic_cost(plain) + extra and extra.macs > 0


@settings(max_examples=8, deadline=None)  # each traced count takes ~1 s on 2 cores
@given(
    seed=st.integers(0, 10**6),
    kinds=st.lists(st.sampled_from(NEW), min_size=4, max_size=4),
    resolution=st.sampled_from([None, 64, 96]),
)
def test_analytic_equals_traced_for_samples_with_new_modules(seed, kinds, resolution):
    sample = SearchSpace.default().sample(seed)
    cfg = with_attention(sample, kinds)
    cfg.validate()
    plain = with_attention(sample, ["none"] * 4)
    analytic, traced = analytic_cost(cfg, resolution), traced_cost(cfg, resolution)
    assert analytic == traced
    # and the attention modules' share on its own (against the same sample without them)
    a_plain, t_plain = analytic_cost(plain, resolution), traced_cost(plain, resolution)
    assert (analytic.params - a_plain.params, analytic.macs - a_plain.macs) == (
        traced.params - t_plain.params, traced.macs - t_plain.macs)  # fmt: skip
    assert analytic.macs > a_plain.macs


def test_default_space_offers_the_new_modules():
    seen = {s.channel_attention for seed in range(200) for s in SearchSpace.default().sample(seed).stages}
    assert seen == set(ALL)


# -- export and CLI --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", NEW)
def test_onnx_export_matches_pytorch(kind, tmp_path):
    pytest.importorskip("onnxruntime")
    from results.export import export_onnx

    cfg = ArchConfig(
        name=f"onnx_{kind}",
        resolution=64,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("linear", 0, 0.0),
        stages=(
            StageConfig("van", 1, 16, mlp_ratio=2.0, channel_attention=kind),
            StageConfig("cmt", 1, 16, heads=2, kv_reduction=2, mlp_ratio=2.0, channel_attention=kind),
            StageConfig("acmix", 1, 32, heads=2, mlp_ratio=2.0, attn_kernel=3, channel_attention=kind),
            StageConfig("van", 1, 32, mlp_ratio=2.0, channel_attention=kind),
        ),
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for block_module in model.modules():
        if hasattr(block_module, "channel_attn"):
            perturb(block_module.channel_attn)  # GC's zero-initialised output conv must not hide the path
    info = export_onnx(model, cfg, tmp_path / "m.onnx")
    assert info.details["max_abs_diff"] <= 1e-4, info.details["check"]


def test_nas_profile_counts_the_new_modules(cli, tmp_path):
    cfg = ArchConfig(
        name="attn_profile",
        resolution=64,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("linear", 0, 0.0),
        stages=(
            StageConfig("van", 1, 16, mlp_ratio=2.0, channel_attention="gc"),
            StageConfig("cmt", 1, 16, heads=2, kv_reduction=2, mlp_ratio=2.0, channel_attention="cat"),
            StageConfig("acmix", 1, 32, heads=2, mlp_ratio=2.0, attn_kernel=3, channel_attention="wavelet"),
            StageConfig("van", 1, 32, mlp_ratio=2.0, channel_attention="gc"),
        ),
    )
    path = tmp_path / "attn.yaml"
    cfg.save(path)
    code, out, err = cli("profile", path, "--traced", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["params"] == data["params_traced"] and data["macs"] == data["macs_traced"]
    # hand sum of the four modules at 32x32 -> maps 16, 8, 4, 2 (stem /2, then /2 per stage)
    gc16 = 16 * 1 + 1 + 16 * 8 + 8 + 2 * 8 + 8 * 16 + 16  # conv_mask, conv C->8, LN(8), conv 8->C
    cat16 = 2 * 16 * 8 + 3 * 49 + 1 + 8
    wav32 = 4 * 32 + 32 * 8 + 8 + 8 * 32 + 32
    gc32 = 32 + 1 + 32 * 8 + 8 + 16 + 8 * 32 + 32
    plain = with_attention(cfg, ["none"] * 4)
    assert data["params"] - analytic_cost(plain).params == gc16 + cat16 + wav32 + gc32

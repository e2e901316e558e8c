"""Training as the papers do: stochastic depth and the official initialisations.

Expected values come from the official code, not from ours:
* CMT (github.com/huawei-noah/Efficient-AI-Backbones, cmt_pytorch/cmt.py, ``CMT._init_weights``):
  ``nn.init.kaiming_normal_(m.weight, mode='fan_out')`` on every Conv2d. torch's fan-out of a conv
  weight (out, in/groups, kh, kw) is out * kh * kw, whatever the groups, and the default gain is
  sqrt(2), so std = sqrt(2 / (out * kh * kw)). The relative position biases are ``torch.randn``
  (std 1). Drop path on the attention and FFN branches, not on the LPU's residual (``Block.forward``).
* VAN (github.com/Visual-Attention-Network/VAN-Classification, models/van.py, ``_init_weights``):
  ``fan_out = kh * kw * out_channels; fan_out //= groups; normal_(0, sqrt(2 / fan_out))``. Drop
  path on both branches (``Block.forward``).
* Both: ``dpr = torch.linspace(0, drop_path_rate, sum(depths))``; drop path maxima from the
  official training commands: VAN-B2 0.1 (README/train.sh), CMT-S 0.1 (cmt_pytorch/README.md).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scaling.compound import expand
from search_space import ArchConfig, ConfigError, analytic_cost, build_model, drop_path_schedule, load_zoo
from search_space.blocks.layers import DropPath
from search_space.blocks.registry import get_block
from train_proxy.trainer import ProxySpec, proxy_config

ROOT = Path(__file__).resolve().parents[1]


def _std(t: torch.Tensor) -> float:
    return float(t.detach().double().std())


@pytest.fixture(scope="module")
def cmt_ti():
    torch.manual_seed(0)
    return build_model(load_zoo("cmt_ti"))  # widths 46, 92, 184, 368; IRFFN ratio 3.6; K/V reduction 8,4,2,1


# -- initialisation --------------------------------------------------------------------------------------
def test_cmt_lpu_init_is_official(cmt_ti):
    conv = cmt_ti.stages[2].blocks[0].lpu  # 3x3 depthwise, 184 channels: 1656 weights
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (184 * 3 * 3)), rel=0.10)  # 0.0348


def test_cmt_kv_reduction_init_is_official(cmt_ti):
    conv = cmt_ti.stages[0].blocks[0].attn.reduce[0]  # 8x8 stride-8 depthwise, 46 channels
    assert conv.kernel_size == (8, 8) and conv.groups == 46
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (46 * 8 * 8)), rel=0.10)  # 0.0261


def test_cmt_irffn_depthwise_init_is_official(cmt_ti):
    conv = cmt_ti.stages[0].blocks[0].ffn.dwconv  # 3x3 depthwise over int(46 * 3.6) = 165 channels
    assert conv.groups == 165
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (165 * 3 * 3)), rel=0.10)  # 0.0367


def test_cmt_relative_position_bias_is_standard_normal(cmt_ti):
    bias = cmt_ti.stages[0].shared.bias  # (1 head, 40*40 queries, 5*5 keys) at 160 px: 40000 values
    assert bias.shape == (1, 1600, 25)
    assert _std(bias) == pytest.approx(1.0, rel=0.05)
    assert abs(float(bias.detach().mean())) < 0.05


def test_van_depthwise_init_keeps_van_rule():
    torch.manual_seed(0)
    block = build_model(load_zoo("van_b0")).stages[2].blocks[0]  # 160 channels, FFN hidden 640
    lka = block.attn.lka.depthwise_dilated  # 7x7 depthwise: fan_out = 7*7*160/160
    assert _std(lka.weight) == pytest.approx(math.sqrt(2 / (7 * 7 * 160 / 160)), rel=0.10)  # 0.202
    dw = block.ffn.dwconv  # 3x3 depthwise over 640 channels
    assert _std(dw.weight) == pytest.approx(math.sqrt(2 / (3 * 3 * 640 / 640)), rel=0.10)  # 0.471


def test_acmix_shift_kernels_survive_the_default_init(tiny_cfg):
    model = build_model(tiny_cfg)
    conv = model.stages[2].blocks[0].mixer.dep_conv  # 3x3: kernel i is a one-hot at (i // 3, i % 3)
    w = conv.weight.detach()
    for i in range(9):
        expected = torch.zeros(3, 3)
        expected[i // 3, i % 3] = 1.0
        assert torch.equal(w[:, i], expected.expand(w.shape[0], 3, 3))


# -- DropPath --------------------------------------------------------------------------------------------
def test_drop_path_is_identity_in_eval_mode_and_at_rate_zero():
    x = torch.randn(64, 8, 4, 4)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_drops_whole_samples_at_the_rate():
    torch.manual_seed(0)
    n, rate = 10_000, 0.3
    out = DropPath(rate).train()(torch.ones(n, 3, 2, 2)).reshape(n, -1)
    per_sample = out[:, :1]
    assert torch.equal(out, per_sample.expand_as(out)), "a sample is dropped or kept whole"
    dropped = per_sample == 0
    kept = ~dropped
    assert torch.allclose(per_sample[kept], torch.tensor(1 / 0.7))
    sigma = math.sqrt(rate * (1 - rate) / n)  # binomial: 0.0046
    assert abs(float(dropped.float().mean()) - rate) < 3 * sigma


def test_drop_path_refuses_rates_outside_0_1():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            DropPath(bad)


class _DropAll(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.mark.parametrize("family", ["van", "cmt", "acmix"])
def test_blocks_drop_the_official_branches(tiny_cfg, family):
    """With every droppable branch dropped, VAN and ACmix blocks are the identity; CMT keeps its
    LPU residual (x + lpu(x)), as CMT's Block.forward applies drop path only after it."""
    i = {"van": 0, "cmt": 1, "acmix": 2}[family]
    stage, size = tiny_cfg.stages[i], tiny_cfg.feature_sizes()[i]
    block_type = get_block(family)
    block = block_type.build(stage, size, drop_path=0.2).eval()
    assert isinstance(block.drop_path, DropPath) and block.drop_path.rate == 0.2
    shared = block_type.build_shared(stage, size) if block_type.build_shared else None
    x = torch.randn(2, stage.width, size, size)
    with torch.no_grad():
        plain = block(x, shared)  # eval mode: drop path is the identity
        block.drop_path = _DropAll()
        dropped = block(x, shared)
    assert not torch.allclose(plain, x)
    expected = x + block.lpu(x) if family == "cmt" else x
    assert torch.allclose(dropped, expected, atol=1e-6)


# -- schedule, config, counting, export, scaling ---------------------------------------------------------
@pytest.mark.parametrize("name, official_max", [("van_b2", 0.1), ("cmt_s", 0.1)])
def test_schedule_matches_official_linspace(name, official_max):
    cfg = load_zoo(name)
    assert cfg.drop_path_rate == official_max
    depths = [s.depth for s in cfg.stages]
    official = torch.linspace(0, official_max, sum(depths)).tolist()
    assert drop_path_schedule(cfg) == pytest.approx(official, abs=1e-7)
    with torch.device("meta"):
        model = build_model(cfg)
    built = [block.drop_path.rate for stage in model.stages for block in stage.blocks]
    assert built == pytest.approx(official, abs=1e-7)
    assert built[-1] == official_max


def test_zoo_rates_are_the_official_ones():
    official = {"van_b0": 0.1, "van_b1": 0.1, "van_b2": 0.1, "van_b3": 0.2,  # VAN README / train.sh
                "cmt_ti": 0.1, "cmt_xs": 0.08, "cmt_s": 0.1, "cmt_b": 0.25}  # CMT README train commands
    assert {name: load_zoo(name).drop_path_rate for name in official} == official


def test_one_block_network_has_rate_zero(tiny_cfg):
    from dataclasses import replace

    cfg = tiny_cfg.replace(stages=(replace(tiny_cfg.stages[0], depth=1),), drop_path_rate=0.3)
    assert drop_path_schedule(cfg) == [0.0]


def test_config_field_round_trip_default_and_validation():
    cfg = load_zoo("cmt_s")
    assert ArchConfig.from_yaml(cfg.to_yaml()).drop_path_rate == 0.1
    data = cfg.to_dict()
    del data["drop_path_rate"]  # a config written before the field existed
    assert ArchConfig.from_dict(data).drop_path_rate == 0.0
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="drop_path_rate must be in"):
            ArchConfig.from_dict({**data, "drop_path_rate": bad})
    with pytest.raises(ConfigError, match="drop_path_rate must be float"):
        ArchConfig.from_dict({**data, "drop_path_rate": "high"})


def test_counting_is_unaffected(tiny_cfg):
    from search_space import traced_cost

    with_dp = tiny_cfg.replace(drop_path_rate=0.3)
    assert analytic_cost(with_dp) == analytic_cost(tiny_cfg) == traced_cost(with_dp)
    assert build_model(with_dp).state_dict().keys() == build_model(tiny_cfg).state_dict().keys()


def test_onnx_export_of_a_model_with_drop_path(tiny_cfg, tmp_path):
    pytest.importorskip("onnx")
    from results.export import export_onnx

    torch.manual_seed(0)
    model = build_model(tiny_cfg.replace(drop_path_rate=0.3)).eval()
    info = export_onnx(model, tiny_cfg, tmp_path / "m.onnx")
    assert info.details.get("ok", True), info.details


def test_scaling_keeps_the_rate():
    assert expand(load_zoo("cmt_s"), 1.0).config.drop_path_rate == 0.1
    assert expand(load_zoo("cmt_s"), -2.0).config.drop_path_rate == 0.1


# -- training --------------------------------------------------------------------------------------------
def test_proxy_trains_without_drop_path_unless_asked():
    cfg = load_zoo("cmt_ti")  # drop_path_rate 0.1
    assert proxy_config(cfg, ProxySpec(), 10).drop_path_rate == 0.0
    assert proxy_config(cfg, ProxySpec(drop_path_rate=0.2), 10).drop_path_rate == 0.2
    assert proxy_config(cfg, ProxySpec(drop_path_rate=None), 10).drop_path_rate == 0.1


def test_nas_train_full_run_uses_config_rate():
    from nas.commands.train import default_drop_path

    cfg = load_zoo("cmt_ti")  # 160 px

    def args(resolution: int, fraction: float = 1.0, width: float = 1.0) -> argparse.Namespace:
        return argparse.Namespace(proxy_resolution=resolution, data_fraction=fraction, proxy_width=width)

    assert default_drop_path(cfg, args(160)) is None  # the config's own rate
    assert default_drop_path(cfg, args(32)) == 0.0
    assert default_drop_path(cfg, args(160, fraction=0.5)) == 0.0
    assert default_drop_path(cfg, args(160, width=0.5)) == 0.0


def test_nas_train_end_to_end_rates(tiny_cfg, tmp_path, cli):
    """A full run (config's width and resolution, all data) trains with the config's rate; a proxy
    run with 0; --drop-path wins over both."""
    import json

    path = tmp_path / "tiny32.yaml"
    tiny_cfg.replace(resolution=32, drop_path_rate=0.2).save(path)
    common = ("train", path, "--epochs", "1", "--batch-size", "256", "--threads", "1", "--json", "--no-progress")
    for extra, expected in (((), 0.2), (("--proxy-width", "0.5"), 0.0), (("--drop-path", "0.05"), 0.05)):
        code, out, err = cli(*common, *extra)
        assert code == 0, err
        assert json.loads(out)["drop_path_rate"] == expected


def test_nas_train_refuses_a_rate_of_1_5():
    proc = subprocess.run(
        [sys.executable, "-m", "nas.cli", "train", "cmt_ti", "--drop-path", "1.5"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--drop-path" in lines[0] and "[0, 1)" in lines[0]
    assert proc.stdout == ""

"""Exports that follow the input size: ONNX with dynamic batch, height and width, and TorchScript,
each run at three other sizes than the one it was traced at and compared with eager PyTorch
(<= 1e-4 on the logits; onnxruntime runs the ONNX file). The networks make the size matter: CMT's
relative position bias must be resized to the map it meets (and its K/V grid padded where the
reduction does not divide it), ACmix's reflection must switch between a plain reflection and a
repeated one as its 7x7 window outgrows the map. A graph that cannot follow the size (the wavelet
attention's level count is Python control flow) is exported fixed, and says so.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_results import make_run

from nas.cli import main
from results.export import TOLERANCE, check_resolutions, export_onnx, export_torchscript
from search_space import ArchConfig, HeadConfig, StageConfig, StemConfig, build_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # torch.jit


def size_hungry(channel_attention: str = "none") -> ArchConfig:
    """64 px; CMT at stage 2 with an 8x8 K/V reduction (its 8x8 map: one key; at 96 px a 12x12 map
    padded to 16x16), ACmix with 7x7 windows on 4x4 and 2x2 maps (pad 3: plain reflection at
    4x4 only, repeated reflection below; at 32 px a 1x1 map), a CMT head."""
    return ArchConfig(
        name="size_hungry",
        resolution=64,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("conv_bn_act", 64, 0.0),
        stages=(
            StageConfig("van", 1, 16, mlp_ratio=2.0, channel_attention=channel_attention),
            StageConfig("cmt", 1, 16, heads=2, kv_reduction=8, mlp_ratio=2.0),
            StageConfig("acmix", 1, 32, heads=2, attn_kernel=7, mlp_ratio=2.0, channel_attention="eca"),
            StageConfig("acmix", 1, 32, heads=2, attn_kernel=7, mlp_ratio=2.0),
        ),
    )


def quick(channel_attention: str = "none") -> ArchConfig:
    """VAN and CMT only (cheaper to trace than ACmix's 49 window offsets): the CMT bias at 8x8
    and 2x2 maps, a K/V reduction of 8 that 96 px does not divide at stage 2 (a 12x12 map)."""
    return ArchConfig(
        name="quick",
        resolution=64,
        num_classes=10,
        stem=StemConfig("none", 3),
        head=HeadConfig("linear", 0, 0.0),
        stages=(
            StageConfig("van", 1, 16, embed_kernel=7, embed_stride=4, mlp_ratio=2.0, channel_attention=channel_attention),
            StageConfig("cmt", 1, 16, heads=2, kv_reduction=8, mlp_ratio=2.0),
            StageConfig("van", 1, 32, mlp_ratio=2.0),
            StageConfig("cmt", 1, 32, heads=2, kv_reduction=1, mlp_ratio=2.0),
        ),
    )


SIDES = (32, 96, 128)  # none of them the 64 px the graph is traced at


def model_of(cfg: ArchConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for m in model.modules():  # trained-looking BatchNorm statistics, so that they matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def batch(side: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(side))


@pytest.mark.parametrize("make", [quick, pytest.param(size_hungry, marks=pytest.mark.slow)], ids=["cmt", "acmix"])
def test_onnx_follows_batch_height_and_width(tmp_path, make):
    cfg = make()
    model = model_of(cfg)
    info = export_onnx(model, cfg, tmp_path / "m.onnx")
    assert info.details["ok"] and info.details["dynamic_size"], info.details["check"]
    assert info.details["check"].startswith("follows the input size")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    # an independent run of the file: onnxruntime at sizes and batches of its own
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for side in SIDES:
        x = batch(side)
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (3, 10)
        assert float(np.abs(got - eager(model, x)).max()) <= TOLERANCE, side


@pytest.mark.parametrize("make", [quick, pytest.param(size_hungry, marks=pytest.mark.slow)], ids=["cmt", "acmix"])
def test_torchscript_runs_at_other_sizes(tmp_path, make):
    cfg = make()
    model = model_of(cfg)
    info = export_torchscript(model, cfg, tmp_path / "m.pt")
    assert info.details["ok"] and info.details["dynamic_size"], info.details["check"]
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    for side in SIDES:
        x = batch(side)
        with torch.no_grad():
            got = loaded(x).numpy()
        assert float(np.abs(got - eager(model, x)).max()) <= TOLERANCE, side


def test_the_checks_are_at_three_sizes():
    assert check_resolutions(64) == (64, 32, 128)
    assert check_resolutions(32) == (32, 64, 96)
    assert check_resolutions(224) == (224, 96, 288)


def test_a_graph_that_cannot_follow_the_size_is_fixed_and_says_so(tmp_path):
    cfg = quick("wavelet")  # its compression loop runs log2(side) times: unrolled at trace time
    model = model_of(cfg)
    onnx_info = export_onnx(model, cfg, tmp_path / "w.onnx")
    ts_info = export_torchscript(model, cfg, tmp_path / "w.pt")
    for info in (onnx_info, ts_info):
        d = info.details
        assert d["ok"] and not d["dynamic_size"] and d["fixed_size"] == 64
        assert d["check"].startswith("fixed at 64 x 64 px (") and "\n" not in d["check"]
        assert d["input_shape"] == "N x 3 x 64 x 64 only"
    graph = onnx.load(str(tmp_path / "w.onnx"))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    session = ort.InferenceSession(str(tmp_path / "w.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": batch(64).numpy()})[0]
    assert float(np.abs(got - eager(model, batch(64))).max()) <= TOLERANCE
    with pytest.raises(Exception, match="dimensions|shape"):
        session.run(None, {"images": batch(96).numpy()})
    loaded = torch.jit.load(str(tmp_path / "w.pt"))
    with pytest.raises(Exception, match="takes 64 x 64 inputs only"):  # torch.jit.Error, one line
        loaded(batch(96))


@pytest.mark.slow  # about 20 s: four exports through the command
def test_nas_export_prints_and_cards_the_size(tmp_path, capsys):
    """Through the command: the dynamic graph's card says any multiple of 32, the fixed one its size."""
    run = make_run(tmp_path, "run", n=2, configs=[quick(), quick("wavelet")],
                   statuses=["complete", "complete"], accuracies=[0.5, 0.6])  # fmt: skip
    out = tmp_path / "out"
    assert main(["export", str(run), "--trial", "0", "--trial", "1", "--out", str(out), "--format", "onnx,torchscript"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("follows the input size") == 2 and printed.count("fixed at 64 x 64 px") == 2
    dynamic_card = (out / "trial_00000_quick.md").read_text()
    fixed_card = (out / "trial_00001_quick.md").read_text()
    assert "H, W any multiple of 32; checked at 64, 32, 128 px" in dynamic_card
    assert "N x 3 x 64 x 64 only" in fixed_card and "fixed at 64 x 64 px" in fixed_card
    assert main(["export", str(run), "--trial", "0", "--out", str(tmp_path / "j"), "--format", "onnx", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["onnx_max_abs_diff"] <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("zoo", ["van_b0", "cmt_ti"])  # at 224 / 160 px, and half, and 64 px more
def test_zoo_exports_follow_the_input_size(tmp_path, zoo):
    from search_space import load_zoo

    cfg = load_zoo(zoo)
    model = model_of(cfg)
    for info in (export_onnx(model, cfg, tmp_path / "z.onnx"), export_torchscript(model, cfg, tmp_path / "z.pt")):
        assert info.details["ok"] and info.details["dynamic_size"], info.details["check"]
        assert info.details["checked_sides"] == list(check_resolutions(cfg.resolution))

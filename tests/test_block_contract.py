"""The contract every block type must meet (CONTRIBUTING.md): run over every registered block.

For each block type, on a small network that uses it in every stage (sampled from a space with
modest knob choices): analytic == traced params and MACs at two resolutions, forward and backward
at both, the YAML round trip, an ONNX export that onnxruntime runs to within 1e-4 of PyTorch, and
knob declarations that match what the block reads. Then the recipe itself: a copy of
``search_space/`` plus ONE new file is enough to sample, count, build and export a new family.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from search_space import ArchConfig, ConfigError, SearchSpace, analytic_cost, build_model, traced_cost
from search_space.blocks import BlockType, block_knobs, block_names, get_block, register

REPO = Path(__file__).resolve().parents[1]
RESOLUTIONS = (64, 96)  # the config's own and another (CMT interpolates its bias, pads K/V)
ONNX_TOLERANCE = 1e-4


def contract_space(block: str) -> SearchSpace:
    """Four stages of ``block`` at 64 px; knobs the block does not read are simply not sampled."""
    stage = {"block": [block], "depth": {"low": 1, "high": 2}, "mlp_ratio": [2.0],
             "channel_attention": ["none", "se", "eca"], "lka_kernel": [3, 5], "lka_dilated_kernel": [5, 7],
             "lka_dilation": [2, 3], "attn_kernel": [3, 5], "conv_kernel": [3]}  # fmt: skip
    per_stage = [  # widths, heads, K/V reductions that divide the 16, 8, 4, 2 px feature maps
        {"width": [16, 32], "heads": [1, 2], "kv_reduction": [2, 4]},
        {"width": [32], "heads": [2], "kv_reduction": [2]},
        {"width": [32, 48], "heads": [2, 4], "kv_reduction": [1, 2]},
        {"width": [64], "heads": [4], "kv_reduction": [1]},
    ]
    raw = {"name": f"contract-{block}", "resolution": 64, "num_classes": 10, "downsampling": ["cmt", "van"],
           "stem_channels": [8], "head_fc_dim": [0, 64], "stages": [{**stage, **extra} for extra in per_stage]}  # fmt: skip
    return SearchSpace.from_dict(raw, f"contract space of {block}")


def contract_config(block: str, seed: int = 0) -> ArchConfig:
    return contract_space(block).sample(seed)


@pytest.fixture(params=block_names())
def block(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_family_is_discovered() -> None:
    # the three shipped families, found by scanning the package (registry.py lists none of them)
    assert {"van", "cmt", "acmix"} <= set(block_names())
    assert "acmix" not in (REPO / "search_space/blocks/registry.py").read_text()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_analytic_equals_traced(block: str, seed: int, resolution: int) -> None:
    cfg = contract_config(block, seed)
    assert all(stage.block == block for stage in cfg.stages)
    assert analytic_cost(cfg, resolution) == traced_cost(cfg, resolution)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_forward_and_backward(block: str, resolution: int) -> None:
    cfg = contract_config(block)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.randn(2, cfg.in_channels, resolution, resolution)
    out = model(x)
    assert out.shape == (2, cfg.num_classes)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


def test_yaml_round_trip(block: str, tmp_path: Path) -> None:
    cfg = contract_config(block)
    text = cfg.to_yaml()
    back = ArchConfig.from_yaml(text)
    assert back == cfg and back.to_yaml() == text
    cfg.save(tmp_path / "m.yaml")
    assert ArchConfig.load(tmp_path / "m.yaml") == cfg


def test_onnx_export_matches_pytorch(block: str, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    cfg = contract_config(block)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = tmp_path / f"{block}.onnx"
    _export_onnx(model, cfg, path)
    x = torch.randn(2, cfg.in_channels, cfg.resolution, cfg.resolution)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= ONNX_TOLERANCE


def test_knob_declarations_match_what_the_block_reads(block: str) -> None:
    """Other families' knobs change nothing (the latency table and the space rely on it); each of
    the block's own knobs changes its output or its cost."""
    block_type = get_block(block)
    cfg = contract_config(block)
    x = torch.randn(1, cfg.in_channels, cfg.resolution, cfg.resolution)
    reference = _output(cfg, x)
    for knob in sorted(block_knobs() - set(block_type.knobs)):
        other = _edit_stages(cfg, **{knob: getattr(cfg.stages[0], knob) + 2})
        assert analytic_cost(other) == analytic_cost(cfg), knob
        assert torch.equal(_output(other, x), reference), f"{block} reads '{knob}' without declaring it"
    for knob in block_type.knobs:
        value = getattr(cfg.stages[0], knob)
        constrained = knob in block_type.divides_width or knob in block_type.divides_feature_map
        try:
            other = _edit_stages(cfg, stage=0, **{knob: value * 2 if constrained else value + 2})
        except ConfigError:
            continue  # the changed value is not valid for this stage: nothing to compare
        changed = analytic_cost(other) != analytic_cost(cfg) or not torch.equal(_output(other, x), reference)
        assert changed, f"{block} declares '{knob}' but changing it changes nothing"


def test_declarations_are_well_formed(block: str) -> None:
    block_type = get_block(block)
    assert set(block_type.summary(contract_config(block).stages[0])) <= {"heads", "kv_reduction", "kernels"}
    assert len(block_type.colour) == 7 and block_type.colour.startswith("#")
    int(block_type.colour[1:], 16)
    assert block_type.description


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"knobs": ("mlp_ratio",)}, "knob 'mlp_ratio' is not a block-specific StageConfig field"),
        ({"knobs": ("window",)}, "knob 'window' is not a block-specific StageConfig field"),
        ({"divides_width": ("heads",)}, "'heads' is constrained but not listed in knobs"),
    ],
)
def test_register_refuses_bad_declarations(declared: dict, message: str) -> None:
    van = get_block("van")
    with pytest.raises(ValueError, match=message):
        register(BlockType(name="bad", build=van.build, cost=van.cost, **declared))
    assert "bad" not in block_names()


def _edit_stages(cfg: ArchConfig, stage: int | None = None, **changes: int) -> ArchConfig:
    stages = tuple(
        dataclasses.replace(s, **changes) if stage in (None, i) else s for i, s in enumerate(cfg.stages)
    )
    edited = cfg.replace(stages=stages)
    edited.validate("edited config")
    return edited


def _output(cfg: ArchConfig, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return build_model(cfg).eval()(x)


def _export_onnx(model: torch.nn.Module, cfg: ArchConfig, path: Path) -> None:
    import warnings

    example = torch.randn(1, cfg.in_channels, cfg.resolution, cfg.resolution)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip


# -- the recipe: one new file adds a family ------------------------------------------------------

NEW_BLOCK = '''
"""ConvNeXt-like block: depthwise k x k conv, LayerNorm, pointwise MLP, layer scale."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..config import StageConfig
from ..cost import Cost
from .channel_attention import build_channel_attention, channel_attention_cost
from .layers import LayerNorm2d
from .registry import BlockType, register


class ConvNeXtLikeBlock(nn.Module):
    def __init__(self, stage: StageConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim, k = stage.width, stage.conv_kernel
        self.dwconv = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)
        self.channel_attn = build_channel_attention(stage.channel_attention, dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = nn.Conv2d(dim, stage.hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(stage.hidden, dim, 1)
        self.gamma = nn.Parameter(0.5 * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor, shared: object = None) -> torch.Tensor:
        y = self.norm(self.channel_attn(self.dwconv(x)))
        return x + self.gamma * self.fc2(self.act(self.fc1(y)))


def convnext_cost(stage: StageConfig, size: int) -> Cost:
    dim, hidden, k, n = stage.width, stage.hidden, stage.conv_kernel, size * size
    return (
        C.conv(dim, dim, k, n, groups=dim)
        + channel_attention_cost(stage.channel_attention, dim)
        + C.norm(dim)
        + C.conv(dim, hidden, 1, n)
        + C.conv(hidden, dim, 1, n)
        + C.params(dim)
    )


register(
    BlockType(
        name="convnext",
        build=lambda stage, size, drop_path=0.0: ConvNeXtLikeBlock(stage, drop_path=drop_path),
        cost=convnext_cost,
        description="ConvNeXt-like: depthwise conv + LayerNorm + pointwise MLP, layer scale",
        knobs=("conv_kernel",),
        summary=lambda stage: {"kernels": f"DW {stage.conv_kernel}x{stage.conv_kernel}"},
        colour="#9467bd",
    )
)
'''

NEW_SPACE = """\
name: with-convnext
resolution: 64
num_classes: 10
downsampling: [cmt]
stem_channels: [8]
head_fc_dim: [0]
stages:
  - {block: [convnext], depth: 1, width: [16], mlp_ratio: [2.0], conv_kernel: [5, 7], heads: [2]}
  - {block: [convnext], depth: {low: 1, high: 2}, width: [16, 32], mlp_ratio: [2.0], conv_kernel: [3, 7]}
  - {block: [convnext, van], depth: 1, width: [32], mlp_ratio: [2.0], conv_kernel: [3, 5], channel_attention: [none, se]}
  - {block: [convnext, cmt], depth: 1, width: [32], mlp_ratio: [2.0], conv_kernel: [3], heads: [2], kv_reduction: 1}
"""

CHECK_NEW_BLOCK = """
import json, sys, warnings
import numpy as np
import onnxruntime
import torch
import search_space
from search_space import SearchSpace, analytic_cost, build_model, traced_cost
from search_space.blocks import block_names, get_block

space = SearchSpace.load(sys.argv[1])
cfgs = [space.sample(seed) for seed in range(6)]
cfg = next(c for c in cfgs if c.stages[2].block == "convnext")
report = {"module": search_space.__file__, "blocks": list(block_names()), "kernels": [s.conv_kernel for s in cfg.stages[:2]],
          "heads": cfg.stages[0].heads, "yaml": cfg.to_yaml()}
report["counts"] = [[list(analytic_cost(cfg, r)), list(traced_cost(cfg, r))] for r in (64, 96)]
torch.manual_seed(0)
model = build_model(cfg).eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(model, (x[:1],), sys.argv[2], dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    want = model(x).numpy()
got = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
report["onnx_max_abs_diff"] = float(np.abs(got - want).max())
report["summary"] = dict(get_block("convnext").summary(cfg.stages[0]))
print(json.dumps(report))
"""


def copy_with_new_block(root: Path) -> Path:
    """``search_space/`` copied under ``root`` with the one new file; returns the copy's blocks dir."""
    shutil.copytree(REPO / "search_space", root / "search_space", ignore=shutil.ignore_patterns("__pycache__"))
    blocks = root / "search_space" / "blocks"
    (blocks / "convnext.py").write_text(textwrap.dedent(NEW_BLOCK).lstrip())
    return blocks


def test_one_new_file_adds_a_block_family(tmp_path: Path) -> None:
    blocks = copy_with_new_block(tmp_path / "tree")
    changed = [p for p in blocks.parent.rglob("*.py") if p.read_bytes() != _original(p, tmp_path / "tree")]
    assert [p.name for p in changed] == ["convnext.py"]  # no other file edited
    space = tmp_path / "space.yaml"
    space.write_text(NEW_SPACE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "tree"))
    proc = subprocess.run([sys.executable, "-c", CHECK_NEW_BLOCK, str(space), str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["module"].startswith(str(tmp_path / "tree"))  # the copy, not the installed package
    assert "convnext" in report["blocks"]
    assert set(report["kernels"]) <= {3, 5, 7} and report["heads"] == 1  # heads is not a convnext knob
    assert "block: convnext" in report["yaml"]
    for analytic, traced in report["counts"]:
        assert analytic == traced
    assert report["onnx_max_abs_diff"] <= ONNX_TOLERANCE
    k = report["kernels"][0]
    assert report["summary"] == {"kernels": f"DW {k}x{k}"}


@pytest.mark.slow
def test_search_with_a_new_block_family(tmp_path: Path) -> None:
    """`nas search` (from the real tree) over a space of the new family (from the copy)."""
    sys.path.insert(0, str(REPO / "tests"))
    from fault_helpers import Tagged, nas_cmd, run_cli, search_args

    copy_with_new_block(tmp_path / "tree")
    space = tmp_path / "space.yaml"
    space.write_text(NEW_SPACE.replace("[convnext, van]", "[convnext]").replace("[convnext, cmt]", "[convnext]"))
    tagged = Tagged()
    try:
        env = tagged.env(PYTHONPATH=f"{tmp_path / 'tree'}{os.pathsep}{REPO}")
        run = tmp_path / "run"
        # cwd: a "-m" run puts the working directory first on sys.path, before PYTHONPATH
        proc = run_cli(nas_cmd(*search_args(run, space, trials=2, epochs=1)), env, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        exported = sorted((run / "pareto").glob("*.yaml"))
        assert exported, proc.stdout[-2000:]
        for path in exported:
            assert path.read_text().count("block: convnext") == 4
            rows = [r for r in path.with_suffix(".md").read_text().splitlines() if "| convnext |" in r]
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            # the card's stage table: stage, block, depth, width, map, heads, mlp ratio, K/V reduction, kernels, ...
            assert len(rows) == 4 and all(c[5] == "-" and c[7] == "-" and c[8].startswith("DW ") for c in cells)
    finally:
        tagged.cleanup()


def _original(path: Path, copy_root: Path) -> bytes:
    original = REPO / path.relative_to(copy_root)
    return original.read_bytes() if original.exists() else b""

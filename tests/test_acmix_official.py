"""ACmixMixer against outputs of the official ACmix module (LeapLabTHU/ACmix), borders included.

The fixture holds the official module's parameters, inputs and outputs; it is made by
tests/fixtures/make_acmix_fixture.py from a clone of the official repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.make_acmix_fixture import official_to_ours

from search_space import StageConfig
from search_space.blocks.acmix import ACmixMixer, acmix_block_cost, reflect_indices

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "acmix_official.npz", allow_pickle=False)
META = json.loads(str(FIXTURE["meta"]))


def _case(name: str) -> tuple[dict, ACmixMixer, torch.Tensor, torch.Tensor]:
    case = META["cases"][name]
    prefix = f"{name}.param."
    official = {k[len(prefix) :]: torch.from_numpy(FIXTURE[k]) for k in FIXTURE.files if k.startswith(prefix)}
    mixer = ACmixMixer(case["shape"][1], case["heads"], case["attn_kernel"], case["conv_kernel"]).eval()
    official_to_ours(official, mixer)
    return case, mixer, torch.from_numpy(FIXTURE[f"{name}.input"]), torch.from_numpy(FIXTURE[f"{name}.output"])


@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_mixer_reproduces_official_outputs_everywhere(name):
    _, mixer, x, want = _case(name)
    with torch.no_grad():
        got = mixer(x)
    assert (got - want).abs().max().item() <= 1e-5  # every pixel, the image border included


@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_parameter_count_is_the_official_one_plus_our_projection(name):
    case, mixer, _, _ = _case(name)
    dim, official = case["shape"][1], case["official_params"]
    projection = dim * dim + dim  # our 1x1 output projection, absent from the official module
    assert sum(p.numel() for p in mixer.parameters()) == official + projection
    # The analytic count: block = 2 BatchNorms + mixer + MLP (worked out by hand here).
    stage = StageConfig("acmix", 1, dim, heads=case["heads"], mlp_ratio=2.0,
                        attn_kernel=case["attn_kernel"], conv_kernel=case["conv_kernel"])  # fmt: skip
    norms, mlp = 2 * 2 * dim, (dim * 2 * dim + 2 * dim) + (2 * dim * dim + dim)
    assert acmix_block_cost(stage, 14).params == norms + official + projection + mlp


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("pad", range(0, 7))
def test_reflect_indices_follow_numpy_reflect(n, pad):
    assert reflect_indices(n, pad).tolist() == np.pad(np.arange(n), pad, mode="reflect").tolist()


@pytest.mark.parametrize("size", [1, 2, 3])
def test_maps_smaller_than_the_window_reflect_repeatedly(size):
    """ReflectionPad2d cannot pad a 1x1..3x3 map by 3 (7x7 windows): the mixer runs anyway."""
    torch.manual_seed(0)
    mixer = ACmixMixer(dim=16, heads=2, attn_kernel=7)
    q, k, v = (torch.randn(2, 2, 8, size, size) for _ in range(3))
    out = mixer.window_attention(q, k, v)
    assert torch.isfinite(out).all()
    if size == 1:  # every window position is the pixel itself
        torch.testing.assert_close(out, v)
    x = torch.randn(1, 16, size, size, requires_grad=True)
    mixer(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# Exported graphs gather reflected indices at every size (a Pad of mode reflect fixes its size into
# the graph and fails on maps smaller than the pad): the export then follows the input size.
@pytest.mark.parametrize("size,expect_reflect_pad", [(8, False), (2, False)])
def test_onnx_export_matches_pytorch(tmp_path, size, expect_reflect_pad):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    mixer = ACmixMixer(dim=16, heads=2, attn_kernel=5).eval()
    x = torch.randn(2, 16, size, size)
    path = tmp_path / "mixer.onnx"
    torch.onnx.export(mixer, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    pads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Pad"]
    modes = {a.s.decode() for n in pads for a in n.attribute if a.name == "mode"}
    assert ("reflect" in modes) == expect_reflect_pad
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - mixer(x).numpy()).max() <= 1e-4

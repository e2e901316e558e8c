"""ACmix's dense window attention (one SDPA with a log-count mask) against the shifted-view loop,
the official module, hand-counted window masks, and the MAC count.

The loop (`ACmixMixer.window_attention` with the dense path off) is the formulation the MACs
describe and test_models_and_counting.py checks against an explicit unfold; the official module's
outputs are tests/fixtures/acmix_official.npz (tests/test_acmix_official.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.make_acmix_fixture import official_to_ours

from search_space import ArchConfig, StageConfig, StemConfig, analytic_cost, build_model, traced_cost
from search_space.blocks import acmix
from search_space.blocks.acmix import ACmixMixer, window_log_counts

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "acmix_official.npz", allow_pickle=False)
META = json.loads(str(FIXTURE["meta"]))
NEVER, ALWAYS = 0, 10**9  # DENSE_TOKENS that turn the dense path off / on at every size


def _run(mixer: ACmixMixer, dense_tokens: int, *tensors: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    monkeypatch.setattr(acmix, "DENSE_TOKENS", dense_tokens)
    return mixer.window_attention(*tensors)


@pytest.mark.parametrize("border", ["reflect", "mask"])
@pytest.mark.parametrize("ka,h,w", [(7, 1, 1), (7, 2, 2), (5, 4, 4), (7, 3, 5), (3, 8, 8), (5, 9, 11), (7, 14, 14)])
def test_dense_equals_the_shifted_view_loop_values_and_gradients(ka, h, w, border, monkeypatch):
    torch.manual_seed(0)
    mixer = ACmixMixer(dim=16, heads=2, attn_kernel=ka, border=border).double()
    inputs = [torch.randn(2, 2, 8, h, w, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    results = []
    for tokens in (NEVER, ALWAYS):
        mixer.zero_grad()
        out = _run(mixer, tokens, *inputs, monkeypatch=monkeypatch)
        grads = torch.autograd.grad(out.square().sum(), [*inputs, mixer.pos.weight, mixer.pos.bias])
        results.append((out.detach(), grads))
    (loop, loop_grads), (dense, dense_grads) = results
    torch.testing.assert_close(dense, loop, rtol=1e-10, atol=1e-10)
    for a, b in zip(dense_grads, loop_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("tokens", [NEVER, ALWAYS])
@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_both_formulations_give_the_official_outputs(name, tokens, monkeypatch):
    monkeypatch.setattr(acmix, "DENSE_TOKENS", tokens)
    case = META["cases"][name]
    prefix = f"{name}.param."
    official = {k[len(prefix) :]: torch.from_numpy(FIXTURE[k]) for k in FIXTURE.files if k.startswith(prefix)}
    mixer = ACmixMixer(case["shape"][1], case["heads"], case["attn_kernel"], case["conv_kernel"]).eval()
    official_to_ours(official, mixer)
    with torch.no_grad():
        got = mixer(torch.from_numpy(FIXTURE[f"{name}.input"]))
    assert (got - torch.from_numpy(FIXTURE[f"{name}.output"])).abs().max().item() <= 1e-5


def test_log_counts_by_hand():
    # A 3-pixel row, 3-wide windows, reflection: pixel 0 reads (1, 0, 1), pixel 1 reads (0, 1, 2),
    # pixel 2 reads (1, 2, 1).  A single row (h = 1) repeats its only pixel 3 times.
    counts = window_log_counts(1, 3, 3, "reflect", torch.float64, torch.device("cpu")).exp().round()
    assert counts.tolist() == [[3 * 1, 3 * 2, 0], [3 * 1, 3 * 1, 3 * 1], [0, 3 * 2, 3 * 1]]
    # zero padding, masked: a window reads the pixels inside the image once each
    masked = window_log_counts(1, 3, 3, "mask", torch.float64, torch.device("cpu")).exp().round()
    assert masked.tolist() == [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    # every window position is read exactly once: each row sums to ka^2
    big = window_log_counts(4, 5, 7, "reflect", torch.float32, torch.device("cpu")).exp()
    assert torch.allclose(big.sum(1), torch.full((20,), 49.0))
    assert math.isinf(masked.log()[0, 2].item())


def test_dense_path_trains_under_inference_mode_first():
    """The cached mask made while evaluating (inference mode) must still serve a training step."""
    mixer = ACmixMixer(dim=8, heads=2, attn_kernel=5)
    window_log_counts.cache_clear()
    with torch.inference_mode():
        mixer(torch.randn(2, 8, 3, 3))
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    mixer(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_mac_count_is_the_window_count_whichever_path_runs(monkeypatch):
    """A network whose ACmix maps all take the dense path at 32 px still counts k_att^2 window
    products per pixel, traced and analytic alike; the traced count runs the loop it describes."""
    stage = StageConfig("acmix", 1, 16, heads=2, attn_kernel=7, mlp_ratio=2.0)
    stages = tuple(replace(stage, width=wd) for wd in (16, 32, 64, 64))
    cfg = ArchConfig(stages=stages, name="dense", resolution=32, num_classes=10, stem=StemConfig("conv3", 8))
    assert analytic_cost(cfg) == traced_cost(cfg)
    # by hand: stage 1 (8x8 map, 16 channels) spends 2 x 16 x 49 x 64 MACs on logits and weighted sums
    window = acmix.acmix_block_cost(stage, 8).macs - acmix.acmix_block_cost(replace(stage, attn_kernel=1), 8).macs
    assert window == 2 * 16 * (49 - 1) * 64
    calls = []
    dense = ACmixMixer._dense_attention
    monkeypatch.setattr(ACmixMixer, "_dense_attention", lambda self, *t: calls.append(1) or dense(self, *t))
    with torch.no_grad():
        build_model(cfg).eval()(torch.randn(1, 3, 32, 32))
    assert len(calls) == 4  # 8x8, 4x4, 2x2, 1x1 maps against 7x7 windows: all dense when run

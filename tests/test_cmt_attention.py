"""CMT's attention written out for few keys (`search_space.blocks.cmt.attend`) against PyTorch's
scaled_dot_product_attention (values and gradients, float64), a hand-worked single key, and the
lightweight MHSA with the written-out path on and off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_space.blocks import cmt
from search_space.blocks.cmt import LightweightMHSA, RelativePositionBias, attend


@pytest.mark.parametrize("queries, keys, dim", [(4, 4, 12), (64, 4, 8), (16, 1, 16), (9, 15, 4), (5, 16, 8)])
def test_attend_equals_sdpa_values_and_gradients(queries, keys, dim):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, dim, dtype=torch.float64, requires_grad=True) for n in (queries, keys, keys))
    bias = (torch.randn(1, 2, queries, keys, dtype=torch.float64) * 2).requires_grad_()
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    got = attend(q, k, v, bias)
    grad = torch.randn_like(want)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, [q, k, v, bias], grad), torch.autograd.grad(want, [q, k, v, bias], grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_one_key_returns_its_value_to_every_query():
    """softmax over a single logit is 1, whatever the query or the bias."""
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    out = attend(q, k, v, torch.full((1, 3, 5, 1), 40.0))
    assert torch.equal(out, v.expand(2, 3, 5, 4))


@pytest.mark.parametrize("size, reduction", [(2, 1), (8, 4), (4, 2), (1, 1), (8, 1)])  # 4, 4, 4, 1 and 64 keys
def test_mhsa_is_the_same_with_the_written_out_path_off(size, reduction, monkeypatch):
    torch.manual_seed(0)
    mhsa = LightweightMHSA(16, 2, reduction).double()
    bias = RelativePositionBias(2, size, reduction).double()
    x = torch.randn(3, 16, size, size, dtype=torch.float64, requires_grad=True)
    runs = []
    for keys in (cmt.WRITTEN_OUT_KEYS, 0):
        monkeypatch.setattr(cmt, "WRITTEN_OUT_KEYS", keys)
        out = mhsa(x, bias)
        params = [x, bias.bias, *mhsa.parameters()]
        runs.append((out, torch.autograd.grad(out.square().sum(), params)))
    (got, got_grads), (want, want_grads) = runs
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_the_written_out_path_is_taken_for_few_keys_only(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(cmt, "attend", lambda q, k, v, b: calls.append(k.shape[-2]) or F.scaled_dot_product_attention(q, k, v, attn_mask=b))
    for size, reduction in [(8, 4), (2, 1), (8, 2), (8, 1)]:  # 4, 4, 16 and 64 keys
        LightweightMHSA(8, 2, reduction)(torch.randn(1, 8, size, size), RelativePositionBias(2, size, reduction))
    assert calls == [4, 4]

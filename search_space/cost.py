"""Analytic parameter and MAC arithmetic shared by every block's cost model.

Convention (the VAN and CMT papers' "FLOPs"): multiply-accumulates of convolutions, linear layers
and attention products (q.k and attn.v, including ACmix's windowed ones). Biases, norms,
activations, softmax, residual adds and elementwise gating are not MACs.
"""

from __future__ import annotations

from typing import NamedTuple


class Cost(NamedTuple):
    """Parameters and MACs. A NamedTuple: the analytic model builds thousands of these per second."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: "Cost") -> "Cost":  # type: ignore[override]
        return Cost(self[0] + other[0], self[1] + other[1])

    def __mul__(self, n: int) -> "Cost":  # type: ignore[override]
        return Cost(self[0] * n, self[1] * n)

    __rmul__ = __mul__


ZERO = Cost()


def conv(cin: int, cout: int, kernel: int, out_pixels: int, *, groups: int = 1, bias: bool = True) -> Cost:
    weights = cout * (cin // groups) * kernel * kernel
    return Cost(weights + (cout if bias else 0), weights * out_pixels)


def linear(fin: int, fout: int, tokens: int, *, bias: bool = True) -> Cost:
    return Cost(fin * fout + (fout if bias else 0), fin * fout * tokens)


def norm(channels: int) -> Cost:
    """BatchNorm or LayerNorm: a scale and a shift per channel, no MACs."""
    return Cost(2 * channels, 0)


def params(n: int) -> Cost:
    return Cost(n, 0)

"""family.png: MACs and params against phi, the compound-scaling target beside the actual counts."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from search_space.files import write_atomic  # noqa: E402

if TYPE_CHECKING:
    from .family import Member


def plot_family(members: Sequence["Member"], path: str | Path) -> None:
    ordered = sorted(members, key=lambda m: m.scaled.phi)
    first = ordered[0].scaled
    phis = np.array([m.scaled.phi for m in ordered])
    grid = np.linspace(phis.min() - 0.25, phis.max() + 0.25, 200)
    constant = first.coefficients.constant

    fig, (ax_macs, ax_params) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax_macs.plot(
        grid, first.base_cost.macs * constant**grid / 1e9, "--", color="0.45",
        label=f"target: base x {constant:.3f}^phi",
    )  # fmt: skip
    macs = np.array([m.scaled.cost.macs for m in ordered]) / 1e9
    ax_macs.plot(phis, macs, "o-", color="tab:blue", label="actual (counted)")
    params = np.array([m.scaled.cost.params for m in ordered]) / 1e6
    ax_params.plot(phis, params, "o-", color="tab:orange", label="actual (counted)")
    for m, y_macs, y_params in zip(ordered, macs, params):
        dev = f"{100 * m.scaled.deviation:+.1f}%"
        ax_macs.annotate(f"{m.name} {dev}", (m.scaled.phi, y_macs), textcoords="offset points", xytext=(5, -12))
        ax_params.annotate(m.name, (m.scaled.phi, y_params), textcoords="offset points", xytext=(5, -12))
    zoo = [m for m in ordered if m.zoo is not None]
    if zoo:
        z_phis = [m.scaled.phi for m in zoo]
        ax_macs.plot(z_phis, [m.zoo.cost.macs / 1e9 for m in zoo], "s", mfc="none", color="tab:red", label="zoo model")
        ax_params.plot(
            z_phis, [m.zoo.cost.params / 1e6 for m in zoo], "s", mfc="none", color="tab:red", label="zoo model"
        )
        for m in zoo:
            ax_macs.annotate(m.zoo.name, (m.scaled.phi, m.zoo.cost.macs / 1e9), textcoords="offset points",
                             xytext=(5, 5), color="tab:red", fontsize=8)  # fmt: skip
    ax_macs.set_yscale("log")
    ax_macs.set_ylabel('MACs ("FLOPs"), G')
    ax_params.set_ylabel("params, M")
    ax_params.set_yscale("log")
    for ax in (ax_macs, ax_params):
        ax.set_xlabel("phi")
        ax.set_xticks(phis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 40, not 4x10^1
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "235" else ""))
    c = first.coefficients
    fig.suptitle(f"{first.base.name} family: alpha={c.alpha:g}, beta={c.beta:g}, gamma={c.gamma:g}"
                 + ("  (widths matched to the MACs target)" if first.matched else ""))  # fmt: skip
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())

"""Static figures of a run (matplotlib, Agg canvas: no display and no global pyplot state).

Each function returns a `matplotlib.figure.Figure`; `figure_png` renders one to PNG bytes.
Colours: every trial greyed, the Pareto front highlighted in red, zoo models in black.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from search_space.attention import attention_styles
from search_space.blocks import block_types
from search_space.units import format_macs

from .run import LABELS, TrialRecord

FRONT = "#d62728"
GREY = "#9a9a9a"
DPI = 110


@dataclass(frozen=True)
class ZooPoint:
    """A reference model: its MACs at its own resolution and, if a proxy run exists, its accuracy."""

    name: str
    macs: int
    resolution: int
    params: int
    val_acc: float | None = None


def figure_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _macs_axis(ax, lo: float | None, hi: float | None) -> None:  # type: ignore[no-untyped-def]
    """Log MACs axis labelled in G/M, with 1-2-5 ticks (denser over less than ~1.5 decades)."""
    ax.set_xscale("log")
    narrow = lo is not None and hi is not None and hi / lo < 30
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_macs(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def pareto_figure(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    x: str = "macs",
    *,
    limit: float | None = None,
    zoo: Sequence[ZooPoint] = (),
    title: str = "",
) -> Figure:
    """Accuracy against ``x`` (``macs`` or a latency): all trials grey, the front in red.

    Pruned trials are drawn hollow (their accuracy is from a lower rung); infeasible ones were
    never trained and appear as red ticks on the x axis at their cost. Zoo models with a proxy
    accuracy are black stars; those without one are dotted vertical lines at their cost.
    """
    fig = Figure(figsize=(8.6, 5.2))
    ax = fig.add_subplot()
    front_ids = {t.number for t in front}
    full = [t for t in trials if t.eligible and t.fidelity.full and t.number not in front_ids and t.metric(x) is not None]
    pruned = [t for t in trials if t.status == "pruned" and t.number not in front_ids and t.metric(x) is not None
              and t.val_acc is not None]  # fmt: skip
    infeasible = [t for t in trials if t.status == "infeasible" and t.metric(x) is not None]
    if full:
        ax.scatter([t.metric(x) for t in full], [t.val_acc for t in full], s=22, color=GREY, alpha=0.75,
                   label=f"top-rung trials ({len(full)} off the front)", zorder=2)  # fmt: skip
    if pruned:
        ax.scatter([t.metric(x) for t in pruned], [t.val_acc for t in pruned], s=22, facecolors="none",
                   edgecolors=GREY, alpha=0.75, zorder=2,
                   label=f"stopped at a lower rung ({len(pruned)}, a cheaper proxy)")  # fmt: skip
    if front:
        xs = [t.metric(x) for t in front]
        ys = [t.val_acc for t in front]
        ax.step(xs, ys, where="post", color=FRONT, lw=1.4, alpha=0.8, zorder=3)
        ax.scatter(xs, ys, s=46, color=FRONT, edgecolors="black", linewidths=0.6, zorder=4,
                   label=f"Pareto front ({len(front)})")  # fmt: skip
        for t in front:
            ax.annotate(f"#{t.number}", (t.metric(x), t.val_acc), textcoords="offset points", xytext=(4, 5),
                        fontsize=7.5, color=FRONT)  # fmt: skip
    # the axis spans what was trained (and the limit): the sampler's infeasible proposals and large
    # zoo models must not squeeze the trained trials into a corner
    shown = [t.metric(x) for t in (*full, *pruned, *front)] + ([limit] if limit else [])
    shown += [z.macs for z in zoo if z.val_acc is not None] if x == "macs" else []
    lo, hi = (min(shown) / 1.3, max(shown) * 1.5) if shown else (None, None)
    if infeasible:
        ticks = [t.metric(x) for t in infeasible if hi is None or t.metric(x) <= hi]  # type: ignore[operator]
        beyond = len(infeasible) - len(ticks)
        ax.plot(ticks, [0.0] * len(ticks), "|", color=FRONT, ms=12, mew=1.2, transform=ax.get_xaxis_transform(),
                clip_on=False, label=f"infeasible, not trained ({len(infeasible)}"
                + (f", {beyond} off the axis)" if beyond else ")"))  # fmt: skip
    if limit is not None:
        ax.axvline(limit, color="black", ls="--", lw=1, alpha=0.7, label="budget" if x == "macs" else "limit")
    xlabel = LABELS.get(x, x) + (" at deploy resolution (log)" if x == "macs" else "")
    ax.set_ylabel("proxy validation accuracy")
    if x == "macs":
        _macs_axis(ax, lo, hi)
        inside = [z for z in zoo if lo is None or lo <= z.macs <= hi]  # type: ignore[operator]
        _draw_zoo(ax, inside)
        outside = [z for z in zoo if z not in inside]
        if outside:
            xlabel += "\noff the axis: " + ", ".join(f"{z.name} {format_macs(z.macs)}" for z in outside)
    if lo is not None:
        ax.set_xlim(lo, hi)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(alpha=0.25, which="both")
    ax.set_title(title or f"Accuracy vs {LABELS.get(x, x)}", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return fig


def _draw_zoo(ax, zoo: Sequence[ZooPoint]) -> None:  # type: ignore[no-untyped-def]
    with_acc = [z for z in zoo if z.val_acc is not None]
    marks = [z for z in zoo if z.val_acc is None]
    if with_acc:
        ax.scatter([z.macs for z in with_acc], [z.val_acc for z in with_acc], marker="*", s=110, color="black",
                   zorder=5, label="zoo models (own proxy runs)")  # fmt: skip
        for z in with_acc:
            ax.annotate(z.name, (z.macs, z.val_acc), textcoords="offset points", xytext=(5, -10), fontsize=7.5)
    for i, z in enumerate(marks):
        ax.axvline(z.macs, color="black", ls=":", lw=0.8, alpha=0.55, zorder=1,
                   label="zoo models (MACs only)" if i == 0 else None)  # fmt: skip
        ax.text(z.macs, 0.99, f" {z.name}", transform=ax.get_xaxis_transform(), rotation=90, va="top",
                ha="right", fontsize=7, alpha=0.8)  # fmt: skip


def history_figure(trials: Sequence[TrialRecord], title: str = "") -> Figure:
    """Accuracy by trial number, best-so-far among trials measured at the top rung as a step line
    (a lower rung's accuracy is another fidelity: drawn apart, never the best so far)."""
    fig = Figure(figsize=(8.6, 4.2))
    ax = fig.add_subplot()
    ordered = sorted(trials, key=lambda t: t.number)
    groups = {
        "top rung, feasible": ([t for t in ordered if t.eligible and t.fidelity.full], dict(color="#1f77b4", s=20)),
        "stopped at a lower rung": ([t for t in ordered if t.status == "pruned"],
                                    dict(color="#ff7f0e", marker="x", s=24)),  # fmt: skip
        "duplicate (not retrained)": ([t for t in ordered if t.status == "duplicate"],
                                      dict(color=GREY, marker="s", s=10)),  # fmt: skip
    }
    for label, (group, style) in groups.items():
        group = [t for t in group if t.val_acc is not None]
        if group:
            ax.scatter([t.number for t in group], [t.val_acc for t in group], label=f"{label} ({len(group)})",
                       zorder=3, **style)  # fmt: skip
    best, xs, ys = -math.inf, [], []
    for t in ordered:
        if t.eligible and t.fidelity.full and t.val_acc is not None and t.val_acc > best:
            best = t.val_acc
        if best > -math.inf:
            xs.append(t.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color=FRONT, lw=1.6, label="best so far", zorder=4)
    for status, colour, label in (("infeasible", FRONT, "infeasible, not trained"), ("failed", "black", "failed")):
        group = [t.number for t in ordered if t.status == status]
        if group:
            ax.plot(group, [0.0] * len(group), "|", color=colour, ms=12, mew=1.2,
                    transform=ax.get_xaxis_transform(), clip_on=False, label=f"{label} ({len(group)})")  # fmt: skip
    running = [t.number for t in ordered if t.status in ("running", "waiting")]
    if running:
        ax.plot(running, [0.0] * len(running), "|", color="#2ca02c", ms=12, mew=1.2,
                transform=ax.get_xaxis_transform(), clip_on=False, label=f"running ({len(running)})")  # fmt: skip
    ax.set_xlabel("trial number")
    ax.set_ylabel("proxy validation accuracy")
    ax.grid(alpha=0.25)
    ax.set_title(title or "Optimisation history", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return fig


def proxy_final_figure(pairs: Sequence[tuple[int, float, float]], title: str = "") -> Figure:
    """Proxy accuracy (x) against the accuracy after full training (y), one labelled point per trial."""
    fig = Figure(figsize=(6.2, 5.0))
    ax = fig.add_subplot()
    xs, ys = [p[1] for p in pairs], [p[2] for p in pairs]
    ax.scatter(xs, ys, color=FRONT, s=28, zorder=3)
    for number, x, y in pairs:
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xlabel("proxy validation accuracy (search)")
    ax.set_ylabel("validation accuracy after full training")
    ax.grid(alpha=0.25)
    ax.set_title(title or "Did the proxy's ranking hold?", fontsize=11)
    fig.tight_layout()
    return fig


def importance_figure(importances: Mapping[str, float], title: str = "", top: int = 15) -> Figure:
    """The ``top`` most important choices as bars; the rest summed into one bar."""
    ranked = sorted(importances.items(), key=lambda kv: -kv[1])
    items = ranked[:top]
    if len(ranked) > top:
        items.append((f"{len(ranked) - top} others (sum)", sum(v for _, v in ranked[top:])))
    items = items[::-1]
    fig = Figure(figsize=(8.6, 0.6 + 0.32 * max(3, len(items))))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7.5)
    ax.set_xlabel("importance for proxy accuracy (fANOVA, normalised to sum 1)")
    ax.set_xlim(0, max([v for _, v in items] + [0.01]) * 1.15)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title or "Which choices mattered", fontsize=11)
    ax.grid(alpha=0.25, axis="x")
    fig.tight_layout()
    return fig


def block_mix_figure(front: Sequence[TrialRecord], title: str = "") -> Figure:
    """One stacked bar per front member: its stages bottom to top, height = depth (blocks),
    colour = block type (`BlockType.colour`), hatching = channel attention (`attention_styles`:
    each module's own hatch). The legend names the block types and attention modules drawn."""
    members = [t for t in front if t.config is not None]
    blocks = {b.name: b for b in block_types()}
    styles = attention_styles()
    fig = Figure(figsize=(max(6.0, 1.0 + 0.7 * len(members)), 4.6))
    ax = fig.add_subplot()
    for i, t in enumerate(members):
        bottom = 0
        for s, stage in enumerate(t.config.stages):  # type: ignore[union-attr]
            colour = blocks[stage.block].colour if stage.block in blocks else GREY
            ax.bar(i, stage.depth, bottom=bottom, color=colour, edgecolor="white",
                   hatch=styles[stage.channel_attention].hatch, width=0.72)  # fmt: skip
            label = f"S{s + 1}\n{stage.width}" if stage.depth >= 2 else f"S{s + 1}"
            ax.text(i, bottom + stage.depth / 2, label, ha="center", va="center", fontsize=6.5, color="white",
                    fontweight="bold")
            bottom += stage.depth
    ax.set_xticks(range(len(members)))
    ax.set_xticklabels([f"#{t.number}\n{format_macs(t.macs)}\n{(t.val_acc or 0):.3f}" for t in members], fontsize=7.5)
    ax.set_ylabel("blocks (stage depths, stage 1 at the bottom)")
    ax.set_xlabel("front members by MACs: trial, MACs, proxy accuracy (labels: stage, width)")
    ax.legend(handles=block_mix_legend(members), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "Block types along the front", fontsize=11)
    fig.tight_layout()
    return fig


def block_mix_legend(members: Sequence[TrialRecord]) -> list[Patch]:
    """Legend entries of the block-mix figure: every registered block type (its label and colour),
    then the attention modules the members use (their label and hatch)."""
    used = {stage.channel_attention for t in members if t.config is not None for stage in t.config.stages}
    handles = [Patch(color=b.colour, label=b.display_name) for b in block_types()]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=style.hatch, label=f"{style.label} attention")
                for name, style in attention_styles().items() if name in used and style.hatch]  # fmt: skip
    return handles

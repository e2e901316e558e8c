"""A markdown card for each member of a scaled family: what it is, where its base came from.

Names and paths are the user's: written through `search_space.text` (a newline or a terminal escape
in a config name or a run directory cannot add a section or break a code span)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from results.cards import blocks_used, stage_table
from search_space.text import markdown, markdown_code, printable
from search_space.units import format_count, format_macs

from .compound import format_phi

if TYPE_CHECKING:
    from .family import Member
    from .source import Provenance


def member_card(member: "Member", source: "Provenance | None") -> str:
    """The markdown card of one member of a scaled family.

    Args:
        member: the member (its scaled config, counts and target).
        source: the search run and trial its base came from; None for a base given with --config.
    """
    s = member.scaled
    c = s.coefficients
    lines = [
        f"# {markdown(s.config.name)}",
        "",
        f"Member **{markdown(member.name)}** of a compound-scaled family: base **{markdown(s.base.name)}** scaled with "
        f"phi={format_phi(s.phi)} (alpha={c.alpha:g}, beta={c.beta:g}, gamma={c.gamma:g}; "
        f"alpha*beta^1.5*gamma^2 = {c.constant:.3f}). It uses {markdown(blocks_used(s.config))}. "
        f"Config: {markdown_code(member.file_name)}.",
        "",
    ]
    lines += _base_section(member, source) + _model_section(member)
    lines += [
        "",
        stage_table(s.config),
        "",
        "## Use",
        "",
        "```bash",
        printable(f"nas profile {member.file_name}"),  # one line each: the block cannot be closed early
        printable(f"nas train {member.file_name} --data cifar10:PATH"),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _base_section(member: "Member", source: "Provenance | None") -> list[str]:
    """Where the base came from (a search run's trial, or --config) and what it counts."""
    s = member.scaled
    lines = ["## Base", ""]
    if source is None:
        lines.append(f"- config {markdown_code(s.base.name)} (given with --config)")
    else:
        lines += [
            f"- search run {markdown_code(source.run)} (status {markdown(source.run_status)}), trial {source.trial}",
            f"- picked: {markdown(source.reason)}",
        ]
        if source.val_acc is not None:
            proxy = f" ({source.proxy_text()})" if source.proxy_text() else ""
            lines.append(f"- proxy validation accuracy of the base: {source.val_acc:.4f}{markdown(proxy)}; this member "
                         "itself has not been trained")  # fmt: skip
        lines.append(f"- search objectives: {markdown(', '.join(source.objectives))}")
    lines.append(f"- base: {format_count(s.base_cost.params)} params, {format_macs(s.base_cost.macs)} MACs at "
                 f"{s.base.resolution} px, {s.base.num_classes} classes")  # fmt: skip
    return lines


def _model_section(member: "Member") -> list[str]:
    """The member's resolution and counts against the target, and what scaling had to change."""
    s = member.scaled
    lines = [
        "",
        "## This model",
        "",
        f"- resolution {s.config.resolution} px, {s.config.num_classes} classes",
        f"- params {format_count(s.cost.params)}",
        f"- MACs (\"FLOPs\", multiply-accumulates) {format_macs(s.cost.macs)} against the target "
        f"{format_macs(s.target_macs)} ({100 * s.deviation:+.1f}%)",
    ]
    if s.matched:
        lines.append(f"- widths matched to the MACs target: multiplier {s.width_multiplier:.4f} on top of beta^phi")
    return lines + [f"- {markdown(change.describe())}" for change in s.kv_changes]

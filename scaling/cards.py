"""A markdown card for each member of a scaled family: what it is, where its base came from.

Names and paths are the user's: written through `search_space.text` (a newline or a terminal escape
in a config name or a run directory cannot add a section or break a code span)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from results.cards import stage_table
from search_space.text import markdown, markdown_code, printable

from .compound import format_phi

if TYPE_CHECKING:
    from .family import Member
    from .source import Provenance


def member_card(member: "Member", source: "Provenance | None") -> str:
    s = member.scaled
    c = s.coefficients
    cfg = s.config
    lines = [
        f"# {markdown(cfg.name)}",
        "",
        f"Member **{markdown(member.name)}** of a compound-scaled family: base **{markdown(s.base.name)}** scaled with "
        f"phi={format_phi(s.phi)} (alpha={c.alpha:g}, beta={c.beta:g}, gamma={c.gamma:g}; "
        f"alpha*beta^1.5*gamma^2 = {c.constant:.3f}). Config: {markdown_code(member.file_name)}.",
        "",
        "## Base",
        "",
    ]
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
    lines += [
        f"- base: {s.base_cost.params / 1e6:.2f} M params, {s.base_cost.macs / 1e9:.3f} G MACs at "
        f"{s.base.resolution} px, {s.base.num_classes} classes",
        "",
        "## This model",
        "",
        f"- resolution {cfg.resolution} px, {cfg.num_classes} classes",
        f"- params {s.cost.params / 1e6:.2f} M",
        f"- MACs (\"FLOPs\", multiply-accumulates) {s.cost.macs / 1e9:.3f} G against the target "
        f"{s.target_macs / 1e9:.3f} G ({100 * s.deviation:+.1f}%)",
    ]
    if s.matched:
        lines.append(f"- widths matched to the MACs target: multiplier {s.width_multiplier:.4f} on top of beta^phi")
    lines += [f"- {markdown(change.describe())}" for change in s.kv_changes]
    lines += [
        "",
        stage_table(cfg),
        "",
        "## Use",
        "",
        "```bash",
        printable(f"nas profile {member.file_name}"),  # one line each: the block cannot be closed early
        printable(f"nas train {member.file_name} --data cifar10:PATH"),
        "```",
    ]
    return "\n".join(lines) + "\n"

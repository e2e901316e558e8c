"""A model family (Ti/XS/S/B) from one base: one scaled config per phi, summary table, plot.

Every file is written inside the output directory: member names given by the user must be safe
file names (rejected otherwise), and the base name, which comes from a config file, is sanitised.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from search_space import ArchConfig, Cost, UserError, analytic_cost, resolve_config
from results.run_dir import refuse_run_records
from search_space.files import make_output_dir, write_atomic
from search_space.text import markdown
from search_space.units import format_count, format_macs

from .compound import Coefficients, Scaled, check_phi, expand, format_phi

if TYPE_CHECKING:
    from .source import Provenance

DEFAULT_PHIS: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0)
DEFAULT_NAMES: tuple[str, ...] = ("Ti", "XS", "S", "B")  # CMT's names for phi = -2, -1, 0, 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class ZooReference:
    """A published model placed beside a member (CMT's hand-set Ti/XS/B, say)."""

    name: str
    resolution: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    cost: Cost

    @classmethod
    def of(cls, cfg: ArchConfig) -> "ZooReference":
        return cls(
            cfg.name,
            cfg.resolution,
            tuple(s.depth for s in cfg.stages),
            tuple(s.width for s in cfg.stages),
            analytic_cost(cfg),
        )


@dataclass(frozen=True)
class Member:
    """One model of a family: its name (Ti, XS, ...), the scaled model, and a zoo model beside it."""

    name: str
    scaled: Scaled
    zoo: ZooReference | None = None

    @property
    def file_name(self) -> str:
        return f"{self.scaled.config.name}.yaml"

    @property
    def card_name(self) -> str:
        return f"{self.scaled.config.name}.md"

    def yaml_text(self, source: "Provenance | None" = None) -> str:
        """The member's YAML, headed by where its base came from when that was a search run."""
        head = "\n".join(source.comment_lines()) + "\n" if source is not None else ""
        return head + self.scaled.to_yaml()


# -- parsing ------------------------------------------------------------------------------
def parse_phis(text: str) -> tuple[float, ...]:
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise UserError(f"--phis '{text}': expected comma-separated numbers, e.g. -2,-1,0,1")
    phis = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--phis: '{item}' is not a number") from None
        if not math.isfinite(value):
            raise UserError(f"--phis: phi must be a finite number, got '{item}'")
        if value in phis:
            raise UserError(f"--phis: phi {format_phi(value)} is given twice")
        phis.append(value)
    return tuple(phis)


def parse_names(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in str(text).split(","))
    for name in names:
        check_member_name(name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"--names: '{dup[0]}' is given twice")
    return names


def check_member_name(name: str) -> None:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise UserError(
            f"member name '{name}' is not a safe file name (letters, digits, '_', '-', '+', '.'; "
            "no path separators or '..'; at most 64 characters)"
        )


def default_names(phis: Sequence[float]) -> tuple[str, ...]:
    if tuple(phis) == DEFAULT_PHIS:
        return DEFAULT_NAMES
    return tuple(f"phi{format_phi(p)}" for p in phis)


def safe_stem(name: str) -> str:
    """A config's own name made safe for a file name (configs come from files anyone may write)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "_", name).strip(".")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned[:64] or "model"


# -- building -----------------------------------------------------------------------------
def build_family(
    base: ArchConfig,
    phis: Sequence[float],
    names: Sequence[str] | None = None,
    coeffs: Coefficients | None = None,
    *,
    match_macs: bool = False,
    tolerance: float = 0.03,
    compare: Sequence[str | None] | None = None,
) -> list[Member]:
    """One scaled member per phi (what `scaling family` builds before writing it).

    Args:
        base: the architecture to scale (phi = 0 reproduces it).
        phis: compound coefficients, e.g. ``(-2, -1, 0, 1)``.
        names: one name per phi; default Ti, XS, S, B for the default phis.
        coeffs: alpha, beta, gamma; default CMT's 1.2, 1.3, 1.15.
        match_macs: search each member's width multiplier until its MACs are within
            ``tolerance`` of base MACs x constant^phi.
        tolerance: allowed relative MACs error with ``match_macs``.
        compare: one zoo model name (or YAML, or ``-`` for none) per phi, set beside each member.

    Raises:
        UserError: mismatched names or comparisons, a bad member name, or an absurd phi (checked
            before any member is built).
    """
    coeffs = coeffs or Coefficients()
    names = tuple(names) if names is not None else default_names(phis)
    if len(names) != len(phis):
        raise UserError(f"--names gives {len(names)} names for {len(phis)} phis; give one name per phi")
    if compare is not None and len(compare) != len(phis):
        raise UserError(f"--compare-zoo gives {len(compare)} models for {len(phis)} phis; use '-' to skip one")
    for name in names:
        check_member_name(name)
    # refuse an absurd family before building any member, naming the largest one
    base_macs = analytic_cost(base).macs
    for phi in sorted(phis, reverse=True):
        check_phi(base, base_macs, phi, coeffs)
    stem = safe_stem(base.name)
    references = [None if not ref or ref == "-" else ZooReference.of(resolve_config(ref)) for ref in compare or ()]
    members = []
    for i, (phi, name) in enumerate(zip(phis, names)):
        scaled = expand(base, phi, coeffs, match_macs=match_macs, tolerance=tolerance, name=f"{stem}_{name}")
        members.append(Member(name, scaled, references[i] if references else None))
    return members


# -- writing ------------------------------------------------------------------------------
def write_family(
    members: Sequence[Member], out_dir: str | Path, *, plot: bool = True, source: "Provenance | None" = None
) -> dict[str, Path]:
    """Write every member's YAML and card, summary.md, summary.json and family.png into ``out_dir``.

    ``source``: the search run and trial the base came from, named in every file.
    """
    from .cards import member_card

    refuse_run_records(out_dir, "--out")
    out = make_output_dir(out_dir, "directory", flag="--out")
    root = out.resolve()
    written: dict[str, Path] = {}

    def target(file_name: str) -> Path:
        path = (root / file_name).resolve()
        if path.parent != root:  # belt and braces: names are checked and sanitised already
            raise UserError(f"refusing to write '{file_name}' outside {out}")
        return path

    try:
        for member in members:
            path = target(member.file_name)
            write_atomic(path, member.yaml_text(source), root=root)
            written[member.name] = path
            card = target(member.card_name)
            write_atomic(card, member_card(member, source), root=root)
            written[f"{member.name}.md"] = card
        written["summary.md"] = target("summary.md")
        write_atomic(written["summary.md"], summary_markdown(members, source), root=root)
        written["summary.json"] = target("summary.json")
        write_atomic(written["summary.json"], json.dumps(summary_dict(members, source), indent=2) + "\n", root=root)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror})") from None
    if plot:
        from .plot import plot_family

        written["family.png"] = target("family.png")
        plot_family(members, written["family.png"])
    return written


def summary_dict(members: Sequence[Member], source: "Provenance | None" = None) -> dict:
    first = members[0].scaled
    return {
        "base": first.base.name,
        "source": source.to_dict() if source is not None else None,
        "base_params": first.base_cost.params,
        "base_macs": first.base_cost.macs,
        "coefficients": first.coefficients.as_dict(),
        "match_macs": first.matched,
        "macs_convention": "multiply-accumulates of convolutions, linear layers and attention products",
        "members": [
            {
                "member": m.name,
                "file": m.file_name,
                "card": m.card_name,
                **m.scaled.to_dict(),
                "zoo": None
                if m.zoo is None
                else {
                    "name": m.zoo.name,
                    "resolution": m.zoo.resolution,
                    "depths": list(m.zoo.depths),
                    "widths": list(m.zoo.widths),
                    "params": m.zoo.cost.params,
                    "macs": m.zoo.cost.macs,
                },
            }
            for m in members
        ],
    }


def table_rows(members: Sequence[Member]) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the terminal table and summary.md."""
    header = ["member", "phi", "res", "depths", "widths", "stem", "params", "MACs target", "MACs actual", "dev"]
    matched = any(m.scaled.matched for m in members)
    if matched:
        header.append("width mult")
    with_zoo = any(m.zoo for m in members)
    if with_zoo:
        header += ["zoo model", "zoo res", "zoo depths", "zoo widths", "zoo MACs", "vs zoo"]
    rows = []
    for m in members:
        s = m.scaled
        row = [
            m.name,
            format_phi(s.phi),
            str(s.config.resolution),
            ",".join(str(x.depth) for x in s.config.stages),
            ",".join(str(x.width) for x in s.config.stages),
            str(s.config.stem.channels) if s.config.stem.kind == "conv3" else "-",
            format_count(s.cost.params),
            format_macs(s.target_macs),
            format_macs(s.cost.macs),
            f"{100 * s.deviation:+.1f}%",
        ]
        if matched:
            row.append(f"{s.width_multiplier:.3f}" + ("*" if s.adjusted else ""))
        if with_zoo:
            z = m.zoo
            row += (
                ["-"] * 6
                if z is None
                else [
                    z.name,
                    str(z.resolution),
                    ",".join(map(str, z.depths)),
                    ",".join(map(str, z.widths)),
                    format_macs(z.cost.macs),
                    f"{100 * (s.cost.macs / z.cost.macs - 1):+.1f}%",
                ]
            )
        rows.append(row)
    return header, rows


def notes(members: Sequence[Member]) -> list[str]:
    first = members[0].scaled
    c = first.coefficients
    lines = [
        f"Base {first.base.name}: {format_count(first.base_cost.params)} params, "
        f"{format_macs(first.base_cost.macs)} MACs at {first.base.resolution} px.",
        f"alpha={c.alpha:g}, beta={c.beta:g}, gamma={c.gamma:g}: MACs target = base x {c.constant:.3f}^phi "
        f"(alpha*beta^1.5*gamma^2 = {c.constant:.3f}).",
        "MACs are multiply-accumulates (the papers' \"FLOPs\"); dev = (actual - target) / target.",
    ]
    lines.append(
        f"Stochastic depth: every member keeps the base's drop_path_rate {first.base.drop_path_rate:g} (the official "
        "rates follow no scaling law; see scaling.compound); retune it for a final training."
    )
    if first.matched:
        lines.append("width mult: searched width multiplier on top of beta^phi (* = one stage then moved by a step).")
    for m in members:
        lines += [f"{m.name}: {change.describe()}." for change in m.scaled.kv_changes]
    if any(m.zoo for m in members):
        lines.append("vs zoo: the member's MACs against the zoo model's (hand-set families do not follow the rule).")
    return lines


def summary_markdown(members: Sequence[Member], source: "Provenance | None" = None) -> str:
    header, rows = table_rows(members)
    first = members[0].scaled
    lines = [f"# {markdown(first.base.name)} family (compound scaling)", ""]
    if source is not None:
        lines += [f"- {markdown(source.describe())}"]
    lines += [f"- {markdown(n)}" for n in notes(members)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain aligned columns (pasteable, no terminal codes)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return out

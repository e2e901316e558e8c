"""`scaling`: CMT compound scaling of a base architecture into a model family, with counted MACs.

    scaling expand --config cmt_s --phi 1 [--match-macs] [--out cmt_b_like.yaml] [--json]
    scaling expand --phi 1                      # base: the latest finished run under runs/, its best trial
    scaling family --from runs/a [--trial 7] --match-macs --out family/
    scaling coeffs --config cmt_s [--target 2.5] [--grid alpha=1.1:1.4:0.1,...] [--epochs 1]

User errors (bad numbers, absurd phi, unknown configs, impossible matches) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

from nas.cli import run_guarded
from nas.cli_utils import (DATA_HELP, OneLineErrorParser, add_version, batch_size_arg, fraction_arg, non_negative_int,
                           positive_int, print_json, width_arg)  # fmt: skip
from search_space import UserError, resolve_config
from search_space.blocks import get_block
from results.run_dir import refuse_run_records
from search_space.files import write_atomic
from search_space.text import printable
from train_proxy import proxy_defaults as D

from .coeffs import DEFAULT_GRID, DEFAULT_MAX_CANDIDATES, DEFAULT_TARGET
from .compound import (DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, DEFAULT_TOLERANCE, Coefficients, Scaled, expand,
                       format_phi)  # fmt: skip
from .family import build_family, format_table, notes, parse_names, parse_phis, summary_dict, table_rows
from .source import Base, Provenance, resolve_base

BASE_HELP = """\
The base of expand/family: --config NAME|YAML; or --from RUN_DIR [--trial N], a trial of a
`nas search` run; or, with neither, the most recent finished run under runs/ (as `nas runs` lists
them). Without --trial the trial is the run's best on its Pareto front (by the run's own
objectives): the highest proxy accuracy, ties to fewer MACs, then the lower trial number. The base
is the trial's deploy architecture (full width, the search's resolution and classes), not the
proxy that was trained. Output names the run and trial and the proxy accuracy that made the pick."""

DESCRIPTION = """\
CMT compound scaling: depth x alpha^phi, width x beta^phi, resolution x gamma^phi, so MACs grow by
about (alpha * beta^1.5 * gamma^2)^phi (2.35 with the defaults 1.2, 1.3, 1.15; CMT quotes ~2.5).
Every scaled model is counted: tables show the MACs target beside the actual count, and
--match-macs searches the width multiplier until they agree within --tolerance (3%).
"FLOPs"/MACs here are multiply-accumulates of convolutions, linear layers and attention products.

""" + BASE_HELP

# options whose value may start with '-' (argparse would otherwise take "-2,-1" or "-1e3" for an option)
_NUMERIC_OPTIONS = ("--phi", "--phis", "--alpha", "--beta", "--gamma", "--target")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="scaling", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        base = p.add_mutually_exclusive_group()
        base.add_argument("--config", metavar="NAME_OR_YAML", help="base: zoo name (e.g. cmt_s) or model YAML")
        base.add_argument("--from", dest="from_run", metavar="RUN_DIR",
                          help="base: a trial of this nas search run (default: the latest finished run under runs/)")  # fmt: skip
        p.add_argument("--trial", type=non_negative_int, metavar="N",
                       help="trial of the run to scale (default: the run's best on its Pareto front, i.e. the "
                       "highest proxy accuracy, ties to fewer MACs)")  # fmt: skip
        p.add_argument("--alpha", type=_number("alpha"), default=DEFAULT_ALPHA, help=f"depth coefficient (default {DEFAULT_ALPHA:g})")
        p.add_argument("--beta", type=_number("beta"), default=DEFAULT_BETA, help=f"width coefficient (default {DEFAULT_BETA:g})")
        p.add_argument("--gamma", type=_number("gamma"), default=DEFAULT_GAMMA, help=f"resolution coefficient (default {DEFAULT_GAMMA:g})")
        p.add_argument("--match-macs", action="store_true",
                       help="search the width multiplier so actual MACs land within --tolerance of the target")  # fmt: skip
        p.add_argument("--tolerance", type=_fraction, default=DEFAULT_TOLERANCE,
                       help="allowed |actual - target| / target of the MACs with --match-macs "
                       f"(default {DEFAULT_TOLERANCE:g})")  # fmt: skip

    p = sub.add_parser("expand", help="scale one model by phi", description="Scale one model by phi and count it.\n\n"
                       + BASE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    common(p)
    p.add_argument("--phi", type=_number("phi"), required=True, help="compound coefficient (e.g. -2, -1, 0, 1, 0.5)")
    p.add_argument("--out", metavar="FILE.yaml", help="write the scaled model config here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_expand)

    p = sub.add_parser("family", help="a Ti/XS/S/B family", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="One scaled model per phi (YAML config and markdown card each), summary, plot.\n\n"
                       + BASE_HELP)  # fmt: skip
    common(p)
    p.add_argument("--phis", default="-2,-1,0,1", help="comma-separated phis (default -2,-1,0,1)")
    p.add_argument("--names", help="comma-separated member names (default Ti,XS,S,B for the default phis)")
    p.add_argument("--compare-zoo", metavar="MODELS",
                   help="comma-separated zoo models (or YAMLs) to set beside each member, '-' to skip one, "
                   "e.g. cmt_ti,cmt_xs,cmt_s,cmt_b")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run_family)

    p = sub.add_parser(
        "coeffs",
        help="grid-search alpha, beta, gamma by proxy training",
        description="EfficientNet-style search: grid points whose alpha*beta^1.5*gamma^2 is within --tolerance of "
        "--target; each one's phi=1 model is proxy-trained and ranked by validation accuracy.",
    )
    p.add_argument("--config", required=True, metavar="NAME_OR_YAML", help="base model: zoo name or model YAML")
    p.add_argument("--target", type=_number("target"), default=DEFAULT_TARGET,
                   help=f"target constant (default {DEFAULT_TARGET:g})")  # fmt: skip
    p.add_argument("--grid", help=f"e.g. {DEFAULT_GRID} (the default)")
    p.add_argument("--tolerance", type=_fraction, default=DEFAULT_TOLERANCE,
                   help="allowed |constant - target| / target, i.e. of the phi=1 MACs growth against the target's "
                   f"(default {DEFAULT_TOLERANCE:g}, as --match-macs)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=D.EPOCHS,
                   help=f"proxy epochs per candidate (default {D.EPOCHS})")  # fmt: skip
    p.add_argument("--proxy-resolution", type=_proxy_resolution, default=D.COEFFS_RESOLUTION,
                   help="proxy resolution of the base model; candidates scale it by their gain (default "
                   f"{D.COEFFS_RESOLUTION}: at {D.RESOLUTION} px no gamma of the default grid would show)")  # fmt: skip
    p.add_argument("--proxy-width", type=width_arg, default=D.WIDTH,
                   help=f"width multiplier of the proxy models (default {D.WIDTH:g})")  # fmt: skip
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--data-fraction", type=fraction_arg, default=D.DATA_FRACTION,
                   help=f"share of the training data (default {D.DATA_FRACTION:g})")  # fmt: skip
    p.add_argument("--batch-size", type=batch_size_arg, default=D.BATCH_SIZE,
                   help=f"proxy batch size (default {D.BATCH_SIZE})")  # fmt: skip
    p.add_argument("--max-candidates", type=positive_int, default=DEFAULT_MAX_CANDIDATES,
                   help=f"train at most this many candidates, closest constants first (default {DEFAULT_MAX_CANDIDATES})")  # fmt: skip
    p.add_argument("--match-macs", action=argparse.BooleanOptionalAction, default=True,
                   help=f"match each phi=1 model's widths to its MACs target (within {100 * DEFAULT_TOLERANCE:g}%%) "
                   "before training, so candidates are compared at the compute their constant promises (default: on)")  # fmt: skip
    p.add_argument("--seed", type=int, default=D.SEED, help=f"proxy training seed (default {D.SEED})")
    p.add_argument("--threads", type=positive_int, help="CPU threads for proxy training (default: the trainer's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_coeffs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_numeric_values(list(sys.argv[1:] if argv is None else argv)))
    return run_guarded(lambda: args.func(args))


def main_entry() -> None:
    sys.exit(main())


# -- commands -----------------------------------------------------------------------------
def _base(args: argparse.Namespace) -> Base:
    base = resolve_base(args.config, args.from_run, args.trial)
    if args.json and base.source is not None and base.source.latest_run:
        print(printable(base.source.describe()), file=sys.stderr)  # stdout is the JSON: say the implicit pick here
    return base


def run_expand(args: argparse.Namespace) -> int:
    base = _base(args)
    scaled = expand(base.config, args.phi, _coefficients(args), match_macs=args.match_macs, tolerance=args.tolerance)
    if args.out:
        _write_yaml(Path(args.out), scaled, base.source)
    if args.json:
        out = scaled.to_dict()
        out["config"] = scaled.config.to_dict()
        out["source"] = base.source.to_dict() if base.source is not None else None
        out["out"] = args.out
        print_json(out)
        return 0
    if base.source is not None:
        print(printable(base.source.describe()))
    print("\n".join(printable(line) for line in format_expand(scaled).splitlines()))
    if args.out:
        print(f"wrote {printable(args.out)}")
    return 0


def run_family(args: argparse.Namespace) -> int:
    from .family import write_family

    phis = parse_phis(args.phis)
    names = parse_names(args.names) if args.names is not None else None
    compare = [t.strip() for t in args.compare_zoo.split(",")] if args.compare_zoo else None
    base = _base(args)
    members = build_family(
        base.config, phis, names, _coefficients(args), match_macs=args.match_macs, tolerance=args.tolerance,
        compare=compare,
    )  # fmt: skip
    written = write_family(members, args.out, source=base.source)
    if args.json:
        summary = summary_dict(members, base.source)
        summary["files"] = {key: str(path) for key, path in written.items()}
        print_json(summary)
        return 0
    header, rows = table_rows(members)
    if base.source is not None:
        print(printable(base.source.describe()))
    print("\n".join(printable(line) for line in notes(members)))
    print()
    print("\n".join(printable(line) for line in format_table(header, rows)))
    print()
    print(f"wrote {len(members)} configs, {len(members)} cards, summary.md, summary.json and family.png to "
          f"{printable(args.out)}")  # fmt: skip
    return 0


def run_coeffs(args: argparse.Namespace) -> int:
    from .coeffs import format_report, parse_grid, search_coefficients

    base = resolve_config(args.config)
    grid = parse_grid(args.grid)

    def progress(result) -> None:  # type: ignore[no-untyped-def]
        c = result.coefficients
        acc = f"{100 * result.val_acc:.1f}%" if math.isfinite(result.val_acc) else result.status
        print(f"  trained alpha={c.alpha:g} beta={c.beta:g} gamma={c.gamma:g} at {result.proxy_resolution} px: "
              f"{acc} in {result.train_seconds:.0f} s", file=sys.stderr, flush=True)  # fmt: skip

    from train_proxy.data import resolve_data_arg

    data, notice = resolve_data_arg(args.data)
    report = search_coefficients(
        base,
        target=args.target,
        grid=grid,
        tolerance=args.tolerance,
        epochs=args.epochs,
        proxy_resolution=args.proxy_resolution,
        proxy_width=args.proxy_width,
        data=data,
        data_fraction=args.data_fraction,
        batch_size=args.batch_size,
        max_candidates=args.max_candidates,
        seed=args.seed,
        threads=args.threads,
        match_macs=args.match_macs,
        on_result=progress,
        on_start=(lambda: print(notice, file=sys.stderr, flush=True)) if notice else None,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    return 0 if report.best is not None else 1


# -- output -------------------------------------------------------------------------------
def format_expand(s: Scaled) -> str:
    c = s.coefficients
    base, cfg = s.base, s.config

    def listing(cfg_, attr: str) -> str:
        return ",".join(str(getattr(st, attr)) for st in cfg_.stages)

    def stem(cfg_) -> str:  # type: ignore[no-untyped-def]
        return str(cfg_.stem.channels) if cfg_.stem.kind == "conv3" else "-"

    rows = [
        ["resolution", str(base.resolution), str(cfg.resolution)],
        ["depths", listing(base, "depth"), listing(cfg, "depth")],
        ["widths", listing(base, "width"), listing(cfg, "width")],
        ["heads", listing(base, "heads"), listing(cfg, "heads")],
    ]
    if any("kv_reduction" in get_block(st.block).knobs for st in cfg.stages):
        rows.append(["K/V reduction", listing(base, "kv_reduction"), listing(cfg, "kv_reduction")])
    rows += [
        ["stem channels", stem(base), stem(cfg)],
        ["params", f"{s.base_cost.params / 1e6:.2f} M", f"{s.cost.params / 1e6:.2f} M"],
        ["MACs target", "", f"{s.target_macs / 1e9:.3f} G  (base x {c.constant:.3f}^{format_phi(s.phi)})"],
        ["MACs actual", f"{s.base_cost.macs / 1e9:.3f} G", f"{s.cost.macs / 1e9:.3f} G"],
        ["deviation", "", f"{100 * s.deviation:+.1f}%"],
    ]
    if s.matched:
        how = f"{s.width_multiplier:.4f} on top of beta^phi = {c.beta**s.phi:.4f}"
        if s.adjusted:
            how += f"; then {', '.join(s.adjusted)} moved by one rounding step"
        rows.append(["width mult", "", how])
    lines = [
        f"{base.name} -> {cfg.name}: phi={format_phi(s.phi)}, alpha={c.alpha:g}, beta={c.beta:g}, gamma={c.gamma:g}",
        f"constant alpha*beta^1.5*gamma^2 = {c.constant:.3f} (MACs target = base MACs x {c.constant:.3f}^phi)",
        "MACs are multiply-accumulates (the papers' \"FLOPs\")",
        "",
        *format_table(["", "base", "scaled"], rows),
    ]
    lines += [f"note: {change.describe()}" for change in s.kv_changes]
    return "\n".join(lines)


def _write_yaml(path: Path, scaled: Scaled, source: Provenance | None = None) -> None:
    refuse_run_records(path, "--out")  # never over a run's run.json, trials or cards
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory, expected a YAML file path")
    if not path.parent.exists():
        raise UserError(f"--out {path}: directory {path.parent} does not exist")
    head = "\n".join(source.comment_lines()) + "\n" if source is not None else ""
    write_atomic(path, head + scaled.to_yaml())


# -- argument types -----------------------------------------------------------------------
def _coefficients(args: argparse.Namespace) -> Coefficients:
    return Coefficients(args.alpha, args.beta, args.gamma)


def _number(what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} '{text}' is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got '{text}'")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _fraction(text: str) -> float:
    value = _number("tolerance")(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"tolerance must be in (0, 1), got {text}")
    return value


def _proxy_resolution(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"proxy resolution {value} is not a positive multiple of 32")
    return value


def _join_numeric_values(argv: list[str]) -> list[str]:
    """'--phis -2,-1,0,1' -> '--phis=-2,-1,0,1', so a value starting with '-' is not read as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _NUMERIC_OPTIONS and i + 1 < len(argv):
            nxt = argv[i + 1]
            if nxt.startswith("-") and not nxt.startswith("--") and len(nxt) > 1:
                out.append(f"{token}={nxt}")
                i += 2
                continue
        out.append(token)
        i += 1
    return out


if __name__ == "__main__":
    main_entry()

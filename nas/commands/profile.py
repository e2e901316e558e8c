"""`nas profile`: parameters and MACs ("FLOPs") of a zoo model or a model config YAML."""

from __future__ import annotations

import argparse

from search_space.text import printable
from search_space import analytic_report, resolve_config, traced_cost

from ..cli_utils import print_json, resolution_arg
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="params and MACs of a model",
        description="Params and MACs of a zoo model or model config. FLOPs here means multiply-accumulates "
        "(MACs), as in the VAN/CMT papers: convolutions, linear layers and attention products.",
    )
    p.add_argument("model", metavar="NAME_OR_YAML", help="zoo name (e.g. cmt_s) or path to a model config YAML")
    p.add_argument("--resolution", type=resolution_arg, help="input side (default: the config's own)")
    p.add_argument("--traced", action="store_true", help="also count by tracing the model (meta device)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.model)
    report = analytic_report(cfg, args.resolution)
    out = {
        "name": cfg.name,
        "params": report.total.params,
        "macs": report.total.macs,
        "resolution": report.resolution,
        "parts": {name: {"params": c.params, "macs": c.macs} for name, c in report.parts},
    }
    if args.traced:
        traced = traced_cost(cfg, args.resolution)
        out["macs_traced"] = traced.macs
        out["params_traced"] = traced.params
    if args.json:
        print_json(out)
        return 0
    print(f"{printable(cfg.name)} at {report.resolution}x{report.resolution}  (FLOPs = multiply-accumulates)")
    print(f"{'part':<8} {'params':>12} {'MACs':>12}")
    for name, c in report.parts:
        print(f"{name:<8} {format_count(c.params):>12} {format_macs(c.macs):>12}")
    print(f"{'total':<8} {format_count(report.total.params):>12} {format_macs(report.total.macs):>12}")
    if args.traced:
        print(f"traced   {format_count(out['params_traced']):>12} {format_macs(out['macs_traced']):>12}")
    return 0

"""`nas export RUN_DIR`: chosen architectures as YAML configs, model cards, ONNX and TorchScript."""

from __future__ import annotations

import argparse
import sys

from pathlib import Path

from results.export import FORMATS, ONNX_OPSET, TOLERANCE, export_run, export_trained
from search_space.text import printable
from search_space.errors import UserError

from ..cli_utils import non_negative_int, positive_int, print_json
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export architectures of a run (YAML, model card, ONNX, TorchScript)",
        description="Export architectures of a search run: for each, a YAML model config, a markdown model card "
        "(per-stage summary, params and MACs at the deploy resolution, latency, proxy accuracy, search settings, "
        f"how to rebuild) and optionally ONNX (opset {ONNX_OPSET}, checked with onnxruntime when installed) and "
        "TorchScript files. Default: the run's Pareto front (accuracy, MACs, and latency when the run optimised "
        "it). --top K ranks complete feasible trials "
        "by proxy accuracy, ties going to fewer MACs, then the lower trial number. The ONNX/TorchScript graphs "
        "carry freshly initialised weights, unless the source is a directory written by nas train --save (its "
        "network with its trained weights, safetensors included) or --weights names one for a --trial.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run directory written by nas search, or a training directory written by nas train --save")  # fmt: skip
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=non_negative_int, action="append", metavar="N",
                      help="trial number to export (repeatable)")  # fmt: skip
    pick.add_argument("--top", type=positive_int, metavar="K", help="the K most accurate complete feasible trials")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--format", default="yaml", metavar="LIST",
                   help=f"comma-separated, from {','.join(FORMATS)} (default yaml; a card always comes)")  # fmt: skip
    p.add_argument("--weights", metavar="DIR",
                   help="with one --trial N: export the network trained in DIR (nas train --save) with its weights; "
                        "DIR must have trained trial N's architecture")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = Path(args.run_dir)
    from results.run import is_run_dir
    from train_proxy.checkpoint import SETTINGS

    if (source / SETTINGS).exists() and not is_run_dir(source):
        if args.trial or args.top or args.weights:
            raise UserError(f"{source}: a training directory exports its one network; --trial, --top and --weights "
                            "are for run directories")  # fmt: skip
        exported = [export_trained(source, args.out, args.format)]
    elif args.weights:
        from results.run import load_run

        if not args.trial or len(args.trial) != 1:
            raise UserError("--weights DIR needs exactly one --trial N (the trial whose architecture DIR trained)")
        run = load_run(source)
        trial = run.trial(args.trial[0])
        if trial.config is None:
            raise UserError(f"trial {trial.number}: no architecture config was recorded for it")
        exported = [export_trained(args.weights, args.out, args.format, run=run, trial=trial)]
    else:
        exported = export_run(args.run_dir, args.out, trials=args.trial, top=args.top, formats=args.format)
    if args.json:
        print_json([
            {"trial": e.trial, "name": e.stem, "config": str(e.config_path), "card": str(e.card_path),
             "params": e.params, "macs": e.macs,
             "files": {a.kind: str(a.path) for a in e.artifacts},
             "onnx_max_abs_diff": e.onnx_max_abs_diff, "torchscript_max_abs_diff": e.torchscript_max_abs_diff}
            for e in exported
        ])  # fmt: skip
    else:
        for e in exported:
            print(f"{f'trial {e.trial}' if e.trial >= 0 else printable(e.stem)}: {printable(e.config_path)}  ({format_count(e.params)} params, {format_macs(e.macs)} MACs)")
            print(f"  card: {printable(e.card_path)}")
            for a in e.artifacts:
                if a.kind == "safetensors":
                    print(f"  weights: {printable(a.path)}")
                if a.kind in ("onnx", "torchscript"):
                    print(f"  {a.kind}: {printable(a.path)}  {a.details.get('check', '')}")
    failed = [e.trial for e in exported if not e.checks_passed]
    if failed:
        print(f"error: the exported graph does not match PyTorch (tolerance {TOLERANCE:g}) for trial(s) "
              f"{', '.join(map(str, failed))}", file=sys.stderr)  # fmt: skip
        return 1
    return 0

"""`nas`: profile, sample, train, measure and search hybrid vision backbones.

Every subcommand lives in its own module under ``nas/commands`` and registers itself here.
User errors (bad input, missing files, infeasible constraints) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from search_space.errors import UserError

from .cli_utils import OneLineErrorParser

# Order shown in --help. A command whose module is absent is simply not offered.
COMMANDS = (
    "search", "status", "profile", "sample", "train", "latency", "score", "fidelity",
    "report", "export", "compare", "runs", "finalize",
)  # fmt: skip

DESCRIPTION = """\
Neural architecture search and profiling for hybrid vision backbones (VAN, CMT, ACmix blocks).

"FLOPs" means multiply-accumulates (MACs), as the VAN and CMT papers report them (CMT-S: 4.0 G):
MACs of convolutions, linear layers and attention products. Budgets accept 4GFLOPs, 600MFLOPs,
4G, 4e9."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="nas", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nas.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"nas.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(lambda: args.func(args))


def run_guarded(fn) -> int:  # type: ignore[no-untyped-def]
    """Run a command; user errors become one line on stderr and exit status 2."""
    try:
        code = fn()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()

"""`nas`: profile, sample, train, measure and search hybrid vision backbones.

Every subcommand lives in its own module under ``nas/commands`` and registers itself here.
User errors (bad input, missing files, infeasible constraints) print one line and exit 2.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while the command still imports torch and Ray: nothing is open or written
    yet, so leave at once, quietly (a KeyboardInterrupt there would print an import traceback)."""
    os.write(2, b"interrupted\n")
    os._exit(128 + signum)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM once a command runs, outside the handling of its own (`nas search` and `nas train`
    install theirs where they hold runs open): leave at once as the default action would, but with
    one line and the conventional 143 rather than a silent death by signal."""
    os.write(2, b"terminated\n")
    os._exit(128 + signum)


def _as_program() -> bool:
    """Run as a program: `nas`, `scaling`, `python -m nas` or `python -m scaling` (whose argv[0] is
    the package's __main__.py while it imports this module), `python -m nas.cli`."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    return name in ("nas", "scaling") or (
        name == "__main__.py" and os.path.basename(os.path.dirname(os.path.abspath(path))) in ("nas", "scaling")
    )


# Only as a program, never when imported by other code.
if __name__ == "__main__" or _as_program():
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)

import argparse  # noqa: E402
import importlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

from search_space.errors import UserError  # noqa: E402
from search_space.files import free_space_note, is_disk_full  # noqa: E402
from search_space.text import printable  # noqa: E402

from .cli_utils import OneLineErrorParser, add_version  # noqa: E402

# Order shown in --help. A command whose module is absent is simply not offered.
COMMANDS = (
    "search", "status", "profile", "sample", "train", "latency", "score", "fidelity",
    "report", "export", "compare", "runs", "finalize", "latency_table", "dashboard",
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
    add_version(parser)
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
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:  # started: the usual handling
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminated)
    try:
        code = fn()
    except UserError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:  # a network within every size bound can still be too big to build here
        print("error: out of memory (the network or data is too big for this machine's memory)", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = Path(exc.filename).parent if exc.filename else Path.cwd()
        print(printable(f"error: {exc.strerror} writing {exc.filename or 'a file'}{free_space_note(exc, where)}; "
                        "free some space and run the command again (a search continues with --resume)"),
              file=sys.stderr)  # fmt: skip
        return 2
    return int(code or 0)


MAX_ERROR_CHARS = 600


def one_line(message: str) -> str:
    """An error as one bounded line, whatever a value quoted inside it held: line breaks become
    spaces, other control characters (a path's terminal escapes) are escaped (`printable`)."""
    text = printable(" ".join(message.split()))
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()

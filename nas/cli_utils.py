"""Argument parsing helpers shared by the `nas` and `scaling` command lines.

One vocabulary (docs/vocabulary.md): a concept has one flag and one default on every command.
A renamed flag keeps working under its old spelling, hidden from --help, with a one-line notice
on stderr naming the new flag (`old_spellings`); `nas train --resume DIR` (a flag that used to
take a value) is `old_value_form`. Both CLIs build their parsers from `OneLineErrorParser`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any, NoReturn, Sequence

from search_space.config import MAX_RESOLUTION  # one bound for configs, spaces and every --resolution
from search_space.text import printable
from train_proxy import proxy_defaults

PACKAGE = "hybrid-nas"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not a usage dump; old
    spellings of a flag's value form (`old_value_form`) are rewritten before parsing."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {printable(message)}", file=sys.stderr)  # argparse echoes the user's text
        sys.exit(2)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # type: ignore[no-untyped-def, override]
        forms = getattr(self, "old_value_forms", None)
        if forms:
            args = _rewrite_value_forms(list(sys.argv[1:] if args is None else args), forms)
        return super().parse_known_args(args, namespace)


# -- renamed flags ------------------------------------------------------------------------


def notice(old: str, new: str) -> None:
    """The one line an old spelling prints (stderr: stdout may be JSON)."""
    print(printable(f"note: {old} is now {new}"), file=sys.stderr)


class _OldSpelling(argparse.Action):
    """A hidden alias: says it is an old spelling, then does what the new flag does."""

    def __init__(self, option_strings: list[str], dest: str, *, target: argparse.Action, new: str, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.target, self.new = target, new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        notice(option_string or self.option_strings[0], self.new)
        self.target(parser, namespace, values, self.new)


def old_spellings(parser: argparse.ArgumentParser, renames: Mapping[str, str]) -> None:
    """Let each old flag of ``renames`` (old -> new, the new one already added) keep working:
    hidden from --help, the same value and type as the new flag, one notice line on stderr.
    ``parser.old_spellings`` lists them (tests/test_vocabulary.py reads it)."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    for old, new in renames.items():
        target = actions[new]
        parser.add_argument(
            old, action=_OldSpelling, target=target, new=new, dest=target.dest, nargs=target.nargs,
            const=target.const, type=target.type, choices=target.choices, metavar=target.metavar,
            default=target.default, help=argparse.SUPPRESS,  # the same default: get_default() finds either
        )  # fmt: skip
    registry = dict(getattr(parser, "old_spellings", {}))
    registry.update(renames)
    parser.old_spellings = registry  # type: ignore[attr-defined]


def old_value_form(parser: argparse.ArgumentParser, flag: str, into: str) -> None:
    """``flag VALUE`` (an old form: ``flag`` took a value, now it is a switch) is read as
    ``into VALUE flag``, with a notice: `nas train --resume DIR` is `nas train --save DIR --resume`.
    Given ``into`` already, a word after ``flag`` is not its value (it is left to the parser)."""
    forms = dict(getattr(parser, "old_value_forms", {}))
    forms[flag] = into
    parser.old_value_forms = forms  # type: ignore[attr-defined]


def _rewrite_value_forms(args: list[str], forms: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":  # everything after it is positional
            return out + args[i:]
        flag, eq, value = token.partition("=")
        if flag in forms and not any(a == forms[flag] or a.startswith(forms[flag] + "=") for a in args):
            if eq or (i + 1 < len(args) and not args[i + 1].startswith("-")):
                if not eq:
                    value = args[i + 1]
                    i += 1
                into = forms[flag]
                print(printable(f"note: {flag} {value} is now {into} {value} {flag}"), file=sys.stderr)
                out += [into, value, flag]
                i += 1
                continue
        out.append(token)
        i += 1
    return out


# -- --version ----------------------------------------------------------------------------


def package_version() -> str:
    """The installed package's version (its metadata), as `pip show hybrid-nas` gives it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"{parser.prog} {package_version()}",
                        help="print the program's name and version, then exit")  # fmt: skip


# -- argument types -----------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def resolution_arg(text: str) -> int:
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"resolution {value} is not a multiple of 32")
    if value > MAX_RESOLUTION:  # a batch of 64 at 4096 px is already 12 GiB of input alone
        raise argparse.ArgumentTypeError(f"resolution {value} is above {MAX_RESOLUTION}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def fraction_arg(text: str) -> float:
    """--data-fraction: a share of the training split, in (0, 1] (`proxy_defaults.fraction_problem`)."""
    value = _float(text)
    why = proxy_defaults.fraction_problem(value)
    if why:
        raise argparse.ArgumentTypeError(f"{why}, got {text}")
    return value


def width_arg(text: str) -> float:
    """--proxy-width: a width multiplier in (0, MAX_WIDTH] (`proxy_defaults.width_problem`)."""
    value = _float(text)
    why = proxy_defaults.width_problem(value)
    if why:
        raise argparse.ArgumentTypeError(f"{why}, got {text}")
    return value


def batch_size_arg(text: str) -> int:
    """--batch-size of a training: at least MIN_BATCH_SIZE (`proxy_defaults.batch_size_problem`)."""
    value = positive_int(text)
    why = proxy_defaults.batch_size_problem(value)
    if why:
        raise argparse.ArgumentTypeError(why)
    return value


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


# --data of the commands that train (nas train/search/fidelity, scaling coeffs); the default is
# resolved by train_proxy.data.default_data_spec when the data is needed.
DATA_HELP = (
    "fashion-mnist (the default where installed), fashion-mnist:DIR, mnist:DIR, digits (the default "
    "elsewhere), cifar10:PATH or imagefolder:PATH"
)

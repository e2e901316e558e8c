"""Argument parsing helpers shared by the `nas` and `scaling` command lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from search_space.config import MAX_RESOLUTION  # one bound for configs, spaces and every --resolution
from search_space.text import printable


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {printable(message)}", file=sys.stderr)  # argparse echoes the user's text
        sys.exit(2)


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


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


# --data of the commands that train (nas train/search/fidelity, scaling coeffs); the default is
# resolved by train_proxy.data.default_data_spec when the data is needed.
DATA_HELP = (
    "fashion-mnist (the default where installed), fashion-mnist:DIR, mnist:DIR, digits (the default "
    "elsewhere), cifar10:PATH or imagefolder:PATH"
)

"""Parsing user quantities: MAC budgets ("FLOPs" in the papers' sense) and counts."""

from __future__ import annotations

import math
import re

from search_space.errors import UserError

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
MAX_QUANTITY = 1e18  # MACs or parameters: CMT-B has 9.3e9 MACs, 4.6e7 params
_MACS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?)\s*(FLOPs|MACs)?\s*$", re.IGNORECASE)
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?)\s*$", re.IGNORECASE)


def _parse(text: str, pattern: re.Pattern[str], what: str, example: str) -> int:
    match = pattern.match(str(text))
    if not match:
        raise UserError(f"malformed {what} '{text}' (expected e.g. {example})")
    value = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(value):  # 1e400 overflows to inf ("nan"/"inf" do not match the pattern)
        raise UserError(f"{what} '{text}' is not a finite number")
    if value <= 0:
        raise UserError(f"{what} '{text}' must be positive")
    if value > MAX_QUANTITY:
        raise UserError(f"{what} '{text}' is absurdly large (at most {MAX_QUANTITY:.0e})")
    if round(value) < 1:
        raise UserError(f"{what} '{text}' is less than 1")
    return int(round(value))


def parse_macs(text: str) -> int:
    """'4GFLOPs', '4G', '600MFLOPs', '4e9', '4000000000' -> multiply-accumulates.

    "FLOPs" follows the VAN/CMT papers: it means multiply-accumulates (MACs).
    """
    return _parse(text, _MACS, "MAC budget", "4GFLOPs, 600MFLOPs, 4e9")


def parse_count(text: str) -> int:
    """'30M', '2.5M', '3e7' -> a parameter count."""
    return _parse(text, _COUNT, "parameter count", "30M, 2.5M, 3e7")


def format_macs(macs: float) -> str:
    return f"{macs / 1e9:.3f} G" if macs >= 1e8 else f"{macs / 1e6:.1f} M"


def format_count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"

"""User quantities: parsing MAC budgets and counts, and the one way every output prints a count,
a MAC figure or a time.

Parsing: ``4GFLOPs``, ``4G``, ``600MFLOPs``, ``4e9``, ``4000000000`` are MAC budgets ("FLOPs" in
the VAN/CMT papers' sense: multiply-accumulates); ``30M``, ``2.5M``, ``3e7`` parameter counts.

Printing (`format_count`, `format_macs`, `format_ms`, `format_seconds`): **three significant
digits**, trailing zeros kept so the precision shows, never in exponent form:

* counts and MACs take the largest prefix (K, M, G, T) they reach a tenth of: ``512,000`` is
  ``0.512 M``, ``4,061,234,567`` is ``4.06 G``, ``99,960,000`` is ``100 M`` and ``100,000,000`` is
  ``0.100 G``; below 100 the plain number (``64``);
* times are in ms below one second and in s from there: ``12.34`` ms is ``12.3 ms``, ``0.5123`` ms
  ``0.512 ms``, ``1234.5`` ms ``1.23 s``;
* from 1000 up (past the last prefix) the whole number is printed (``1234 s``);
* ``None`` prints as ``-`` (a figure the run did not record).

`nas profile`, `nas status`, model cards, the HTML report and the scaling tables all print through
these, so the same number reads the same everywhere.
"""

from __future__ import annotations

import math
import re

from .errors import UserError

__all__ = [
    "MAX_QUANTITY",
    "SIGNIFICANT_DIGITS",
    "format_count",
    "format_macs",
    "format_ms",
    "format_seconds",
    "parse_count",
    "parse_macs",
    "significant",
]

# -- parsing ------------------------------------------------------------------------------------

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


# -- printing -----------------------------------------------------------------------------------

SIGNIFICANT_DIGITS = 3
_PREFIXES = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3))
_PREFIX_FROM = 0.1  # a prefix is used from a tenth of it up: 0.512 M, 99.9 M, then 0.100 G
_MISSING = "-"


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """``value`` to ``digits`` significant digits in fixed-point notation, trailing zeros kept
    (``4.00``, ``0.100``, ``12.3``); from ``10**digits`` up the whole number (``1234``)."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    exponent = int(f"{value:.{digits - 1}e}".split("e")[1])  # the decimal exponent after rounding (9.996 -> 10.0)
    return f"{value:.{max(digits - 1 - exponent, 0)}f}"


def _with_prefix(value: float) -> str:
    for prefix, factor in _PREFIXES:
        if abs(value) >= _PREFIX_FROM * factor:
            return f"{significant(value / factor)} {prefix}"
    return str(int(value)) if float(value).is_integer() else significant(value)  # 64 parameters, not 64.0


def format_count(n: float | None) -> str:
    """A parameter (or any) count: ``4.11 M``, ``0.512 M``, ``12.3 K``; ``-`` for None."""
    return _MISSING if n is None else _with_prefix(n)


def format_macs(macs: float | None) -> str:
    """Multiply-accumulates (the papers' "FLOPs"): ``4.03 G``, ``0.864 G``, ``51.2 M``; ``-`` for None."""
    return _MISSING if macs is None else _with_prefix(macs)


def format_ms(ms: float | None) -> str:
    """A time given in milliseconds: ``12.3 ms``, ``0.512 ms``, ``1.23 s``; ``-`` for None."""
    if ms is None:
        return _MISSING
    if math.isfinite(ms) and abs(float(significant(ms))) >= 1000:
        return f"{significant(ms / 1000)} s"
    return f"{significant(ms)} ms"


def format_seconds(seconds: float | None) -> str:
    """A time given in seconds: ``4.50 s``, ``250 ms``, ``3600 s``; ``-`` for None."""
    return _MISSING if seconds is None else format_ms(seconds * 1000)

"""MAC budgets ("FLOPs" = multiply-accumulates) and parameter counts as `nas search` parses them."""

from __future__ import annotations

import pytest

from nas.search.settings import parse_latency, parse_objectives
from search_space.units import parse_count, parse_macs
from search_space.errors import UserError


@pytest.mark.parametrize(
    "text, macs",
    [
        ("4GFLOPs", 4_000_000_000),
        ("4G", 4_000_000_000),
        ("4g", 4_000_000_000),
        ("600MFLOPs", 600_000_000),
        ("600M", 600_000_000),
        ("4e9", 4_000_000_000),
        ("4000000000", 4_000_000_000),
        ("0.6GFLOPs", 600_000_000),
        ("4.5G", 4_500_000_000),
        ("900MMACs", 900_000_000),
        (" 4G ", 4_000_000_000),
        ("1.2e3M", 1_200_000_000),
    ],
)
def test_budget_forms(text: str, macs: int) -> None:
    assert parse_macs(text) == macs


@pytest.mark.parametrize(
    "text, count",
    [("30M", 30_000_000), ("2.5M", 2_500_000), ("3e7", 30_000_000), ("500K", 500_000), ("1000000", 1_000_000)],
)
def test_param_counts(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize(
    "text", ["4GFLOP", "-1G", "abc", "0", "", "   ", "4 G FLOPs x", "G", "4GG", "nan", "inf", "1e30", "0G", "4GB"]
)
def test_malformed_budgets(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_macs(text)
    message = str(err.value)
    assert "\n" not in message and "budget" in message


@pytest.mark.parametrize("text", ["30", "30MFLOPs", "-3M", "0", "", "M30"])
def test_malformed_param_counts(text: str) -> None:
    if text == "30":  # a bare number is a valid count
        assert parse_count(text) == 30
        return
    with pytest.raises(UserError):
        parse_count(text)


@pytest.mark.parametrize("text, parsed", [("acc", ("acc",)), ("acc,macs", ("acc", "macs")),
                                          ("acc, latency", ("acc", "latency")), ("acc,macs,latency", ("acc", "macs", "latency"))])  # fmt: skip
def test_objectives(text: str, parsed: tuple[str, ...]) -> None:
    assert parse_objectives(text) == parsed


@pytest.mark.parametrize("text", ["", "macs", "acc,acc", "acc,flops", "acc,", "macs,acc"])
def test_bad_objectives(text: str) -> None:
    with pytest.raises(UserError):
        parse_objectives(text)


@pytest.mark.parametrize("text, ms", [("15", 15.0), ("2.5", 2.5), ("15ms", 15.0)])
def test_latency(text: str, ms: float) -> None:
    assert parse_latency(text) == ms


@pytest.mark.parametrize("text", ["0", "-1", "fast", "nan", "inf", ""])
def test_bad_latency(text: str) -> None:
    with pytest.raises(UserError):
        parse_latency(text)

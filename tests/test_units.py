"""The one formatter of counts, MACs and times (search_space/units.py): three significant digits.

Every value below is worked by hand: the prefix is the largest one the value reaches a tenth of,
the mantissa is rounded to three significant digits with its trailing zeros kept. Then `nas
profile` and a model card print the same parts of the same network with the same strings.
"""

from __future__ import annotations

import re

import pytest

import search_space.units as units
from nas.cli import main
from results.cards import stage_table
from search_space import analytic_report, load_zoo
from search_space.units import format_count, format_macs, format_ms, format_seconds, significant

MACS = [
    (4_032_000_000, "4.03 G"),  # CMT-S: 4.032 G -> three digits
    (863_953_024, "0.864 G"),  # VAN-B0: from 0.1 G up the G prefix, 0.8639... -> 0.864
    (4_061_234_567, "4.06 G"),
    (100_000_000, "0.100 G"),  # a tenth of a G: G, trailing zeros kept
    (99_960_000, "100 M"),  # 99.96 M rounds up to 100 M (still below 0.1 G)
    (512_000, "0.512 M"),
    (51_234_567, "51.2 M"),
    (9_996_000, "10.0 M"),  # the carry moves the decimal point: 9.996 -> 10.0
    (12_340, "12.3 K"),
    (999, "0.999 K"),
    (100, "0.100 K"),
    (64, "64"),  # below a tenth of a K: the plain number
    (0, "0"),
    (1_234_000_000_000, "1.23 T"),
]
COUNTS = [
    (4_110_000, "4.11 M"),  # VAN-B0's 4.11 M params
    (26_261_000, "26.3 M"),  # CMT-S's 26.26 M -> 26.3 M
    (7_612_264, "7.61 M"),  # ACmix-T
    (150_000, "0.150 M"),
    (99_999, "100 K"),
    (8_753, "8.75 K"),  # GC at C=256
    (156, "0.156 K"),
    (12, "12"),
]
TIMES_MS = [
    (12.34, "12.3 ms"),
    (0.5123, "0.512 ms"),
    (3.0, "3.00 ms"),
    (123.4, "123 ms"),
    (999.4, "999 ms"),
    (999.6, "1.00 s"),  # rounds to 1000 ms: printed in seconds
    (1234.5, "1.23 s"),
    (3_600_000.0, "3600 s"),  # past three digits the whole number, never 3.6e+03
]


@pytest.mark.parametrize("value, text", MACS)
def test_macs(value: int, text: str) -> None:
    assert format_macs(value) == text


@pytest.mark.parametrize("value, text", COUNTS)
def test_counts(value: int, text: str) -> None:
    assert format_count(value) == text


@pytest.mark.parametrize("ms, text", TIMES_MS)
def test_times_in_ms(ms: float, text: str) -> None:
    assert format_ms(ms) == text


def test_seconds_and_missing_values() -> None:
    assert format_seconds(4.5) == "4.50 s"
    assert format_seconds(0.25) == "250 ms"
    assert format_seconds(1234.0) == "1234 s"
    assert format_macs(None) == format_count(None) == format_ms(None) == format_seconds(None) == "-"


@pytest.mark.parametrize(
    "value, text",
    [(4.032, "4.03"), (0.1, "0.100"), (9.996, "10.0"), (99.96, "100"), (1234.4, "1234"), (-4.061, "-4.06"),
     (0.000123456, "0.000123"), (0, "0")],
)  # fmt: skip
def test_significant_digits(value: float, text: str) -> None:
    assert significant(value) == text
    assert "e" not in significant(value)


def test_one_formatter_and_parser_for_every_package() -> None:
    """No module but search_space/units.py defines a quantity formatter or parser: the CLIs, the
    cards, the report and scaling print through the same functions and cannot drift apart again."""
    import ast
    from pathlib import Path

    names = {"format_macs", "format_count", "format_ms", "format_seconds", "parse_macs", "parse_count", "significant"}
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("search_space", "train_proxy", "results", "nas", "scaling", "benchmarks", "scripts"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name in names:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert {f.split()[-1] for f in found} == names and all(f.startswith("search_space/units.py:") for f in found)
    assert not (root / "nas" / "units.py").exists(), "the re-export is gone: import search_space.units"


def test_parsing_kept_its_behaviour_and_messages() -> None:
    assert units.parse_macs("4GFLOPs") == 4_000_000_000
    assert units.parse_macs("600MFLOPs") == 600_000_000
    assert units.parse_count("2.5M") == 2_500_000
    with pytest.raises(units.UserError, match=r"malformed MAC budget 'four' \(expected e.g. 4GFLOPs"):
        units.parse_macs("four")
    with pytest.raises(units.UserError, match="parameter count '0' must be positive"):
        units.parse_count("0")


def test_nas_profile_and_a_card_print_the_same_numbers(tmp_path, capsys) -> None:
    """At 64 px VAN-B0's parts are small (the head, the stem-less first stage): the sizes where the
    old formatters disagreed (profile's 0.5 M, the card's 0.51 M)."""
    cfg = load_zoo("van_b0").replace(resolution=64, name="van_b0_64")
    path = tmp_path / "m.yaml"
    cfg.save(path)
    assert main(["profile", str(path)]) == 0
    profile = capsys.readouterr().out
    card = stage_table(cfg)
    report = analytic_report(cfg)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[-3:-1]] for line in card.splitlines()[2:]}
    for name, cost in report.parts:
        params, macs = format_count(cost.params), format_macs(cost.macs)
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(params)}\s+{re.escape(macs)}$", profile, re.M), name
        card_part = "stage " + name[len("stage"):] if name.startswith("stage") else name
        assert rows[card_part] == [params, macs], name
    total = format_macs(report.total.macs)
    assert re.search(rf"^total\s+{re.escape(format_count(report.total.params))}\s+{re.escape(total)}$", profile, re.M)
    # one of the parts is below 1 M MACs: the case the three formatters printed three ways
    assert any(cost.macs < 1_000_000 for _, cost in report.parts)

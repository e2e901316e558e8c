"""The `scaling` command line: tables, files, agreement with `nas profile`, and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main as nas_main
from scaling.cli import main
from scaling.coeffs import candidates, format_report, parse_grid, search_coefficients
from search_space import ArchConfig, SearchSpace, UserError


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_expand_cmt_s_phi1_table(capsys) -> None:
    code, out, err = run(["expand", "--config", "cmt_s", "--phi", "1"], capsys)
    assert code == 0 and err == ""
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert rows["resolution"].split()[1:] == ["224", "256"]
    assert rows["depths"].split()[1:] == ["3,3,16,3", "4,4,20,4"]
    assert "MACs target" in rows and "MACs actual" in rows and "deviation" in rows
    assert "alpha*beta^1.5*gamma^2 = 2.352" in out  # the constant actually used, not the nominal 2.5
    assert rows["MACs target"].split()[2:4] == ["9.484", "G"]


def test_expand_json_out_and_nas_profile_agree(tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "cmt_b_like.yaml"
    code, out, _ = run(["expand", "--config", "cmt_s", "--phi", "1", "--match-macs", "--out", str(out_file),
                        "--json"], capsys)  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert abs(result["deviation"]) <= 0.03 and result["matched"] is True
    assert ArchConfig.load(out_file).to_dict() == result["config"]
    assert nas_main(["profile", str(out_file), "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert (profile["params"], profile["macs"], profile["resolution"]) == (result["params"], result["macs"], 256)


def test_negative_values_are_not_taken_for_options(tmp_path: Path, capsys) -> None:
    code, out, _ = run(["expand", "--config", "van_b0", "--phi", "-1", "--json"], capsys)
    assert code == 0 and json.loads(out)["phi"] == -1
    code, out, _ = run(["family", "--config", "van_b0", "--phis", "-1,0", "--names", "small,base", "--out",
                        str(tmp_path), "--json"], capsys)  # fmt: skip
    assert code == 0
    summary = json.loads(out)
    assert [m["member"] for m in summary["members"]] == ["small", "base"]
    assert (tmp_path / "van_b0_small.yaml").exists() and (tmp_path / "family.png").exists()


def test_family_table_and_files(tmp_path: Path, capsys) -> None:
    code, out, _ = run(["family", "--config", "cmt_s", "--match-macs", "--compare-zoo", "cmt_ti,cmt_xs,cmt_s,cmt_b",
                        "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0
    assert "zoo model" in out and "cmt_ti" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(abs(m["deviation"]) <= 0.03 for m in summary["members"])
    assert summary["members"][0]["zoo"]["depths"] == [2, 2, 10, 2]


MALICIOUS_YAML = "!!python/object/apply:os.system ['echo pwned']\n"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["expand", "--config", "cmt_s", "--phi", "abc"], "phi 'abc' is not a number"),
        (["expand", "--config", "cmt_s", "--phi", "nan"], "finite"),
        (["expand", "--config", "cmt_s", "--phi", "30"], "MACs per image"),
        (["expand", "--config", "cmt_s", "--phi", "-40"], "below the 32 px"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--alpha", "1.0"], "alpha must be > 1"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--beta", "0.5"], "beta must be > 1"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--gamma", "-1.15"], "gamma must be > 1"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--alpha", "x"], "alpha 'x' is not a number"),
        (["expand", "--config", "no_such_model", "--phi", "1"], "unknown model 'no_such_model'"),
        (["expand", "--config", "{tmp}/missing.yaml", "--phi", "1"], "no such file"),
        (["expand", "--config", "{tmp}/evil.yaml", "--phi", "1"], "evil.yaml"),
        (["expand", "--config", "cmt_s", "--phi", "-10", "--match-macs"], "cannot match the MACs target"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--out", "{tmp}/no/dir/x.yaml"], "does not exist"),
        (["expand", "--config", "cmt_s", "--phi", "1", "--tolerance", "2"], "tolerance"),
        (["expand", "--config", "cmt_s"], "--phi"),
        (["family", "--config", "cmt_s", "--phis", "-1,0,1", "--names", "a,b", "--out", "{tmp}/fam"], "2 names for 3"),
        (["family", "--config", "cmt_s", "--names", "../x,b,c,d", "--out", "{tmp}/fam"], "not a safe file name"),
        (["family", "--config", "cmt_s", "--phis", "0,40", "--out", "{tmp}/fam"], "phi=40 is absurd"),
        (["family", "--config", "cmt_s", "--phis", "a,b", "--out", "{tmp}/fam"], "'a' is not a number"),
        (["family", "--config", "cmt_s", "--compare-zoo", "cmt_ti,nope,-,-", "--out", "{tmp}/fam"], "nope"),
        (["coeffs", "--config", "cmt_s", "--grid", "alpha=1.1,beta=1.1,gamma=1.05"], "no grid point"),
        (["coeffs", "--config", "cmt_s", "--grid", "alpha=1.0:1.4:0.1"], "not > 1"),
        (["coeffs", "--config", "cmt_s", "--grid", "delta=1.2"], "KEY=START:STOP:STEP"),
        (["coeffs", "--config", "cmt_s", "--grid", "alpha=1.4:1.1:0.1"], "empty range"),
        (["coeffs", "--config", "cmt_s", "--target", "0.5"], "target"),
        (["coeffs", "--config", "cmt_s", "--proxy-resolution", "50"], "multiple of 32"),
        (["coeffs", "--config", "cmt_s", "--epochs", "0"], "must be >= 1"),
        (["coeffs", "--config", "cmt_s", "--data", "cifar10:{tmp}/none"], "none"),
    ],
)
def test_errors_are_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "evil.yaml").write_text(MALICIOUS_YAML)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert needle in err
    assert not (tmp_path / "fam").exists()  # nothing written on refusal


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the status of the SystemExit argparse raises for usage errors."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "expand", "--config", "cmt_s", "--phi", "1e3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "MACs per image" in proc.stderr and proc.stdout == ""


# -- coefficient search -------------------------------------------------------------------
def test_grid_parsing_and_candidates() -> None:
    grid = parse_grid("alpha=1.1:1.4:0.1,gamma=1.15")
    assert grid.alpha == (1.1, 1.2, 1.3, 1.4) and grid.gamma == (1.15,)
    assert grid.beta == parse_grid(None).beta  # left out: the default range
    chosen = candidates(parse_grid(None), 2.5, 0.05)
    assert chosen and all(abs(c.constant / 2.5 - 1) <= 0.05 for c in chosen)
    gaps = [abs(c.constant / 2.5 - 1) for c in chosen]
    assert gaps == sorted(gaps)
    with pytest.raises(UserError, match="given twice"):
        parse_grid("alpha=1.2,alpha=1.3")


@pytest.mark.slow
def test_coeffs_trains_and_ranks_a_tiny_grid(capsys) -> None:
    base, _ = SearchSpace.default().smallest()  # the cheapest base keeps two trainings to seconds
    report = search_coefficients(
        base, target=2.3, grid=parse_grid("alpha=1.2,beta=1.2:1.3:0.1,gamma=1.15"), tolerance=0.12, epochs=1,
        proxy_resolution=32, proxy_width=0.25, data_fraction=0.2, max_candidates=2, threads=1,
    )  # fmt: skip
    assert len(report.results) == 2
    accs = [r.val_acc for r in report.results]
    assert accs == sorted(accs, reverse=True)
    for r in report.results:
        assert r.status == "ok" and r.epochs == 1 and math.isfinite(r.val_acc)
        assert r.scaled.config.resolution == 256 and r.proxy_resolution == 32
        assert r.proxy_macs > 0 and r.proxy_params > 0
    assert report.best is report.results[0]
    doc = report.to_dict()
    assert doc["best"]["alpha"] == 1.2 and doc["trained"] == 2 and doc["settings"]["match_macs"] is True
    assert all(abs(c["deviation"]) <= 0.03 for c in doc["candidates"])
    json.dumps(doc, allow_nan=False)
    text = format_report(report)
    assert "best: alpha=1.2" in text and "proxy acc" in text

"""`nas profile` and `nas sample`: outputs, determinism and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.cli import main
from search_space import ArchConfig, SearchSpace, analytic_cost, load_zoo


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_has_required_keys(capsys):
    code, out, _ = run_cli(capsys, "profile", "cmt_s", "--json", "--traced")
    assert code == 0
    data = json.loads(out)
    assert data["resolution"] == 224
    assert data["params"] == analytic_cost(load_zoo("cmt_s")).params
    assert data["macs"] == data["macs_traced"] == analytic_cost(load_zoo("cmt_s")).macs
    assert out.count("\n") == 1  # exactly one JSON object


def test_profile_yaml_and_resolution(capsys, tmp_path):
    path = tmp_path / "m.yaml"
    load_zoo("van_b0").save(path)
    code, out, _ = run_cli(capsys, "profile", str(path), "--resolution", "64", "--json")
    assert code == 0
    assert json.loads(out)["macs"] == analytic_cost(load_zoo("van_b0"), 64).macs


def test_profile_human_output_says_macs(capsys):
    code, out, _ = run_cli(capsys, "profile", "van_b0")
    assert code == 0 and "multiply-accumulates" in out and "total" in out


def test_sample_is_deterministic(tmp_path, capsys):
    assert main(["sample", "--trials", "4", "--seed", "7", "--out", str(tmp_path / "a")]) == 0
    assert main(["sample", "--trials", "4", "--seed", "7", "--out", str(tmp_path / "b")]) == 0
    assert main(["sample", "--trials", "4", "--seed", "8", "--out", str(tmp_path / "c")]) == 0
    a = sorted((tmp_path / "a").iterdir())
    assert [p.name for p in a] == [f"sample_{i:03d}.yaml" for i in range(4)]
    assert [p.read_text() for p in a] == [p.read_text() for p in sorted((tmp_path / "b").iterdir())]
    assert [p.read_text() for p in a] != [p.read_text() for p in sorted((tmp_path / "c").iterdir())]
    for p in a:
        ArchConfig.load(p)  # valid


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["profile", "no_such_model"], "unknown model 'no_such_model'"),
        (["profile", "missing.yaml"], "no such file"),
        (["profile", "cmt_s", "--resolution", "100"], "not a multiple of 32"),
        (["profile", "cmt_s", "--resolution", "abc"], "not an integer"),
        (["sample", "--trials", "0", "--out", "x"], "must be >= 1"),
        (["sample", "--trials", "2"], "--out"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(argv, needle, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*argv)
    assert code == 2
    assert needle in err
    assert err.strip().count("\n") == 0, err


def test_real_entry_point_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "profile", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model 'nope'")
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_invalid_yaml_file_is_one_line(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {block: cmt, depth: 2, width: 65, heads: 2}\n")
    code, _, err = cli("profile", bad)
    assert code == 2 and "width 65 is not divisible by heads 2" in err
    assert err.strip().count("\n") == 0


def test_space_sampling_is_valid_and_bounded_by_smallest():
    space = SearchSpace.default()
    _, smallest = space.smallest()
    for seed in range(40):
        cfg = space.sample(seed)
        assert analytic_cost(cfg).macs >= smallest.macs


def test_space_validation_errors(tmp_path):
    from search_space import ConfigError

    base = SearchSpace.default()
    raw = {"stages": [{"block": ["cmt"], "depth": 1, "width": [30], "heads": [4]}] + [{"block": "van", "depth": 1, "width": 32}] * 3}
    with pytest.raises(ConfigError, match="width choice 30 is not divisible by heads choice 4"):
        SearchSpace.from_dict(raw)
    raw["stages"][0] = {"block": ["transformer"], "depth": 1, "width": 32}
    with pytest.raises(ConfigError, match="unknown block type 'transformer'"):
        SearchSpace.from_dict(raw)
    raw["stages"][0] = {"block": "van", "depth": {"low": 3, "high": 1}, "width": 32}
    with pytest.raises(ConfigError, match="empty range"):
        SearchSpace.from_dict(raw)
    assert base.resolution == 224

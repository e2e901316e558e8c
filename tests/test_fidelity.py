"""Proxy fidelity: rank agreement maths, settings checks and an end-to-end `nas fidelity` run."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from nas.cli import main
from search_space.errors import UserError
from train_proxy.fidelity import (
    SIGNALS,
    FidelitySettings,
    bootstrap_agreement,
    bootstrap_tau_difference,
    rank_agreement,
    sample_architectures,
    top_k_overlap,
)

TINY_SPACE = """\
name: tiny
resolution: 64
num_classes: 10
downsampling: [cmt, van]
stem_channels: [8]
head_fc_dim: [0]
stages:
  - {block: [van, cmt, acmix], depth: 1, width: [8, 16], mlp_ratio: [2.0], heads: [1, 2], kv_reduction: [2], attn_kernel: [3]}
  - {block: [van, cmt, acmix], depth: 1, width: [16], mlp_ratio: [2.0], heads: [2], kv_reduction: [1, 2], attn_kernel: [3]}
  - {block: [van, cmt, acmix], depth: {low: 1, high: 2}, width: [16], mlp_ratio: [2.0], heads: [2, 4], kv_reduction: [1], attn_kernel: [3]}
  - {block: [van, cmt, acmix], depth: 1, width: [16, 32], mlp_ratio: [2.0], heads: [4], kv_reduction: 1, attn_kernel: [3]}
"""


def test_top_k_overlap_known_answers():
    ref = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert top_k_overlap([5, 4, 3, 2, 1], ref, 2) == 1.0
    assert top_k_overlap([1, 2, 3, 4, 5], ref, 2) == 0.0
    assert top_k_overlap([5, 1, 4, 2, 3], ref, 2) == 0.5  # picks 0 and 2; reference's best are 0 and 1
    assert top_k_overlap([1, 1, 1, 1, 1], ref, 1) == 1.0  # ties broken by position


def test_rank_agreement_matches_scipy_and_skips_non_finite():
    signal = [3.0, 1.0, 2.0, 5.0, 4.0, math.nan]
    ref = [0.3, 0.1, 0.4, 0.5, 0.2, 0.9]
    out = rank_agreement(signal, ref, k=2)
    assert out["n"] == 5
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(signal[:5], ref[:5]).statistic)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(signal[:5], ref[:5]).statistic)
    assert out["top_k_overlap"] == 0.5  # signal's top-2: 3, 4; reference's: 3, 2


def test_rank_agreement_of_a_perfect_and_a_reversed_signal():
    ref = [0.1, 0.5, 0.3, 0.9]
    assert rank_agreement([1, 5, 3, 9], ref, 1)["kendall_tau"] == pytest.approx(1.0)
    reverse = rank_agreement([9, 1, 5, 0], ref, 1)
    assert reverse["spearman_rho"] == pytest.approx(-1.0) and reverse["top_k_overlap"] == 0.0


def test_constant_signal_has_no_correlation():
    out = rank_agreement([2.0, 2.0, 2.0], [0.1, 0.2, 0.3], 1)
    assert out["kendall_tau"] is None and out["spearman_rho"] is None


def test_bootstrap_of_a_perfect_and_a_reversed_signal_is_a_point():
    # every resample of a strictly increasing pairing is concordant (ties are shared by both sides):
    # tau and rho are 1 in every resample that is not constant, and the top-k sets always agree
    ref = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]
    signal = [10 * r + 1 for r in ref]
    out = bootstrap_agreement(signal, ref, 2, resamples=300, seed=4)
    assert out["kendall_tau_low"] == pytest.approx(1.0) and out["kendall_tau_high"] == pytest.approx(1.0)
    assert out["spearman_rho_low"] == pytest.approx(1.0) and out["spearman_rho_high"] == pytest.approx(1.0)
    assert out["top_k_overlap_low"] == 1.0 and out["top_k_overlap_high"] == 1.0
    reverse = bootstrap_agreement([-s for s in signal], ref, 2, resamples=300, seed=4)
    assert reverse["kendall_tau_low"] == pytest.approx(-1.0) and reverse["kendall_tau_high"] == pytest.approx(-1.0)


def test_paired_difference_of_a_perfect_and_a_reversed_signal_is_two():
    # in every resample the perfect signal has tau 1 and the reversed one -1: the difference is 2
    ref = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]
    perfect, reversed_ = [10 * r for r in ref], [-r for r in ref]
    out = bootstrap_tau_difference(perfect, reversed_, ref, resamples=300, seed=1)
    assert out["difference"] == pytest.approx(2.0)
    assert out["difference_low"] == pytest.approx(2.0) and out["difference_high"] == pytest.approx(2.0)
    assert out["ahead"] == 1.0


def test_paired_difference_of_a_signal_with_itself_is_zero_and_never_ahead():
    ref = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    signal = [2, 1, 4, 3, 6, 5, 8, 7]
    out = bootstrap_tau_difference(signal, signal, ref, resamples=200, seed=0)
    assert out["difference"] == 0.0 and out["difference_low"] == 0.0 and out["difference_high"] == 0.0
    assert out["ahead"] == 0.0  # pairing: the same resample scores both, so no noise is left
    assert all(v is None for v in bootstrap_tau_difference([1.0, 2.0], [2.0, 1.0], [0.1, 0.2]).values())


def test_bootstrap_interval_brackets_a_mixed_signal_and_needs_three_pairs():
    ref = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    signal = [2, 1, 4, 3, 6, 5, 8, 7]  # four discordant neighbour pairs of 28: tau = (24 - 4) / 28
    tau = rank_agreement(signal, ref, 2)["kendall_tau"]
    assert tau == pytest.approx(20 / 28)
    out = bootstrap_agreement(signal, ref, 2, resamples=500, seed=0)
    assert out["kendall_tau_low"] < tau < out["kendall_tau_high"] <= 1.0
    assert out == bootstrap_agreement(signal, ref, 2, resamples=500, seed=0)  # seeded
    assert all(v is None for v in bootstrap_agreement([1.0, 2.0], [0.1, 0.2], 1).values())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n": 2}, "at least 3"),
        ({"top_k": 6}, "top-k"),
        ({"proxy_resolution": 48}, "multiple of 32"),
        ({"proxy_fraction": 1.0, "proxy_width": 1.0, "epochs_ref": 1}, "reference must train longer"),
        ({"proxy_fraction": 0.0}, "fraction"),
    ],
)
def test_settings_errors(changes, message):
    with pytest.raises(UserError, match=message):
        FidelitySettings(**changes)


def test_architectures_are_seeded_and_distinct(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    a = sample_architectures(FidelitySettings(n=5, seed=3, space=str(space)))
    b = sample_architectures(FidelitySettings(n=5, seed=3, space=str(space)))
    assert a == b and len(set(a)) == 5
    assert a != sample_architectures(FidelitySettings(n=5, seed=4, space=str(space)))


@pytest.mark.slow
def test_cli_fidelity_end_to_end(tmp_path, capsys):
    """Three tiny architectures in two worker processes: JSON on stdout, the same in --out."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    out_file = tmp_path / "fidelity.json"
    argv = ["fidelity", "--trials", "3", "--seed", "1", "--space", str(space), "--epochs", "1", "--ref-epochs", "1",
            "--data-fraction", "0.2", "--top", "1", "--workers", "2", "--data", "digits", "--out", str(out_file), "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out_file.read_text())
    assert set(printed["signals"]) == set(SIGNALS) | {"reference"}
    for name in SIGNALS:
        signal = printed["signals"][name]
        assert signal["n"] == 3
        assert signal["top_k_overlap"] in (0.0, 1.0)
        assert signal["kendall_tau"] is None or -1.0 <= signal["kendall_tau"] <= 1.0
        assert "kendall_tau_low" in signal and "top_k_overlap_high" in signal
    rows = printed["architectures"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0.0 <= r["reference"] <= 1.0 and 0.0 <= r["proxy"] <= 1.0
        assert r["macs"] > 0 and r["params"] > 0 and math.isfinite(r["synflow"])


def test_cli_fidelity_bad_input(capsys, tmp_path):
    assert main(["fidelity", "--trials", "2"]) == 2
    assert main(["fidelity", "--data", "cifar10:/no/such/dir"]) == 2
    assert main(["fidelity", "--out", str(tmp_path / "missing" / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "at least 3" in err[0] and "does not exist" in err[1] and "does not exist" in err[2]

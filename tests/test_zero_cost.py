"""Zero-cost scores (synflow, NASWOT, grad-norm) and `nas score`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nas.cli import main
from search_space import ArchConfig, HeadConfig, StageConfig, StemConfig
from search_space.errors import UserError
from train_proxy import zero_cost as zc
from train_proxy.zero_cost import PROXIES, zero_cost_score, zero_cost_scores

RES, BATCH = 32, 8


def family(block: str, width: int = 16, depth: int = 1, **knobs) -> ArchConfig:
    """A small four-stage network of one block family (CMT stem, VAN/CMT-style head)."""
    widths = (width, width, 2 * width, 2 * width)
    stages = tuple(StageConfig(block, depth, w, mlp_ratio=2.0, **knobs) for w in widths)
    return ArchConfig(name=f"tiny_{block}", resolution=64, num_classes=10, stem=StemConfig("conv3", 8),
                      head=HeadConfig("linear", 0, 0.0), stages=stages)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Scores of tiny models are fastest on one thread (and 2 threads on a busy 2-core box crawl)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = {
    "van": family("van", lka_kernel=3, lka_dilated_kernel=3, lka_dilation=2),
    "cmt": family("cmt", heads=2, kv_reduction=1),
    "acmix": family("acmix", heads=2, attn_kernel=3, channel_attention="se"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scores_are_finite_and_deterministic(name):
    cfg = CONFIGS[name]
    first = zero_cost_scores(cfg, resolution=RES, batch_size=BATCH, seed=0)
    second = zero_cost_scores(cfg, resolution=RES, batch_size=BATCH, seed=0)
    assert set(first) == set(PROXIES)
    assert first == second  # bit-identical for the same seed
    for proxy, value in first.items():
        assert math.isfinite(value), (name, proxy, value)
    assert first["synflow"] > 0 and first["gradnorm"] > 0
    # NASWOT: log det of a BATCH x BATCH kernel whose entries are at most the number of units
    assert first["naswot"] > 0


def test_seed_changes_the_scores():
    cfg = CONFIGS["van"]
    a = zero_cost_scores(cfg, resolution=RES, batch_size=BATCH, seed=0)
    b = zero_cost_scores(cfg, resolution=RES, batch_size=BATCH, seed=1)
    assert all(a[p] != b[p] for p in PROXIES)


def test_single_score_matches_the_combined_call():
    cfg = CONFIGS["van"]
    both = zero_cost_scores(cfg, ("naswot", "gradnorm"), resolution=RES, batch_size=BATCH, seed=3)
    assert zero_cost_score(cfg, "gradnorm", resolution=RES, batch_size=BATCH, seed=3) == both["gradnorm"]


def test_scoring_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    zero_cost_score(CONFIGS["acmix"], "synflow", resolution=RES, batch_size=BATCH)
    assert torch.equal(state, torch.get_rng_state())


def test_deep_gated_stack_does_not_overflow_synflow():
    """Ten VAN blocks in a row: with identity BatchNorm the LKA gate squares the signal per block
    and float64 overflows (inf/nan); scale-normalised BatchNorm keeps the score finite."""
    cfg = family("van", width=8, depth=10, lka_kernel=3, lka_dilated_kernel=3, lka_dilation=2)
    assert math.isfinite(zero_cost_score(cfg, "synflow", resolution=RES, batch_size=BATCH))


def test_synflow_is_data_free(monkeypatch):
    """synflow reads no data (an all-ones input): given noise instead of the real batch it scores
    the same, and only the initial weights (the seed) move the score."""
    cfg = CONFIGS["acmix"]
    real = zero_cost_scores(cfg, ("synflow", "gradnorm"), resolution=RES, batch_size=BATCH, seed=0)
    images, labels, classes = zc.score_batch("digits", RES, BATCH, 0)
    noise = (torch.randn_like(images) * 5, torch.randint(0, classes, labels.shape), classes)
    monkeypatch.setattr(zc, "score_batch", lambda *args: noise)
    on_noise = zero_cost_scores(cfg, ("synflow", "gradnorm"), resolution=RES, batch_size=BATCH, seed=0)
    assert on_noise["gradnorm"] != real["gradnorm"]  # the noise did reach the scorers
    assert on_noise["synflow"] == real["synflow"]
    before = real["synflow"]
    assert zero_cost_score(cfg, "synflow", resolution=RES, batch_size=BATCH, seed=1) != before


def test_naswot_of_identical_images_is_singular():
    cfg = family("cmt", heads=2).replace(num_classes=10)
    images = torch.randn(1, 3, RES, RES).expand(4, -1, -1, -1).contiguous()
    assert zc.naswot(cfg, images, seed=0) == float("-inf")  # all codes equal: rank-1 kernel


def test_bad_arguments():
    with pytest.raises(UserError, match="unknown zero-cost proxy 'snip'"):
        zero_cost_score(CONFIGS["van"], "snip")
    with pytest.raises(UserError, match="multiple of 32"):
        zero_cost_score(CONFIGS["van"], "naswot", resolution=40)
    with pytest.raises(UserError, match="batch size"):
        zero_cost_score(CONFIGS["van"], "naswot", batch_size=1)
    with pytest.raises(UserError, match="unknown data spec"):
        zero_cost_score(CONFIGS["van"], "naswot", data="svhn")


def test_cli_score_json(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    CONFIGS["acmix"].save(path)
    argv = ["score", str(path), "--proxy", "naswot", "--score-batch-size", str(BATCH), "--seed", "2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["proxy"] == "naswot" and out["resolution"] == RES and out["seed"] == 2
    expected = zero_cost_score(CONFIGS["acmix"], "naswot", resolution=RES, batch_size=BATCH, seed=2)
    assert out["score"] == pytest.approx(expected) and out["finite"] is True


def test_cli_score_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["score", "van_b0", "--proxy", "snip"])
    assert exc.value.code == 2
    assert main(["score", "no_such_model", "--proxy", "synflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "invalid choice" in err[0] and "unknown model" in err[1]

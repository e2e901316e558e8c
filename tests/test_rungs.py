"""The search's fidelity rungs: the ladder, ASHA's milestones on it, and a rung's validation subset.

The ladder's values are worked out by hand from its rule (from the top down: half the width, then
a third of the images, in turn; every rung below the top scores a sixth of the validation
split); ASHA's milestones are read off
Ray Tune's own scheduler; a rung's subset accuracy is checked against the same training scored
on the whole validation split, image by image.
"""

from __future__ import annotations

import numpy as np
import pytest

from results.settings import SearchSettings
from train_proxy.proxy_defaults import rung_ladder


def test_the_ladder_by_hand() -> None:
    two = rung_ladder(1, 0.5, 0.1, 2)
    assert [(r.index, r.epochs, r.width) for r in two] == [(0, 1, 0.25), (1, 1, 0.5)]
    assert [r.data_fraction for r in two] == pytest.approx([0.1, 0.1])
    assert [r.val_fraction for r in two] == pytest.approx([1.0, 1.0])  # all 12,000 images (docs/fidelity.md)
    assert [r.budget for r in two] == [1, 3]
    assert [r.label() for r in two] == ["e1-w0.25-f0.1", "e1-w0.5-f0.1"]
    sixth = rung_ladder(1, 0.5, 0.1, 2, low_val_fraction=1 / 6)  # what runs before that scored
    assert [r.label() for r in sixth] == ["e1-w0.25-f0.1-v0.17", "e1-w0.5-f0.1"]
    three = rung_ladder(2, 1.0, 0.9, 3)
    assert [r.width for r in three] == [0.5, 0.5, 1.0] and [r.epochs for r in three] == [2, 2, 2]
    assert [r.data_fraction for r in three] == pytest.approx([0.3, 0.9, 0.9])
    assert [r.budget for r in three] == [1, 3, 9]
    four = rung_ladder(1, 1.0, 0.9, 4)
    assert [r.width for r in four] == [0.25, 0.5, 0.5, 1.0]
    assert [r.data_fraction for r in four] == pytest.approx([0.3, 0.3, 0.9, 0.9])
    (one,) = rung_ladder(1, 0.5, 0.1, 1)
    assert (one.data_fraction, one.val_fraction) == (0.1, 1.0)  # one rung: the proxy as given


@pytest.mark.parametrize("rungs", [2, 3, 4])
def test_asha_decides_exactly_at_the_rungs(rungs: int) -> None:
    """Ray Tune's ASHA, as the search configures it, has its milestones on the rungs' budgets."""
    from nas.search.runner import rung_scheduler

    scheduler = rung_scheduler(SearchSettings(budget_macs=10**9, rungs=rungs))
    (bracket,) = scheduler._brackets  # one bracket: plain asynchronous successive halving
    assert sorted(milestone for milestone, _ in bracket._rungs) == [3**k for k in range(rungs)]
    assert scheduler._reduction_factor == 3 and scheduler._metric == "val_acc" and scheduler._mode == "max"


def test_one_rung_has_no_scheduler() -> None:
    from nas.search.runner import rung_scheduler

    assert rung_scheduler(SearchSettings(budget_macs=10**9, rungs=1)) is None


def test_a_runs_settings_from_before_rungs_read_as_one_rung() -> None:
    stored = SearchSettings(budget_macs=10**9).to_json()
    del stored["rungs"]
    assert SearchSettings.from_json(stored).rungs == 1


def test_a_rung_scores_its_validation_subset_as_the_full_pass_would(tiny_cfg) -> None:
    """The same training (seed, data, steps), scored on a sixth of the validation split, equals the
    full-split run's per-image results restricted to that sixth: the subset changes what is
    scored, never what is trained."""
    from train_proxy.data import load_data, stratified_subset
    from train_proxy.trainer import DATA_SEED, ProxySpec, train_proxy, unpack_correct

    data = load_data("digits", 32)
    common = dict(epochs=1, data_fraction=1.0, width_multiplier=1.0, threads=1, device="cpu", seed=3)
    full = train_proxy(tiny_cfg, ProxySpec(**common), data, keep_val_correct=True)
    part = train_proxy(tiny_cfg, ProxySpec(**common, val_fraction=1 / 6), data)
    labels = data.val.tensors[1].numpy()
    keep = stratified_subset(labels, 1 / 6, DATA_SEED)
    correct = unpack_correct(full.val_correct, full.n_val)
    assert full.n_val == len(labels) and part.n_val == len(keep) < len(labels)
    assert np.bincount(labels[keep]).min() >= 1  # every class is in the subset
    assert part.val_acc == pytest.approx(correct[keep].mean(), abs=1e-12)
    assert full.val_acc == pytest.approx(correct.mean(), abs=1e-12)
    row = part.history[-1]
    assert row["train_steps"] == part.n_train // 64 and row["train_loss_sum"] == pytest.approx(row["train_loss"] * row["train_steps"])


def test_a_run_keeps_the_validation_share_it_started_with(tmp_path) -> None:
    """Runs recorded before the share was a setting scored a sixth below the top rung; a resumed
    run keeps its own share, and a hostile one is refused before anything starts."""
    from nas.search.preflight import check_settings
    from search_space.errors import UserError

    old = SearchSettings.from_json({"budget_macs": 4_000_000_000, "rungs": 2})
    assert old.low_rung_val_fraction == pytest.approx(1 / 6)
    assert old.rung_ladder()[0].label() == "e1-w0.25-f0.1-v0.17"
    new = SearchSettings.from_json(SearchSettings(budget_macs=4_000_000_000).to_json())
    assert [r.val_fraction for r in new.rung_ladder()] == [1.0, 1.0]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(UserError, match="low_rung_val_fraction"):
            check_settings(new.with_overrides(low_rung_val_fraction=bad), tmp_path)

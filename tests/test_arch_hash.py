"""The architecture hash covers exactly what each block reads, and it is versioned.

Version 2 (``v2:`` + sha1) hashes the network-level fields and, per stage, the fields its block type
reads (`BlockType.read_fields`): a knob the block ignores changes nothing, a knob it reads changes
the hash. Version 1 (40 hex digits, no prefix) is what runs written before it store: the tests
below write such a run with the real `NasSearcher` (its hash pinned to version 1, byte for byte
what the code before version 2 wrote), then read it with today's readers and resume it.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import nas.search.searcher as searcher_module
from nas.cli import main as nas_main
from nas.search.settings import SearchSettings
from results import load_run
from results.run_dir import (
    ARCH_HASH_VERSION,
    RunDir,
    arch_hash,
    arch_hash_version,
    count_frozen,
    counts_as_trained,
    frozen_status,
    trained_arch_index,
    trial_arch_hash,
)
from scaling.cli import main as scaling_main
from search_space import ArchConfig, SearchSpace, load_zoo
from search_space.blocks import block_names, get_block
from search_space.config import COMMON_STAGE_FIELDS, KNOB_FIELDS

optuna.logging.set_verbosity(optuna.logging.WARNING)

# What arch_hash returned before version 2 (HEAD of issue 24's code), for two zoo models.
PINNED_V1 = {"cmt_s": "aa09aa52ccdc791137156ae1e2b5863b6bb888ff", "van_b0": "0ed24b879f97351d5ad6e5bd74957096f7321b16"}


# -- what the hash covers -----------------------------------------------------------------------------


def _with_block(block: str) -> ArchConfig:
    """cmt_s with every stage of ``block`` (its knobs keep cmt_s's values; not validated: the
    hash is pure arithmetic on the fields)."""
    cfg = load_zoo("cmt_s")
    return cfg.replace(stages=tuple(dataclasses.replace(s, block=block) for s in cfg.stages))


def _changed(cfg: ArchConfig, **changes) -> ArchConfig:
    return cfg.replace(stages=(cfg.stages[0], dataclasses.replace(cfg.stages[1], **changes), *cfg.stages[2:]))


@pytest.mark.parametrize("block", block_names())
def test_a_knob_changes_the_hash_exactly_when_the_block_reads_it(block: str) -> None:
    cfg = _with_block(block)
    block_type = get_block(block)
    for knob in KNOB_FIELDS:
        other = _changed(cfg, **{knob: getattr(cfg.stages[1], knob) + 2})
        if knob in block_type.knobs:
            assert arch_hash(other) != arch_hash(cfg), f"{block} reads {knob}"
        else:
            assert arch_hash(other) == arch_hash(cfg), f"{block} ignores {knob}"
        assert arch_hash(other, version=1) != arch_hash(cfg, version=1)  # version 1 hashed every field


@pytest.mark.parametrize("block", block_names())
def test_the_common_fields_change_every_blocks_hash(block: str) -> None:
    cfg = _with_block(block)
    stage = cfg.stages[1]
    other_block = next(b for b in block_names() if b != block)
    values = {"block": other_block, "depth": stage.depth + 1, "width": stage.width * 2, "mlp_ratio": stage.mlp_ratio + 1,
              "channel_attention": "se" if stage.channel_attention != "se" else "none",
              "embed_kernel": stage.embed_kernel + 1, "embed_stride": stage.embed_stride * 2,
              "embed_norm": "bn" if stage.embed_norm != "bn" else "ln",
              "out_norm": "ln" if stage.out_norm != "ln" else "none"}  # fmt: skip
    assert set(values) == set(COMMON_STAGE_FIELDS)
    for name, value in values.items():
        assert arch_hash(_changed(cfg, **{name: value})) != arch_hash(cfg), name
    assert set(get_block(block).read_fields()) == set(COMMON_STAGE_FIELDS) | set(get_block(block).knobs)


def test_network_fields_count_and_the_name_and_drop_path_do_not() -> None:
    cfg = load_zoo("cmt_s")
    h = arch_hash(cfg)
    assert arch_hash(cfg.replace(name="other", drop_path_rate=0.3)) == h
    for changes in ({"resolution": 256}, {"num_classes": 10}, {"in_channels": 1},
                    {"stem": dataclasses.replace(cfg.stem, channels=8)},
                    {"head": dataclasses.replace(cfg.head, fc_dim=640)}):  # fmt: skip
        assert arch_hash(cfg.replace(**changes)) != h, changes


def test_the_hash_carries_its_version() -> None:
    cfg = load_zoo("cmt_s")
    h = arch_hash(cfg)
    assert ARCH_HASH_VERSION == 2 and h.startswith("v2:") and len(h) == 43
    assert arch_hash_version(h) == 2
    for name, old in PINNED_V1.items():  # version 1 is byte for byte what earlier runs stored
        assert arch_hash(load_zoo(name), version=1) == old
        assert arch_hash_version(old) == 1
    assert arch_hash_version("abc") is None and arch_hash_version("v2:xyz") is None
    with pytest.raises(ValueError, match="unknown architecture hash version 9"):
        arch_hash(cfg, version=9)


def test_a_stored_hash_resolves_to_the_current_version() -> None:
    cfg = load_zoo("van_b0")
    current = arch_hash(cfg)
    assert trial_arch_hash({"arch_hash": PINNED_V1["van_b0"], "config": cfg.to_dict()}) == current
    assert trial_arch_hash({"arch_hash": PINNED_V1["van_b0"]}, cfg) == current  # a parsed config
    assert trial_arch_hash({"arch_hash": current, "config": {"garbage": 1}}) == current  # current: trusted
    assert trial_arch_hash({"arch_hash": "abc"}) == "abc"  # nothing to recompute from: as stored
    assert trial_arch_hash({"arch_hash": PINNED_V1["van_b0"], "config": {"stages": []}}) == PINNED_V1["van_b0"]
    assert trial_arch_hash({}) is None


# -- a run written with version-1 hashes ----------------------------------------------------------------

SPACE = """\
name: hash_versions
resolution: 64
num_classes: 10
downsampling: cmt
stem_channels: 8
head_fc_dim: 0
stages:
  - {block: van, depth: 1, width: [8, 16, 24]}
  - {block: van, depth: 1, width: 16}
  - {block: [van, cmt], depth: 1, width: 16, heads: 2, kv_reduction: 1}
  - {block: van, depth: [1, 2], width: 32}
"""
BUDGET = 3_300_000  # some of the twelve architectures fit, some do not: infeasible trials too
SETTINGS = SearchSettings(budget_macs=BUDGET, objectives=("acc",), trials=20, epochs=1, concurrency=1, seed=1,
                          sampler="random", data="digits")  # fmt: skip


def _searcher(rd: RunDir, segment: int) -> searcher_module.NasSearcher:
    return searcher_module.NasSearcher(
        space=SearchSpace.from_dict(yaml.safe_load(SPACE), "space"), settings=SETTINGS, run_dir=rd,
        storage=JournalStorage(JournalFileBackend(str(rd.journal))), sampler=searcher_module.make_sampler(SETTINGS, segment),
    )  # fmt: skip


def _train(searcher: searcher_module.NasSearcher, calls: int, prefix: str) -> list[int]:
    """Ask for ``calls`` trainable candidates and report each trained to the end (no Ray, no
    training: the searcher records what the runner would report). Returns their numbers."""
    numbers = []
    for i in range(calls):
        suggestion = searcher.suggest(f"{prefix}{i}")
        if not isinstance(suggestion, dict):
            break
        searcher.on_trial_complete(f"{prefix}{i}", {"rung": SETTINGS.top_rung, "val_acc": 0.5 + 0.01 * i,
                                                    "timestamp": i, "time_total_s": 1.0, "seconds": 1.0})  # fmt: skip
        numbers.append(int(suggestion["number"]))
    return numbers


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A run written by the real searcher with version-1 hashes: several architectures trained,
    duplicates and infeasible candidates told, as a search before version 2 left it."""
    rd = RunDir(tmp_path_factory.mktemp("old_hashes") / "run")
    rd.create(SETTINGS.to_json(), SPACE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(searcher_module, "arch_hash", functools.partial(arch_hash, version=1))
        searcher = _searcher(rd, 0)
        trained = _train(searcher, 4, "first")
        study = searcher.study
    assert len(trained) == 4
    rd.update(status="finished", counts=count_frozen(study.trials), command=["nas", "search"])
    return rd.path


def _study(path: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(path / "study.journal"))))


def test_the_old_run_stores_version_1_hashes(old_run: Path) -> None:
    trials = _study(old_run).trials
    stored = [t.user_attrs["arch_hash"] for t in trials if "arch_hash" in t.user_attrs]
    assert stored and all(arch_hash_version(h) == 1 for h in stored)
    statuses = {t.user_attrs.get("status") for t in trials}
    assert {"complete", "duplicate", "infeasible"} <= statuses, statuses


def test_readers_resolve_old_hashes_and_duplicates_stay_duplicates(old_run: Path) -> None:
    run = load_run(old_run)
    by_number = {t.number: t for t in run.trials}
    for t in run.trials:
        assert t.config is not None and t.arch_hash == arch_hash(t.config)
        assert arch_hash_version(t.arch_hash) == ARCH_HASH_VERSION
    duplicates = [t for t in run.trials if t.status == "duplicate"]
    assert duplicates
    for t in duplicates:
        assert by_number[t.duplicate_of].arch_hash == t.arch_hash
    # versions 1 and 2 split the run's trials into the same architectures (sampled configs leave
    # the knobs their blocks ignore at their defaults)
    old_groups, new_groups = defaultdict(set), defaultdict(set)
    for t in run.trials:
        old_groups[t.user_attrs["arch_hash"]].add(t.number)
        new_groups[t.arch_hash].add(t.number)
    assert sorted(map(sorted, old_groups.values())) == sorted(map(sorted, new_groups.values()))
    trained = {h: ts for h, ts in new_groups.items() if any(by_number[n].trained for n in ts)}
    assert all(sum(by_number[n].trained for n in ts) == 1 for ts in trained.values())
    index = trained_arch_index(_study(old_run).trials)
    assert set(index) == set(trained) and all(by_number[n].trained for n in index.values())


def test_the_commands_that_read_runs_read_it(old_run: Path, tmp_path: Path, capsys) -> None:
    assert nas_main(["status", str(old_run)]) == 0
    assert nas_main(["export", str(old_run), "--top", "2", "--out", str(tmp_path / "export")]) == 0
    cards = sorted((tmp_path / "export").glob("*.md"))
    assert len(cards) == 2 and all("it uses VAN" in card.read_text() for card in cards)
    assert scaling_main(["expand", "--from", str(old_run), "--phi", "0.5"]) == 0
    capsys.readouterr()


def test_a_resumed_old_run_does_not_train_an_architecture_again(old_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "run"
    shutil.copytree(old_run, path)
    before = {t.number for t in _study(path).trials}
    trained_before = set(trained_arch_index(_study(path).trials))
    _train(_searcher(RunDir(path), 1), 2, "resumed")  # today's searcher, today's hash
    trials = _study(path).trials
    new_trained = [t for t in trials if t.number not in before and counts_as_trained(frozen_status(t), t.user_attrs)]
    assert new_trained  # the space has feasible architectures the first segment did not train
    assert all(trial_arch_hash(t.user_attrs) not in trained_before for t in new_trained)
    groups = defaultdict(list)
    for t in trials:
        if counts_as_trained(frozen_status(t), t.user_attrs):
            groups[trial_arch_hash(t.user_attrs)].append(t.number)
    assert all(len(numbers) == 1 for numbers in groups.values()), dict(groups)

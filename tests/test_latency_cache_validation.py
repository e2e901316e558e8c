"""The per-device latency cache is validated like a portable table (issue 24, part 6).

One function, `check_table`, decides whether a table read from disk is sound, for a portable
table (`LatencyPredictor.from_table`, refused when it fails: it cannot be measured again here) and
for the cache (`LatencyPredictor._read_file`). A cache that fails is corrupt, as an unparsable one
always was: one warning line names the file and the problem, NONE of its entries is used, the
parts are measured again and the file is replaced. So a negative, NaN, infinite, non-numeric or
absurd ``ms`` can neither be printed by ``nas latency --predict`` (it printed ``-12999.96 ms`` and
``nan ms``) nor make an over-limit candidate feasible under ``nas search --latency-ms``.

The cache is read through `search_space.files.read_json` (a regular file of at most 64 MiB): one
planted as a symbolic link to /dev/zero (MemoryError before) or as a FIFO (a hang) costs nothing;
the lock file next to it is opened without following links or blocking on a FIFO.

Each test starts from a cache written by the real writer (a prediction of the tests' tiny network
at 32 px), then damages it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fault_helpers import TINY_SPACE
from tiny_config import make_tiny_cfg

from search_space import SearchSpace
from search_space.errors import UserError
from train_proxy.latency_table import CACHE_ENV, LatencyPredictor, check_table

RES = 32
FAST = {"warmup": 1, "repeats": 3}
NAS = [sys.executable, "-m", "nas.cli"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, float]:
    """(a cache directory holding a real table written by the real writer, its prediction)."""
    folder = tmp_path_factory.mktemp("latency-cache")
    predictor = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=folder, **FAST)
    predicted = predictor.predict(make_tiny_cfg(), RES)
    assert predictor.path.is_file() and predicted > 0
    return folder, predicted


@pytest.fixture
def cache(pristine, tmp_path) -> Path:
    """A private copy of the pristine cache directory."""
    folder = tmp_path / "cache"
    shutil.copytree(pristine[0], folder)
    return folder


def table_file(folder: Path) -> Path:
    (path,) = folder.glob("*.json")
    return path


def damage_entry(path: Path, value: object) -> str:
    """Give the first entry's ``ms`` the JSON text of ``value``; returns the entry's key."""
    data = json.loads(path.read_text())
    key = sorted(data["entries"])[0]
    data["entries"][key]["ms"] = "@@MS@@"
    text = json.dumps(data, indent=1)
    raw = value if isinstance(value, str) and value.startswith("RAW:") else None
    path.write_text(text.replace('"@@MS@@"', raw[4:] if raw else json.dumps(value)))
    return key


DAMAGE = [
    ("negative", -12999.96, "'ms' is negative"),
    ("nan", math.nan, "'ms' is nan"),
    ("inf", math.inf, "'ms' is inf"),
    ("minus-inf", -math.inf, "'ms' is -inf"),
    ("string", "fast", "not a number"),
    ("null", None, "not a number"),
    ("bool", True, "not a number"),
    ("huge", 1e300, "above 3600000"),
    ("huge-int", 10**30, "above 3600000"),
    ("5000-digit-int", "RAW:" + "9" * 5000, "a number too long to read"),
]


@pytest.mark.parametrize("value, problem", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_cache_is_ignored_whole_and_measured_again(cache, capsys, value, problem):
    path = table_file(cache)
    key = damage_entry(path, value)
    fresh = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache, **FAST)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and str(path) in err[0] and problem in err[0], err
    assert len(fresh) == 0 and key not in fresh.entries  # not one entry of a damaged file is used
    predicted = fresh.predict(make_tiny_cfg(), RES)
    assert math.isfinite(predicted) and predicted > 0 and fresh.measurements > 0
    stored = json.loads(path.read_text())  # replaced by the measurements: sound again
    check_table(stored, path)
    assert 0 <= stored["entries"][key]["ms"] < 1e4


def test_the_same_damage_is_refused_in_a_portable_table(cache):
    """One validation, two reactions: what the cache ignores, a portable table refuses."""
    path = table_file(cache)
    check_table(json.loads(path.read_text()), path)  # the writer's own file passes
    for value, problem in ((-12999.96, "'ms' is negative"), (math.nan, "'ms' is nan"), ("fast", "not a number")):
        damage_entry(path, value)
        with pytest.raises(UserError, match="malformed latency table") as info:
            LatencyPredictor.from_table(path)
        assert problem in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "field, value, problem",
    [("overhead_ms", -13000.0, "'overhead_ms'"), ("overhead_ms", "NaN", "'overhead_ms'"),
     ("correction", {"block:van": -1.0}, "'correction'"), ("correction", {"other": math.inf}, "'correction'"),
     ("timing", [1, 2], "'timing'"), ("entries", {}, "no entries")],
)  # fmt: skip
def test_damaged_table_fields_are_caught_too(cache, capsys, field, value, problem):
    path = table_file(cache)
    data = json.loads(path.read_text())
    data[field] = math.nan if value == "NaN" else value
    path.write_text(json.dumps(data))
    fresh = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache, **FAST)
    err = capsys.readouterr().err
    assert len(fresh) == 0 and fresh.overhead is None and fresh.correction is None
    assert err.count("\n") == 1 and problem in err
    with pytest.raises(UserError, match=problem.replace("(", r"\(")):
        LatencyPredictor.from_table(path)


@pytest.mark.parametrize("value", [-12999.96, math.nan], ids=["negative", "nan"])
def test_nas_latency_predict_never_prints_a_damaged_entry(cache, cli, tmp_path, value):
    cfg_path = tmp_path / "tiny.yaml"
    make_tiny_cfg().save(cfg_path)
    path = table_file(cache)
    damage_entry(path, value)
    code, out, err = cli("latency", cfg_path, "--resolution", RES, "--repeats", "2", "--warmup", "0", "--predict",
                         "--cache-dir", cache, "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert math.isfinite(result["predicted_ms"]) and result["predicted_ms"] > 0
    assert result["entries_measured"] > 0  # measured again, not taken from the damaged file
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and str(path) in lines[0], err


def test_a_search_latency_limit_cannot_be_fooled(monkeypatch, tmp_path, capsys):
    """The search's own predictor (`nas.search.runner.make_predictor`, reading the cache under
    $HYBRID_NAS_CACHE) with one entry made hugely negative: the space's smallest network, honestly
    predicted at P ms, must not come out within a limit of P / 4 (the damaged file says < 0)."""
    from nas.search.runner import make_predictor
    from nas.search.searcher import relative_violation
    from nas.search.settings import SearchSettings

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    space = SearchSpace.from_dict(yaml.safe_load(TINY_SPACE.format(name="tiny")))
    smallest, _ = space.smallest()
    honest = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, clock="cpu", **FAST)
    honest_ms = honest.predict(smallest)
    damage_entry(honest.path, -12999.96)
    limit = honest_ms / 4
    settings = SearchSettings(budget_macs=10**9, latency_ms=limit, data="digits")
    with pytest.raises(UserError, match="no architecture of the space is likely to meet --latency-ms"):
        make_predictor(settings, space)  # refused, as for any limit below the smallest network
    assert "'ms' is negative" in capsys.readouterr().err
    predictor = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, clock="cpu", **FAST)
    assert relative_violation(predictor.predict(smallest), limit) > 0  # over the limit: never trained


# -- files that are not tables: /dev/zero, FIFOs, links ------------------------------------------------


def _memory_cap() -> None:
    """In the child: 6 GiB of address space (torch maps ~3): reading /dev/zero whole would fail."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def _nas_latency(cache: Path, cfg_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1")
    return subprocess.run([*NAS, "latency", str(cfg_path), "--resolution", str(RES), "--repeats", "1", "--warmup", "0",
                           "--predict", "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=_memory_cap)  # fmt: skip


def _one_error(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_cache_linked_to_dev_zero_is_refused_without_reading_it(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache).path
    path.symlink_to("/dev/zero")
    # only in a child under a memory cap: without the defence, reading /dev/zero takes all memory
    cfg_path = tmp_path / "tiny.yaml"
    make_tiny_cfg().save(cfg_path)
    started = time.monotonic()
    _one_error(_nas_latency(cache, cfg_path), "is a symbolic link")
    assert time.monotonic() - started < 60
    assert path.is_symlink()  # left as it was


def test_a_fifo_in_place_of_the_cache_is_not_waited_on(tmp_path):
    """Not a regular file: not a table. The cache is measured again and the FIFO replaced."""
    cache = tmp_path / "cache"
    cache.mkdir()
    path = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache).path
    os.mkfifo(path)
    cfg_path = tmp_path / "tiny.yaml"
    make_tiny_cfg().save(cfg_path)
    done = _nas_latency(cache, cfg_path)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "not a regular file" in warnings[0] and "Traceback" not in done.stderr
    assert path.is_file() and check_table(json.loads(path.read_text()), path)


def test_a_fifo_in_place_of_the_lock_is_refused_not_waited_on(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    lock = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache).path.with_suffix(".lock")
    os.mkfifo(lock)
    cfg_path = tmp_path / "tiny.yaml"
    make_tiny_cfg().save(cfg_path)
    _one_error(_nas_latency(cache, cfg_path), "not a regular file")


def test_a_symlinked_lock_is_not_followed(pristine, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    predictor = LatencyPredictor.for_device("cpu", threads=1, batch_size=1, cache_dir=cache, **FAST)
    predictor.path.with_suffix(".lock").symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        predictor.predict(make_tiny_cfg(), RES)  # measures, then saves under the lock
    assert target.read_text() == "keep me\n" and not predictor.path.exists()

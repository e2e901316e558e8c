"""Bounds on every size knob (issue 24, part 5): an absurd value in a model config, a search space
or a budget flag is one line `error: ...` on stderr, exit status 2, no traceback, within a couple
of seconds and before anything is built, counted, written or started.

`depth: 1000000000` used to walk a billion blocks for 26 s and end in a MemoryError traceback;
``width: 1000000`` asked for a 4 TB tensor, ``embed_stride: 0`` divided by zero, ``mlp_ratio:
[.nan]`` in a space raised a ValueError, and ``--budget 1e400`` was "not positive". The bounds and
their reasons are the table of `search_space.config` (and a block family's own, e.g. ACmix's).

The commands run in-process (the ``cli`` fixture of conftest.py) with a wall-clock bound; one
case runs the real ``nas search`` entry point in a subprocess, to show it refuses before Ray.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import fields

import pytest
import yaml
from fault_helpers import TINY_SPACE
from tiny_config import make_tiny_cfg

from search_space import ConfigError, SearchSpace, StageConfig, load_zoo, zoo_names
from search_space.blocks.registry import BlockType, block_types, register
from search_space.config import LIMITS, MAX_RESOLUTION, Limit

FAST_S = 3.0  # validation takes milliseconds; the margin is for a loaded 2-core CI machine
BIG = 10**4000  # a 4,001-digit integer: YAML reads it (below Python's 4,300-digit limit)


@pytest.fixture(scope="module", autouse=True)
def _warm_cli():
    """Import the commands once, so the time bounds below measure the refusal, not the imports."""
    from nas.cli import build_parser

    build_parser()


def refused(cli, *argv, needle: str) -> str:
    started = time.monotonic()
    code, out, err = cli(*argv)
    elapsed = time.monotonic() - started
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and "error: " in lines[0], err[-2000:]  # ours, or argparse's "nas X: error: "
    assert "Traceback" not in err and out == ""
    assert needle in lines[0], lines[0]
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    return lines[0]


# -- model configs: nas profile -----------------------------------------------------------------


def _stage(i: int, **changes):  # the tiny config: stages van, cmt, acmix, cmt
    return lambda d: d["stages"][i].update(changes)


def _top(**changes):
    return lambda d: d.update(changes)


def _sub(key: str, **changes):
    return lambda d: d[key].update(changes)


CONFIG_CASES = [
    ("depth", _stage(0, depth=10**9), "depth 1000000000 is above the limit of 1,024"),
    ("depth-4000-digits", _stage(0, depth=BIG), "depth ~10^4000 is above the limit of 1,024"),
    ("width", _stage(0, width=10**6), "width 1000000 is above the limit of 16,384"),
    ("width-cmt", _stage(1, width=2**20), "width 1048576 is above the limit of 16,384"),
    ("embed-stride-0", _stage(0, embed_stride=0), "embed_stride must be a power of 2, got 0"),
    ("embed-stride-huge", _stage(0, embed_stride=2**40), "embed_stride 1099511627776 is above the limit of 32"),
    ("embed-kernel", _stage(0, embed_kernel=10**6), "embed_kernel 1000000 is above the limit of 63"),
    ("mlp-ratio-nan", _stage(0, mlp_ratio=math.nan), "mlp_ratio must be a finite number, got nan"),
    ("mlp-ratio-inf", _stage(0, mlp_ratio=math.inf), "mlp_ratio must be a finite number, got inf"),
    ("mlp-ratio-huge", _stage(0, mlp_ratio=1e300), "mlp_ratio must be in (0, 16]"),
    ("heads-cmt", _stage(1, heads=4096, width=4096), "heads 4096 is above the limit of 1,024"),
    ("heads-ignored-by-van", _stage(0, heads=10**9), "heads 1000000000 is above the limit of 1,024"),
    ("kv-reduction", _stage(1, kv_reduction=10**6), "kv_reduction 1000000 is above the limit of 512"),
    ("lka-kernel", _stage(0, lka_kernel=10**6 + 1), "lka_kernel 1000001 is above the limit of 63"),
    ("lka-dilated-kernel", _stage(0, lka_dilated_kernel=101), "lka_dilated_kernel 101 is above the limit of 63"),
    ("lka-dilation", _stage(0, lka_dilation=10**6), "lka_dilation 1000000 is above the limit of 64"),
    ("acmix-attn-kernel", _stage(2, attn_kernel=33), "attn_kernel 33 is above acmix's limit of 31"),
    ("acmix-conv-kernel", _stage(2, conv_kernel=17), "conv_kernel 17 is above acmix's limit of 15"),
    ("attn-kernel-ignored-by-van", _stage(0, attn_kernel=10**6 + 1), "attn_kernel 1000001 is above the limit of 63"),
    ("resolution", _top(resolution=2**20), "resolution 1048576 is above the limit of 2,048"),
    ("num-classes", _top(num_classes=10**12), "num_classes 1000000000000 is above the limit of 100,000"),
    ("in-channels", _top(in_channels=10**6), "in_channels 1000000 is above the limit of 1,024"),
    ("stem-channels", _sub("stem", channels=10**7), "stem.channels 10000000 is above the limit of 16,384"),
    ("fc-dim", _sub("head", kind="conv_bn_act", fc_dim=10**7), "head.fc_dim 10000000 is above the limit of 16,384"),
    ("head-dropout-nan", _sub("head", dropout=math.nan), "head dropout must be in [0, 1)"),
    ("drop-path-rate-inf", _top(drop_path_rate=math.inf), "drop_path_rate must be in [0, 1)"),
]  # fmt: skip


@pytest.mark.parametrize("edit, needle", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_an_absurd_config_value_is_one_line_at_once(cli, tmp_path, edit, needle):
    data = make_tiny_cfg().to_dict()
    edit(data)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = refused(cli, "profile", path, needle=needle)
    assert len(line) < 300  # a 4,000-digit number is not printed whole


def test_the_largest_allowed_values_still_validate():
    """The bounds are inclusive and sit far above real models: a config at several of them is valid."""
    base = make_tiny_cfg()
    stages = list(base.stages)
    stages[0] = StageConfig("van", 1024, 16, mlp_ratio=16.0, lka_kernel=63, lka_dilated_kernel=63, lka_dilation=64)
    stages[2] = StageConfig("acmix", 1, 32, heads=2, attn_kernel=31, conv_kernel=15)
    cfg = base.replace(stages=tuple(stages), num_classes=100_000, resolution=MAX_RESOLUTION)
    cfg.validate()  # no ConfigError
    with pytest.raises(ConfigError, match="depth 1025 is above"):
        base.replace(stages=(StageConfig("van", 1025, 16), *base.stages[1:])).validate()


# -- search spaces: nas sample --space -------------------------------------------------------------


def _space_stage(i: int, **changes):
    return lambda d: d["stages"][i].update(changes)


def _space_top(**changes):
    return lambda d: d.update(changes)


SPACE_CASES = [
    ("depth", _space_stage(0, depth=10**9), "stages[0].depth: depth 1000000000 is above the limit of 1,024"),
    ("depth-range-huge", _space_stage(0, depth={"low": 1, "high": 10**9}), "values; at most 1024"),
    ("depth-range-stepped", _space_stage(0, depth={"low": 1, "high": 10**9, "step": 10**7}),
     "depth 1000000000 is above the limit of 1,024"),
    ("depth-range-4000-digits", _space_stage(0, depth={"low": 1, "high": BIG}), "values; at most 1024"),
    ("width", _space_stage(0, width=[16, 10**6]), "width 1000000 is above the limit of 16,384"),
    ("mlp-ratio-nan", _space_stage(0, mlp_ratio=[math.nan]), "mlp_ratio must be a finite number, got nan"),
    ("mlp-ratio-inf", _space_stage(1, mlp_ratio=[2.0, math.inf]), "mlp_ratio must be a finite number, got inf"),
    ("mlp-ratio-huge", _space_stage(1, mlp_ratio=[1e300]), "mlp_ratio must be in (0, 16]"),
    ("heads", _space_stage(0, heads=[4096]), "heads 4096 is above the limit of 1,024"),
    ("kv-reduction", _space_stage(0, kv_reduction=[10**6]), "kv_reduction 1000000 is above the limit of 512"),
    ("lka-kernel", _space_stage(0, lka_kernel=[10**6 + 1]), "lka_kernel 1000001 is above the limit of 63"),
    ("lka-dilation", _space_stage(1, lka_dilation=[10**6]), "lka_dilation 1000000 is above the limit of 64"),
    ("acmix-attn-kernel", _space_stage(2, attn_kernel=[3, 33]), "stages[2].attn_kernel: attn_kernel 33 is above acmix's limit of 31"),
    ("acmix-conv-kernel", _space_stage(2, conv_kernel=[17]), "conv_kernel 17 is above acmix's limit of 15"),
    ("resolution", _space_top(resolution=8192), "resolution 8192 is above the limit of 2,048"),
    ("num-classes", _space_top(num_classes=10**9), "num_classes 1000000000 is above the limit of 100,000"),
    ("stem-channels", _space_top(stem_channels=[8, 10**8]), "stem_channels 100000000 is above the limit of 16,384"),
    ("head-fc-dim", _space_top(head_fc_dim=[0, 10**8]), "head_fc_dim 100000000 is above the limit of 16,384"),
]  # fmt: skip


@pytest.mark.parametrize("edit, needle", [c[1:] for c in SPACE_CASES], ids=[c[0] for c in SPACE_CASES])
def test_an_absurd_space_value_is_one_line_at_once(cli, tmp_path, edit, needle):
    data = yaml.safe_load(TINY_SPACE.format(name="tiny"))
    edit(data)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "samples"
    line = refused(cli, "sample", "--space", space, "--out", out, needle=needle)
    assert not out.exists()
    assert len(line) < 300


def test_a_knob_no_offered_block_reads_is_still_bounded():
    """heads in a VAN-only stage is never sampled, but an absurd value is refused all the same
    (as ArchConfig refuses it in a stage whose block ignores it)."""
    data = yaml.safe_load(TINY_SPACE.format(name="tiny"))
    data["stages"][0].update(block=["van"], heads=[10**9])
    with pytest.raises(ConfigError, match="heads 1000000000 is above the limit of 1,024"):
        SearchSpace.from_dict(data)


# -- budget flags: nas search, refused before Ray ---------------------------------------------------


FLAG_CASES = [
    ("budget-1e400", ["--budget", "1e400"], "MAC budget '1e400' is not a finite number"),
    ("budget-1e400G", ["--budget", "1e400G"], "is not a finite number"),
    ("budget-0.4", ["--budget", "0.4"], "MAC budget '0.4' is less than 1"),
    ("params-1e400", ["--budget", "4G", "--params", "1e400"], "parameter count '1e400' is not a finite number"),
    ("latency-1e400", ["--budget", "4G", "--latency-ms", "1e400"], "--latency-ms '1e400' is not a finite number"),
    ("latency-inf", ["--budget", "4G", "--latency-ms", "inf"], "--latency-ms 'inf' is not a finite number"),
    ("latency-nan", ["--budget", "4G", "--latency-ms", "nan"], "--latency-ms 'nan' is not a finite number"),
    ("data-fraction-nan", ["--budget", "4G", "--data-fraction", "nan"], "--data-fraction nan must be in (0, 1]"),
    ("proxy-width-inf", ["--budget", "4G", "--proxy-width", "inf"], "--proxy-width inf must be in (0, 4]"),
    ("proxy-resolution", ["--budget", "4G", "--proxy-resolution", "1048576"], "above 2048"),
]  # fmt: skip


@pytest.mark.parametrize("flags, needle", [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_a_non_finite_flag_is_refused_before_ray(cli, tmp_path, flags, needle):
    out = tmp_path / "run"
    refused(cli, "search", *flags, "--data", "digits", "--out", out, needle=needle)
    assert not out.exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_the_real_entry_point_refuses_an_infinite_budget_quickly(tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nas.cli", "search", "--budget", "1e400", "--data", "digits",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == "error: MAC budget '1e400' is not a finite number", done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    assert elapsed < 60  # imports only; starting Ray and a trial would take far longer (and say so)


# -- the bounds themselves -------------------------------------------------------------------------


def test_every_numeric_stage_field_and_block_knob_has_a_bound():
    numeric = [f.name for f in fields(StageConfig) if str(f.type) in ("int", "float")]
    assert numeric and all(name in LIMITS for name in numeric)
    for bt in block_types():
        for knob, own in bt.limits.items():
            assert knob in bt.knobs and LIMITS[knob].low <= own.low <= own.high <= LIMITS[knob].high
            assert own.why


def test_a_family_cannot_loosen_a_backstop():
    from search_space.blocks.van import van_block_cost

    loose = BlockType(name="loose_test_family", build=lambda s, n, drop_path=0.0: None, cost=van_block_cost,
                      knobs=("conv_kernel",), limits={"conv_kernel": Limit(1, 127, "too loose")})  # fmt: skip
    with pytest.raises(ValueError, match="within"):
        register(loose)
    assert "loose_test_family" not in [bt.name for bt in block_types()]


@pytest.mark.parametrize("name", zoo_names())
def test_the_zoo_and_the_default_space_are_within_bounds(name):
    load_zoo(name).validate()
    SearchSpace.default().validate()

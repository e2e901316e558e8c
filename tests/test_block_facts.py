"""What the engine knows about a block or attention type is declared in that type's file.

Plots take each attention module's hatch and label from the registry (a new module gets a hatch
no other one has), cards name the block families an architecture uses (and its space offers) by
their registered labels, scaling shows a knob only for the blocks that read it, and no module
downstream names a block or attention type in a rule. A block file dropped into
search_space/blocks/ is counted, carded and plotted with no other edit.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_block_contract import copy_with_new_block
from test_results import make_run

from results import load_run
from results.cards import ArtifactInfo, blocks_used, model_card
from results.plots import block_mix_figure
from results.run import TrialRecord
from scaling.compound import expand, knob_rows
from search_space import ArchConfig, load_zoo
from search_space.attention import NO_ATTENTION, attention_names, attention_style, attention_styles, get_attention
from search_space.attention import registry as attention_registry
from search_space.blocks import block_names, block_types, get_block
from search_space.config import KNOB_FIELDS

REPO = Path(__file__).resolve().parents[1]


# -- attention modules: each has its own plot style ---------------------------------------------


def test_every_attention_module_has_its_own_hatch_and_label() -> None:
    styles = attention_styles()
    assert set(styles) == set(attention_names()) and len(styles) >= 6
    drawn = [name for name in styles if name != NO_ATTENTION]
    assert all(styles[name].hatch for name in drawn), "a module without hatching is drawn as 'none'"
    assert len({styles[name].hatch for name in styles}) == len(styles)  # none's "" included: all distinct
    assert len({styles[name].label for name in styles}) == len(styles)
    assert styles[NO_ATTENTION].hatch == ""


def test_a_new_attention_module_gets_a_distinct_hatch(monkeypatch) -> None:
    """Registered without a hatch, a module is handed one nobody else has; declaring a taken one
    is refused."""
    monkeypatch.setattr(attention_registry, "_REGISTRY", dict(attention_registry._REGISTRY))
    monkeypatch.setattr(attention_registry, "_names", None)
    monkeypatch.setattr(attention_registry, "_styles", None)
    se = get_attention("se")
    attention_registry.register(dataclasses.replace(se, name="zz_new", label="", hatch=None))
    style = attention_style("zz_new")
    assert style.hatch and style.hatch not in {s.hatch for n, s in attention_styles().items() if n != "zz_new"}
    assert style.label == "ZZ_NEW"
    with pytest.raises(ValueError, match="hatch '//' is already se's"):
        attention_registry.register(dataclasses.replace(se, name="zz_copy", hatch="//"))
    with pytest.raises(ValueError, match="would draw it as 'none'"):
        attention_registry.register(dataclasses.replace(se, name="zz_blank", hatch=""))


def _trial(number: int, cfg: ArchConfig) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", status="complete", values=(0.5,), choices={}, constraints={},
                       config=cfg, macs=1_000_000, val_acc=0.5)  # fmt: skip


def test_the_block_mix_plot_draws_every_attention_module_by_its_own_hatch() -> None:
    """gc, cat and wavelet used to be drawn as "none" (the plot knew 3 of the 6 modules)."""
    base = load_zoo("cmt_s").replace(resolution=64)
    names = [n for n in attention_names() if n != NO_ATTENTION]
    trials = []
    for i, name in enumerate(names):
        stages = tuple(dataclasses.replace(s, channel_attention=name) for s in base.stages)
        trials.append(_trial(i, base.replace(stages=stages)))
    fig = block_mix_figure(trials)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0 and p.get_width() < 1]
    assert [b.get_hatch() for b in bars] == [attention_style(n).hatch for n in names for _ in base.stages]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [f"{attention_style(n).label} attention" for n in names] == [t for t in legend if t.endswith("attention")]
    assert {get_block(b).display_name for b in block_names()} <= set(legend)


# -- cards name the blocks ----------------------------------------------------------------------


def _van_only() -> ArchConfig:
    return load_zoo("van_b0").replace(resolution=64, num_classes=10)


def test_card_prose_names_the_blocks_used_and_offered(tmp_path) -> None:
    van = _van_only()
    hybrid = van.replace(stages=(van.stages[0], dataclasses.replace(load_zoo("cmt_s").stages[1], depth=1),
                                 *van.stages[2:]))  # fmt: skip
    hybrid.validate()
    path = make_run(tmp_path, "run", n=2, configs=[van, hybrid], statuses=["complete", "complete"], write_pareto=False)
    run = load_run(path)
    cards = [model_card(run, run.trial(i), cfg, [ArtifactInfo("yaml", tmp_path / "m.yaml")], weights_seed=0)
             for i, cfg in enumerate((van, hybrid))]  # fmt: skip
    for card in cards:
        assert "VAN / CMT / ACmix" not in card
        offered = sorted(get_block(b).display_name for b in block_names())  # the default space offers every family
        assert f"a search space of {', '.join(offered[:-1])} and {offered[-1]} blocks" in card
    intro = [line for line in cards[0].splitlines() if line.startswith("Architecture found")][0]
    assert "it uses VAN in stages 1-4." in intro and "CMT" not in intro.split("it uses")[1]
    assert "it uses VAN in stages 1, 3 and 4 and CMT in stage 2." in cards[1]
    assert blocks_used(hybrid) == "VAN in stages 1, 3 and 4 and CMT in stage 2"


# -- scaling shows a knob only where a block reads it -------------------------------------------


def test_scaling_table_shows_heads_only_for_blocks_reading_heads() -> None:
    van = load_zoo("van_b0")
    scaled = expand(van, 1.0)
    assert not [row for row in knob_rows(van, scaled.config) if row[0] == "heads"]  # no block reads heads
    assert scaled.to_dict()["heads"] == [None] * 4
    hybrid = load_zoo("cmt_s")
    hybrid = hybrid.replace(stages=(dataclasses.replace(hybrid.stages[0], block="van"), *hybrid.stages[1:]))
    scaled = expand(hybrid, 1.0)
    rows = {row[0]: row[1:] for row in knob_rows(hybrid, scaled.config)}
    assert rows["heads"] == ["-,2,4,8", "-,2,4,8"]  # stage 1 is VAN's: it reads no heads
    assert rows["K/V reduction"][0] == "-,4,2,1"
    assert scaled.to_dict()["heads"] == [None, 2, 4, 8]
    readers = {b.name for b in block_types() if b.reads("heads")}
    assert readers and "van" not in readers


# -- no rule downstream names a block or attention type -----------------------------------------

SCANNED = [*sorted((REPO / "results").glob("*.py")), *sorted((REPO / "scaling").glob("*.py")),
           REPO / "search_space" / "config.py"]  # fmt: skip


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of ``path`` outside docstrings (comments are not in the tree)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]  # fmt: skip


def test_no_module_downstream_names_a_block_or_attention_type() -> None:
    """A rule of a block or attention type lives in its file and is asked through the registries;
    ``"van"`` or ``"gc"`` as a literal in results/, scaling/ or config.py is such a rule in the
    wrong place (zoo names such as ``"van_b0"`` and prose are not names of a type). ``"none"`` is
    also a stem kind and an out_norm, and the attention registry exports it as NO_ATTENTION."""
    names = (set(block_names()) | set(attention_names())) - {NO_ATTENTION}
    assert {"van", "cmt", "acmix", "se", "eca", "gc", "cat", "wavelet"} <= names
    found = [f"{path.relative_to(REPO)}:{line}: {value!r}"
             for path in SCANNED for line, value in _string_literals(path) if value.strip().lower() in names]  # fmt: skip
    assert found == []


def test_knob_rules_are_the_blocks_own() -> None:
    """config.py keeps no list of kernels to check: the odd-kernel rule is declared by the blocks
    that read the kernels, and holds for the knob in every stage, as the bounds do."""
    text = (REPO / "search_space" / "config.py").read_text()
    assert "ODD_KNOBS" not in text
    odd = {knob for b in block_types() for knob in b.odd}
    assert odd and odd <= set(KNOB_FIELDS)
    for b in block_types():
        assert set(b.odd) <= set(b.knobs)
    cfg = load_zoo("cmt_s")
    knob = sorted(odd)[0]
    readers = [b for b in block_types() if knob in b.odd]
    ignoring = [s for s in cfg.stages if s.block not in {b.name for b in readers}]
    assert ignoring, "cmt_s should have a stage whose block ignores the knob"
    assert get_block(ignoring[0].block).knob_problem(dataclasses.replace(ignoring[0], **{knob: 4})) == (
        f"{knob} must be a positive odd number, got 4"
    )


# -- one new file ---------------------------------------------------------------------------------

CHECK_DUMMY_BLOCK = """
import json, sys
from results.cards import blocks_used, stage_table
from results.plots import block_mix_figure
from results.run import TrialRecord
from search_space import ArchConfig, StageConfig, StemConfig, analytic_cost, traced_cost
from search_space.blocks import get_block

stages = tuple(StageConfig("convnext", 1, w, mlp_ratio=2.0, conv_kernel=5, channel_attention=a)
               for w, a in ((16, "se"), (16, "none"), (32, "eca"), (32, "se")))
cfg = ArchConfig(stages=stages, name="dummy", resolution=64, num_classes=10, stem=StemConfig("conv3", 8))
cfg.validate()
trial = TrialRecord(number=0, state="COMPLETE", status="complete", values=(0.5,), choices={}, constraints={},
                    config=cfg, macs=analytic_cost(cfg).macs, val_acc=0.5)
ax = block_mix_figure([trial]).axes[0]
print(json.dumps({
    "module": get_block("convnext").build.__module__,
    "counted": [list(analytic_cost(cfg)), list(traced_cost(cfg))],
    "card": stage_table(cfg), "uses": blocks_used(cfg),
    "colours": sorted({"#%02x%02x%02x" % tuple(round(255 * c) for c in p.get_facecolor()[:3])
                       for p in ax.patches if p.get_height() > 0 and p.get_width() < 1}),
    "legend": [t.get_text() for t in ax.get_legend().get_texts()],
}))
"""


def test_a_dropped_in_block_file_is_counted_carded_and_plotted(tmp_path: Path) -> None:
    copy_with_new_block(tmp_path / "tree")  # its test file's ConvNeXt-like family: no label, its own colour
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'tree'}{os.pathsep}{REPO}", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", CHECK_DUMMY_BLOCK], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["module"] == "search_space.blocks.convnext"
    analytic, traced = report["counted"]
    assert analytic == traced and analytic[0] > 0
    rows = [line for line in report["card"].splitlines() if "| convnext |" in line]
    assert len(rows) == 4 and all("| DW 5x5 |" in row for row in rows)
    assert report["uses"] == "convnext in stages 1-4"
    assert report["colours"] == ["#9467bd"]  # the colour its file declares
    assert "convnext" in report["legend"]
    assert {"SE attention", "ECA attention"} <= set(report["legend"])


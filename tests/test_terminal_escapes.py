"""Names and paths with control characters are printed and written escaped (`search_space.text`):
a config `name:` holding ANSI escapes cannot recolour the terminal or set its title, a run directory
whose name holds a newline cannot forge a row of `nas runs` or a section of a model card."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_results import make_run

from nas.cli import main
from results import load_run
from results.cards import ArtifactInfo, model_card
from search_space.text import markdown, markdown_code, printable

# sets the terminal's title, turns the text red, then starts a line of its own
HOSTILE = "evil\x1b]0;pwned\x07\x1b[31m\nforged row|`x"
SHOWN = "evil\\x1b]0;pwned\\x07\\x1b[31m\\nforged row|`x"  # what a terminal must show instead
NAS = [sys.executable, "-m", "nas.cli"]


def assert_inert(text: str) -> None:
    """No raw escape, bell or other control character but the line ends."""
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert all(c.isprintable() for line in text.splitlines() for c in line), repr(text)


# -- the escaping function ---------------------------------------------------------------------------


def test_printable_escapes_controls_and_keeps_ordinary_unicode():
    assert printable(HOSTILE) == SHOWN
    assert printable("a\tb\rc\x00d\x7fe\x85f\x9b") == "a\\tb\\rc\\x00d\\x7fe\\x85f\\x9b"  # C0, DEL, C1
    assert printable("left\u202eright\u2028\ufeff") == "left\\u202eright\\u2028\\ufeff"  # bidi override, separators
    assert printable("run-\udcff") == "run-\\udcff"  # an undecodable byte of a file name (surrogateescape)
    assert printable("\U000e0001") == "\\U000e0001"
    ordinary = "Modèle κ 日本語 😀 [red]x[/red] a\\b ~/runs/é"
    assert printable(ordinary) == ordinary
    assert printable(Path("/tmp/x\ny")) == "/tmp/x\\ny"
    assert printable(SHOWN) == SHOWN  # escaping twice changes nothing more


def test_markdown_escapes_cells_and_code_spans():
    assert markdown("a|b\nc") == "a\\|b\\nc"
    assert markdown_code("runs/x") == "`runs/x`"
    assert markdown_code("a`b") == "``a`b``"
    assert markdown_code("`a") == "`` `a ``"
    assert markdown_code("x\x1b[31m\n## y") == "`x\\x1b[31m\\n## y`"


# -- nas runs / status / compare on a run directory with a hostile name ------------------------------


@pytest.fixture()
def runs(tmp_path) -> tuple[Path, Path]:
    return make_run(tmp_path, HOSTILE, n=6, seed=2), make_run(tmp_path, "plain", n=6, seed=3)


def test_nas_runs_lists_a_hostile_directory_on_one_escaped_row(tmp_path, runs, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert_inert(out)
    header, *rows = out.splitlines()
    assert header.startswith("run ") and len(rows) == 2, out  # no forged row
    assert rows[0].startswith("evil\\x1b]0;pwned\\x07\\x1b[31m") and rows[1].startswith("plain"), out
    assert not any(line.startswith("forged") for line in out.splitlines())

    assert main(["runs", str(tmp_path), "--json"]) == 0  # JSON keeps the name exactly (escaped by JSON)
    raw = capsys.readouterr().out
    assert_inert(raw)
    assert [r["run"] for r in json.loads(raw)] == [HOSTILE, "plain"]


def test_nas_status_and_compare_print_a_hostile_path_escaped(runs, capsys):
    hostile, plain = runs
    assert main(["status", str(hostile)]) == 0
    out = capsys.readouterr().out
    assert_inert(out)
    assert out.startswith(f"{printable(hostile)}: finished"), out

    assert main(["compare", str(hostile), str(plain)]) == 0
    out = capsys.readouterr().out
    assert_inert(out)
    assert out.startswith(f"A: {printable(hostile)}  (finished") and f"\nB: {plain}  (" in out, out


def test_an_error_quoting_a_hostile_path_is_one_escaped_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / HOSTILE)]) == 2
    err = capsys.readouterr().err
    assert_inert(err)
    # one_line turns line breaks into spaces (a YAML error's own lines too) and escapes the rest
    assert err == f"error: {tmp_path}/{SHOWN.replace(chr(92) + 'n', ' ')}: no such directory\n"


# -- model cards ---------------------------------------------------------------------------------------


def test_model_card_of_a_hostile_name_in_a_hostile_run(runs, tmp_path):
    run = load_run(runs[0])
    trial = run.best()
    assert trial is not None and trial.config is not None
    cfg = trial.config.replace(name=HOSTILE)
    yaml_file = tmp_path / 'x`"\n.yaml'
    card = model_card(run, trial, cfg, [ArtifactInfo("yaml", yaml_file)], weights_seed=0)
    assert_inert(card)
    lines = card.splitlines()
    assert lines[0] == f"# {markdown(HOSTILE)}"
    assert [ln for ln in lines if ln.startswith("# ")] == [lines[0]]  # no forged title or section
    assert not any(ln.startswith("forged") for ln in lines)
    assert f"in run {markdown_code(run.path)} (trial" in card
    assert f"- {markdown_code(yaml_file.name)}: the model config" in card
    assert 'cfg = ArchConfig.load("x`\\"\\n.yaml")' in card  # a valid Python literal of the file name


def test_nas_train_prints_and_writes_a_hostile_name_escaped(tmp_path, tiny_cfg):
    config = tmp_path / "hostile.yaml"
    config.write_text(tiny_cfg.replace(name=HOSTILE).to_yaml())
    kept = tmp_path / "kept\x1b[31m\nx"
    done = subprocess.run([*NAS, "train", str(config), "--data", "digits", "--epochs", "1", "--data-fraction", "0.2",
                           "--threads", "1", "--no-progress", "--save", str(kept)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_inert(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"training {SHOWN} on digits") and lines[1].startswith("epoch   1/1"), done.stdout
    assert lines[2].startswith(f"{SHOWN} at 32 px") and lines[3].startswith(f"saved in {printable(kept)}: ")
    assert len(lines) == 4

    card = (kept / "card.md").read_text()
    assert_inert(card)
    card_lines = card.splitlines()
    assert card_lines[0] == f"# {markdown(HOSTILE)} (trained)"
    assert [ln for ln in card_lines if ln.startswith("# ")] == [card_lines[0]]
    assert not any(ln.startswith("forged") for ln in card_lines)
    assert f"from {markdown_code(config)};" in card

    again = subprocess.run([*NAS, "train", "--save", str(kept), "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert_inert(again.stdout)
    assert again.stdout.startswith(f"{printable(kept)}: training finished (1 epochs")


def test_scaling_member_card_of_a_hostile_base(tmp_path, tiny_cfg, capsys):
    from scaling.cli import main as scaling_main

    config = tmp_path / "hostile.yaml"
    config.write_text(tiny_cfg.replace(name=HOSTILE).to_yaml())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib: no glyph for ESC in the plot's legend
        assert scaling_main(["family", "--config", str(config), "--phis", "0,1", "--names", "a,b",
                             "--out", str(tmp_path / "fam")]) == 0  # fmt: skip
    capsys.readouterr()
    (card_path,) = (tmp_path / "fam").glob("*_a.md")
    card = card_path.read_text()
    assert_inert(card)
    assert f"base **{markdown(HOSTILE)}** scaled" in card
    assert f"- config {markdown_code(HOSTILE)} (given with --config)" in card
    assert [ln for ln in card.splitlines() if ln.startswith("# ")] == [card.splitlines()[0]]


def test_nas_profile_prints_a_hostile_name_escaped(tmp_path, tiny_cfg, capsys):
    config = tmp_path / "hostile.yaml"
    config.write_text(tiny_cfg.replace(name=HOSTILE).to_yaml())
    assert main(["profile", str(config)]) == 0
    out = capsys.readouterr().out
    assert_inert(out)
    assert out.startswith(f"{SHOWN} at 64x64")

"""One vocabulary (docs/vocabulary.md): one flag and one default per concept on every command.

The real argparse parsers of both CLIs are walked (built as `nas/cli.py` and `scaling/cli.py`
build them) and checked against the table of concepts below: a concept's flag appears on exactly
the commands listed, with the listed default; a flag that is an old spelling is never shown; every
old spelling still parses, hidden from --help, with exactly one notice line naming the new flag.
The library's defaults (`ProxySpec()`, `FidelitySettings()`, `FinalizeOptions()`, `scaling
coeffs`) are `train_proxy.proxy_defaults`' values. Also: --version and `python -m` of both CLIs,
py.typed markers, .venv/ ignored.
"""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path

import pytest

from nas.cli import build_parser as nas_parser
from nas.search import settings as S
from scaling.cli import build_parser as scaling_parser
from train_proxy import latency
from train_proxy import proxy_defaults as D
from train_proxy.latency_table import DEFAULT_TABLE_REPEATS, DEFAULT_TABLE_WARMUP

ROOT = Path(__file__).resolve().parents[1]
ANY = object()  # a default that is the command's own (a count of different things), not checked

# concept -> (flag, {command: default}). The commands are exactly those whose parser shows the
# flag; the default is what argparse gives when the flag is left out.
CONCEPTS: dict[str, tuple[str, dict[str, object]]] = {
    "data fraction": ("--data-fraction", {
        "nas search": None, "nas train": D.FULL_DATA_FRACTION, "nas finalize": D.FULL_DATA_FRACTION,
        "nas fidelity": D.DATA_FRACTION, "scaling coeffs": D.DATA_FRACTION}),
    "width": ("--proxy-width", {
        "nas search": None, "nas train": D.FULL_WIDTH, "nas finalize": D.FULL_WIDTH, "nas fidelity": D.WIDTH,
        "scaling coeffs": D.WIDTH}),
    "training resolution": ("--proxy-resolution", {
        "nas search": None, "nas train": D.RESOLUTION, "nas finalize": None, "nas fidelity": D.RESOLUTION,
        "nas score": D.RESOLUTION, "scaling coeffs": D.COEFFS_RESOLUTION}),
    "deploy resolution": ("--resolution", {"nas profile": None, "nas latency": None}),
    "reference resolution": ("--ref-resolution", {"nas fidelity": D.REF_RESOLUTION}),
    "reference epochs": ("--ref-epochs", {"nas fidelity": D.REF_EPOCHS}),
    "epochs": ("--epochs", {
        "nas search": None, "nas train": D.FULL_EPOCHS, "nas finalize": D.FULL_EPOCHS, "nas fidelity": D.EPOCHS,
        "scaling coeffs": D.EPOCHS}),
    "training batch": ("--batch-size", {
        "nas search": None, "nas train": D.BATCH_SIZE, "nas finalize": D.BATCH_SIZE, "nas fidelity": D.BATCH_SIZE,
        "scaling coeffs": D.BATCH_SIZE}),
    "latency batch": ("--latency-batch-size", {
        "nas latency": latency.DEFAULT_BATCH_SIZE, "nas latency-table build": latency.DEFAULT_BATCH_SIZE}),
    "score batch": ("--score-batch-size", {"nas score": D.SCORE_BATCH_SIZE}),
    "training device": ("--device", {"nas train": D.DEVICE, "nas finalize": D.DEVICE}),
    "training precision": ("--precision", {"nas train": D.PRECISION, "nas finalize": D.PRECISION}),
    "latency device": ("--latency-device", {
        "nas search": None, "nas latency": latency.DEFAULT_DEVICE, "nas latency-table build": latency.DEFAULT_DEVICE}),
    "latency warm-up": ("--warmup", {
        "nas latency": latency.DEFAULT_WARMUP, "nas latency-table build": latency.DEFAULT_WARMUP}),
    "latency repeats": ("--repeats", {
        "nas latency": latency.DEFAULT_REPEATS, "nas latency-table build": latency.DEFAULT_REPEATS}),
    "how many architectures": ("--trials", {"nas search": None, "nas sample": ANY, "nas fidelity": ANY}),
    "how many of the best": ("--top", {"nas status": ANY, "nas export": None, "nas finalize": None,
                                       "nas fidelity": None}),
    "resume": ("--resume", {"nas search": False, "nas train": False}),
    "seed": ("--seed", {
        "nas search": None, "nas train": D.SEED, "nas finalize": D.SEED, "nas fidelity": D.SEED, "nas score": D.SEED,
        "nas sample": D.SEED, "scaling coeffs": D.SEED}),
    "learning rate": ("--lr", {"nas train": D.LR, "nas finalize": D.LR}),
    "tolerance": ("--tolerance", {"scaling expand": 0.03, "scaling family": 0.03, "scaling coeffs": 0.03}),
}  # fmt: skip

# (command, old spelling, new flag, a value for it or None for a switch)
OLD_SPELLINGS = [
    ("nas search", "--device", "--latency-device", "cuda"),
    ("nas train", "--resolution", "--proxy-resolution", "64"),
    ("nas train", "--fraction", "--data-fraction", "0.5"),
    ("nas train", "--width-mult", "--proxy-width", "0.25"),
    ("nas finalize", "--resolution", "--proxy-resolution", "64"),
    ("nas fidelity", "--n", "--trials", "4"),
    ("nas fidelity", "--epochs-proxy", "--epochs", "2"),
    ("nas fidelity", "--epochs-ref", "--ref-epochs", "3"),
    ("nas fidelity", "--proxy-fraction", "--data-fraction", "0.2"),
    ("nas fidelity", "--top-k", "--top", "1"),
    ("nas sample", "--n", "--trials", "3"),
    ("nas score", "--resolution", "--proxy-resolution", "64"),
    ("nas score", "--batch-size", "--score-batch-size", "16"),
    ("nas latency", "--device", "--latency-device", "cuda"),
    ("nas latency", "--batch-size", "--latency-batch-size", "4"),
    ("nas latency-table build", "--device", "--latency-device", "cuda"),
    ("nas latency-table build", "--batch-size", "--latency-batch-size", "4"),
]
# the least each command needs to parse
BASE_ARGV = {
    "nas search": [], "nas train": ["van_b0"], "nas finalize": ["RUN"], "nas fidelity": [],
    "nas sample": ["--out", "x"], "nas score": ["cmt_ti", "--proxy", "synflow"], "nas latency": ["cmt_ti"],
    "nas latency-table build": ["--out", "t.json"],
}  # fmt: skip


def _walk(prog: str, parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prog, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _walk(f"{prog} {name}", sub)


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    found = dict(_walk("nas", nas_parser()))
    found.update(_walk("scaling", scaling_parser()))
    return found


def _shown(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}


def _hidden(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions if a.help is argparse.SUPPRESS for o in a.option_strings}


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    prog, *words = command.split()
    parser = nas_parser() if prog == "nas" else scaling_parser()
    return parser.parse_args([*words, *argv])


def test_every_concept_has_one_flag_on_exactly_its_commands(commands):
    flag_of = {flag: concept for concept, (flag, _) in CONCEPTS.items()}
    old = {o for _, o, _, _ in OLD_SPELLINGS}
    for concept, (flag, where) in CONCEPTS.items():
        having = {name for name, parser in commands.items() if flag in _shown(parser)}
        assert having == set(where), f"{concept}: {flag} is on {sorted(having)}, expected {sorted(where)}"
    for name, parser in commands.items():
        for option, action in _shown(parser).items():
            # an old spelling is never shown (unless it is another concept's flag, as --resolution)
            assert option not in old or option in flag_of, f"{name} shows the old spelling {option}"
            # a concept's destination is only ever reached by the concept's own flag
            for concept, (flag, _) in CONCEPTS.items():
                dest = flag.removeprefix("--").replace("-", "_")
                if action.dest == dest and option.startswith("--") and not option.startswith("--no-"):
                    assert option == flag, f"{name}: {option} sets {dest}, the {concept}, which is {flag}"
    # a spelling that was ever an alias of one concept is never a flag of another visible somewhere
    assert not {"--fraction", "--proxy-fraction", "--width-mult", "--top-k", "--n", "--epochs-proxy",
                "--epochs-ref", "--width"} & {o for p in commands.values() for o in _shown(p)}  # fmt: skip


def test_one_default_per_concept(commands):
    for concept, (flag, where) in CONCEPTS.items():
        for name, expected in where.items():
            action = _shown(commands[name])[flag]
            if expected is not ANY:
                assert action.default == expected, f"{name} {flag}: default {action.default!r}, expected {expected!r}"
    # nas search leaves its flags unset (a resume tells given ones apart); its defaults are these
    assert (S.DEFAULT_DATA_FRACTION, S.DEFAULT_PROXY_WIDTH, S.DEFAULT_PROXY_RESOLUTION, S.DEFAULT_EPOCHS,
            S.DEFAULT_BATCH_SIZE, S.DEFAULT_SEED) == (D.DATA_FRACTION, D.WIDTH, D.RESOLUTION, D.EPOCHS,
                                                      D.BATCH_SIZE, D.SEED)  # fmt: skip
    from results.settings import SearchSettings

    s = SearchSettings(budget_macs=1)
    assert (s.data_fraction, s.proxy_width, s.proxy_resolution, s.epochs, s.batch_size, s.seed, s.device) == (
        D.DATA_FRACTION, D.WIDTH, D.RESOLUTION, D.EPOCHS, D.BATCH_SIZE, D.SEED, latency.DEFAULT_DEVICE)
    # one latency measurement: the table's entries and a whole network's are timed the same way
    assert (latency.DEFAULT_WARMUP, latency.DEFAULT_REPEATS) == (DEFAULT_TABLE_WARMUP, DEFAULT_TABLE_REPEATS)
    from scaling.compound import DEFAULT_TOLERANCE

    assert CONCEPTS["tolerance"][1]["scaling coeffs"] == DEFAULT_TOLERANCE
    assert _shown(commands["nas train"])["--resume"].nargs == 0  # a switch everywhere
    assert _shown(commands["nas search"])["--resume"].nargs == 0


@pytest.mark.parametrize("command, old, new, value", OLD_SPELLINGS, ids=[f"{c}:{o}" for c, o, _, _ in OLD_SPELLINGS])
def test_an_old_spelling_parses_hidden_with_one_notice(commands, capsys, command, old, new, value):
    parser = commands[command]
    assert old in _hidden(parser) and old not in _shown(parser)
    assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", parser.format_help()), f"{old} in --help"
    assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", parser.format_usage())
    base = BASE_ARGV[command]
    as_new = _parse(command, [*base, new, value])
    assert capsys.readouterr().err == ""
    as_old = _parse(command, [*base, old, value])
    assert capsys.readouterr().err.splitlines() == [f"note: {old} is now {new}"]
    assert vars(as_old) == vars(as_new)


def test_the_old_spellings_are_all_listed(commands):
    """Every hidden option is a declared old spelling (`parser.old_spellings`), and this file lists them all."""
    declared = {(name, old, new) for name, parser in commands.items()
                for old, new in getattr(parser, "old_spellings", {}).items()}  # fmt: skip
    assert declared == {(c, o, n) for c, o, n, _ in OLD_SPELLINGS}
    for name, parser in commands.items():
        assert set(_hidden(parser)) == set(getattr(parser, "old_spellings", {})), name


def test_nas_train_resume_is_a_switch_and_the_old_form_still_works(capsys):
    new = _parse("nas train", ["--save", "kept", "--resume"])
    assert (new.save, new.resume, new.model) == ("kept", True, None) and capsys.readouterr().err == ""
    for argv in (["--resume", "kept"], ["--resume=kept"]):
        old = _parse("nas train", argv)
        assert vars(old) == vars(new)
        assert capsys.readouterr().err.splitlines() == ["note: --resume kept is now --save kept --resume"]
    # with --save given, a word after --resume is not its value
    other = _parse("nas train", ["--save", "kept", "--resume", "van_b0"])
    assert (other.save, other.resume, other.model) == ("kept", True, "van_b0") and capsys.readouterr().err == ""


def test_the_library_defaults_are_proxy_defaults(commands):
    from nas.finalize import FinalizeOptions
    from scaling.coeffs import DEFAULT_MAX_CANDIDATES, DEFAULT_TARGET, search_coefficients
    from scaling.compound import DEFAULT_TOLERANCE
    from train_proxy import ProxySpec
    from train_proxy.fidelity import FidelitySettings
    from train_proxy.trainer import warmup_epochs

    spec = ProxySpec()
    assert (spec.epochs, spec.resolution, spec.width_multiplier, spec.data_fraction, spec.batch_size, spec.seed,
            spec.lr, spec.weight_decay, spec.label_smoothing, spec.drop_path_rate, spec.device, spec.precision) == (
        D.EPOCHS, D.RESOLUTION, D.WIDTH, D.DATA_FRACTION, D.BATCH_SIZE, D.SEED, D.LR, D.WEIGHT_DECAY,
        D.LABEL_SMOOTHING, D.DROP_PATH, D.DEVICE, D.PRECISION)  # fmt: skip
    # one warm-up rule, applied where none is given
    assert warmup_epochs is D.warmup_epochs and spec.warmup_epochs == D.warmup_epochs(D.EPOCHS) == D.WARMUP_EPOCHS
    assert ProxySpec(epochs=3).warmup_epochs == pytest.approx(0.6) and ProxySpec(epochs=10).warmup_epochs == 1.0
    assert ProxySpec(epochs=3, warmup_epochs=0).warmup_epochs == 0

    f = FidelitySettings()
    assert (f.epochs_proxy, f.proxy_resolution, f.proxy_width, f.proxy_fraction, f.batch_size, f.seed,
            f.epochs_ref, f.ref_resolution, f.score_batch_size) == (
        D.EPOCHS, D.RESOLUTION, D.WIDTH, D.DATA_FRACTION, D.BATCH_SIZE, D.SEED, D.REF_EPOCHS, D.REF_RESOLUTION,
        D.SCORE_BATCH_SIZE)  # fmt: skip
    fidelity = commands["nas fidelity"]  # the command takes its defaults from FidelitySettings
    for name, field in {"n": "trials", "top_k": "top", "threads": "threads"}.items():
        assert {f.name: f.default for f in fields(FidelitySettings)}[name] == fidelity.get_default(field)

    o = FinalizeOptions()
    assert (o.epochs, o.data_fraction, o.width, o.batch_size, o.lr, o.seed, o.device, o.precision) == (
        D.FULL_EPOCHS, D.FULL_DATA_FRACTION, D.FULL_WIDTH, D.BATCH_SIZE, D.LR, D.SEED, D.DEVICE, D.PRECISION)

    coeffs = {k: p.default for k, p in inspect.signature(search_coefficients).parameters.items()}
    assert (coeffs["epochs"], coeffs["proxy_resolution"], coeffs["proxy_width"], coeffs["data_fraction"],
            coeffs["batch_size"], coeffs["seed"], coeffs["tolerance"], coeffs["target"], coeffs["max_candidates"]) == (
        D.EPOCHS, D.COEFFS_RESOLUTION, D.WIDTH, D.DATA_FRACTION, D.BATCH_SIZE, D.SEED, DEFAULT_TOLERANCE,
        DEFAULT_TARGET, DEFAULT_MAX_CANDIDATES)  # fmt: skip
    coeffs_cli = _parse("scaling coeffs", ["--config", "cmt_s"])
    assert (coeffs_cli.target, coeffs_cli.max_candidates, coeffs_cli.tolerance) == (
        DEFAULT_TARGET, DEFAULT_MAX_CANDIDATES, DEFAULT_TOLERANCE)


def test_one_width_limit_one_fraction_check_everywhere(capsys):
    from nas.search.settings import parse_fraction, parse_width
    from scaling.coeffs import search_coefficients
    from search_space import UserError, resolve_config
    from train_proxy import ProxySpec
    from train_proxy.fidelity import FidelitySettings

    too_wide, too_much = D.MAX_WIDTH * 1.5, 1.5
    assert D.width_problem(D.MAX_WIDTH) is None and D.width_problem(too_wide)
    assert D.fraction_problem(1.0) is None and D.fraction_problem(too_much) and D.fraction_problem(float("nan"))
    ProxySpec(width_multiplier=D.MAX_WIDTH)
    for build in (lambda: ProxySpec(width_multiplier=too_wide), lambda: ProxySpec(data_fraction=too_much),
                  lambda: FidelitySettings(proxy_width=too_wide), lambda: FidelitySettings(proxy_fraction=too_much),
                  lambda: parse_width(str(too_wide)), lambda: parse_fraction(str(too_much)),
                  lambda: search_coefficients(resolve_config("cmt_ti"), proxy_width=too_wide),
                  lambda: search_coefficients(resolve_config("cmt_ti"), data_fraction=too_much)):  # fmt: skip
        with pytest.raises(UserError, match=re.escape(f"(0, {D.MAX_WIDTH:g}]") + "|" + re.escape("(0, 1]")):
            build()
    for command, base in (("nas train", ["van_b0"]), ("nas fidelity", []), ("scaling coeffs", ["--config", "x"])):
        for argv in (["--proxy-width", str(too_wide)], ["--data-fraction", str(too_much)]):
            with pytest.raises(SystemExit):
                _parse(command, [*base, *argv])
            assert "must be in (0, " in capsys.readouterr().err


@pytest.mark.parametrize("prog", ["nas", "scaling"])
def test_version(prog, capsys):
    parser = nas_parser() if prog == "nas" else scaling_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{prog} {version('hybrid-nas')}\n"


def test_python_dash_m_runs_both_clis():
    for prog in ("nas", "scaling"):
        done = subprocess.run([sys.executable, "-m", prog, "--version"], capture_output=True, text=True, timeout=300,
                              cwd=ROOT, check=False)  # fmt: skip
        assert done.returncode == 0 and done.stdout == f"{prog} {version('hybrid-nas')}\n", done.stderr
    done = subprocess.run([sys.executable, "-m", "nas", "profile", "nope_model"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, check=False)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nope_model" in done.stderr, done.stderr


def test_packages_ship_py_typed_and_venv_is_ignored():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    for package in ("search_space", "train_proxy", "results", "nas", "scaling"):
        assert (ROOT / package / "py.typed").is_file(), package
        assert "py.typed" in package_data.get(package, []), package
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()

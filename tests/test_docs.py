"""The documentation is checked like code.

* `mkdocs build --strict` passes: no broken link or anchor, no missing page, no warning (slow:
  mkdocstrings reads every public module);
* every `nas ...` / `scaling ...` command in a code block of the README and of the pages (docs/)
  parses with the real parsers (`nas.cli.build_parser`, `scaling.cli.build_parser`) and uses no
  old spelling of a flag;
* every Python block of the pages runs, unless an HTML comment right before it says what it needs
  (`<!-- needs: data: REASON -->` or `<!-- needs: gpu: REASON -->`);
* the CLI reference is generated from the parsers (docs/hooks/cli_reference.py) and lists every
  command and visible flag; every public name has a docstring for the API reference;
* the README is a front door: at most 150 lines, its first two code blocks are the two commands
  (`.ci/run` runs the second verbatim), its links resolve.

Missing docs tools (mkdocs, mkdocs-material, mkdocstrings) skip the build test, and fail it under
CI=true (`scripts/install.sh --test` installs them), as tests/pg_cluster.py's `missing_tool` does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pg_cluster import missing_tool

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
HOOK = DOCS / "hooks" / "cli_reference.py"
INSTALL_AND_RUN = "bash scripts/install.sh && nas search --budget 4GFLOPs"
INSTALL_AND_TEST = "bash scripts/install.sh --test && python3 -m pytest -q -n 2 --dist loadfile"
README_MAX_LINES = 150
PUBLIC_PACKAGES = ("search_space", "train_proxy", "results", "scaling")
NEEDS = re.compile(r"<!--\s*needs:\s*(data|gpu)\s*:\s*(?P<reason>.*?)\s*-->")
SHELL_LANGUAGES = ("bash", "sh", "shell", "console", "")
PROGRAMS = ("nas", "scaling")


# -- reading code blocks ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str  # the HTML comment on the last non-blank line before the fence, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file (also those indented inside list items)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        fence, indent = match["fence"], len(match["indent"])
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if not lines[j][:indent].strip() else lines[j].lstrip())
            j += 1
        marker = before if before.startswith("<!--") else ""
        blocks.append(Block(path, i + 1, match["lang"].lower(), "\n".join(body), marker))
        i = j + 1
    return blocks


def included_files(path: Path) -> list[Path]:
    """Files a page pulls in whole with pymdownx.snippets (`--8<-- "FILE"` outside a code block)."""
    found, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := INCLUDE.match(line)):
            found.append(ROOT / match["path"])
    return found


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def documents() -> list[Path]:
    return [README, *pages()]


# -- commands in the docs -----------------------------------------------------------------


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped, split at
    `&&`, `||`, `;` and `|`, leading VAR=value assignments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token and set(token) <= set(";&|"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    out = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def program_argv(words: list[str]) -> tuple[str, list[str]] | None:
    """(program, argv) of a `nas`/`scaling` command (also `python -m nas ...`), else None.
    Optional parts written `[--json]` or `[--out DIR]` are read as given; `...` is dropped."""
    if words[0] in PROGRAMS:
        program, rest = words[0], words[1:]
    elif len(words) > 2 and re.fullmatch(r"python3?", words[0]) and words[1] == "-m" and words[2] in PROGRAMS:
        program, rest = words[2], words[3:]
    else:
        return None
    argv = []
    for word in rest:
        if word == "...":
            continue
        argv.append(word.removeprefix("[").removesuffix("]"))
    return program, argv


def documented_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in documents():
        for block in code_blocks(path):
            if block.language not in SHELL_LANGUAGES:
                continue
            for words in shell_commands(block.text):
                parsed = program_argv(words)
                if parsed:
                    found.append((block.where, *parsed))
    return found


@pytest.fixture(scope="module")
def real_parsers():
    from nas.cli import build_parser as nas_parser
    from scaling.cli import _join_numeric_values
    from scaling.cli import build_parser as scaling_parser

    return {"nas": (nas_parser(), list), "scaling": (scaling_parser(), _join_numeric_values)}


def parse(parsers, program: str, argv: list[str]) -> tuple[int, str]:
    """Exit status (0: parsed) and what the parser printed on stderr."""
    parser, prepare = parsers[program]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(prepare(list(argv)))
        except SystemExit as exc:
            return (exc.code if isinstance(exc.code, int) else 1), err.getvalue()
    return 0, err.getvalue()


def test_the_docs_show_commands_of_both_programs():
    programs = {program for _, program, _ in documented_commands()}
    assert programs == set(PROGRAMS)
    assert len(documented_commands()) > 40


def test_every_documented_command_parses_with_the_real_parsers(real_parsers):
    problems = []
    for where, program, argv in documented_commands():
        code, err = parse(real_parsers, program, argv)
        line = " ".join([program, *argv])
        if code != 0:
            problems.append(f"{where}: `{line}` -> {err.strip() or f'exit {code}'}")
        elif "note:" in err:  # an old spelling: it works, but the docs must show the new one
            problems.append(f"{where}: `{line}` uses an old spelling: {err.strip()}")
    assert problems == []


def test_the_command_check_catches_unknown_flags_commands_and_old_spellings(real_parsers):
    assert parse(real_parsers, "nas", ["search", "--budget", "4GFLOPs"])[0] == 0
    assert parse(real_parsers, "scaling", ["family", "--config", "cmt_s", "--phis", "-1,0", "--out", "f"])[0] == 0
    assert parse(real_parsers, "nas", ["search", "--budget", "4GFLOPs", "--no-such-flag"])[0] == 2
    assert parse(real_parsers, "nas", ["serach", "--budget", "4GFLOPs"])[0] == 2
    assert parse(real_parsers, "nas", ["search", "--sampler", "annealing"])[0] == 2
    code, err = parse(real_parsers, "nas", ["train", "van_b0", "--fraction", "0.2"])
    assert code == 0 and "note: --fraction is now --data-fraction" in err


def test_shell_commands_are_split_as_the_shell_would():
    text = ("bash scripts/install.sh && nas search --budget 4GFLOPs  # the main job\n"
            "nas status runs/a; nas report runs/a [--out r] | cat\n"
            "PYTHONPATH=$PWD python3 -m scaling expand \\\n    --config cmt_s --phi 1\n")  # fmt: skip
    commands = [program_argv(words) for words in shell_commands(text)]
    assert commands == [
        None,
        ("nas", ["search", "--budget", "4GFLOPs"]),
        ("nas", ["status", "runs/a"]),
        ("nas", ["report", "runs/a", "--out", "r"]),
        None,
        ("scaling", ["expand", "--config", "cmt_s", "--phi", "1"]),
    ]


# -- Python in the docs -------------------------------------------------------------------


def python_blocks() -> list[Block]:
    return [b for path in documents() for b in code_blocks(path) if b.language in ("python", "py")]


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.where)
def test_python_snippets_run_or_say_what_they_need(block, tmp_path, monkeypatch):
    if block.marker:
        needs = NEEDS.fullmatch(block.marker)
        assert needs, f"{block.where}: a comment before a Python block must be <!-- needs: data|gpu: REASON -->"
        assert needs["reason"], f"{block.where}: say why the block needs {needs[1]}"
        return  # shown, not run: the reason is on the page
    monkeypatch.chdir(tmp_path)  # snippets may write files (a config, an export)
    code = compile(block.text, block.where, "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, {"__name__": "__docs__"})


def test_sketches_included_from_outside_docs_compile():
    """CONTRIBUTING.md's signature sketches (pulled into contributing.md whole) cannot run: they
    name a block that does not exist. They must at least be valid Python."""
    included = {f for page in pages() for f in included_files(page) if f.suffix == ".md"}
    assert ROOT / "CONTRIBUTING.md" in included
    for path in sorted(included):
        for block in code_blocks(path):
            if block.language in ("python", "py"):
                compile(block.text, block.where, "exec")


def test_every_included_file_exists():
    for page in pages():
        for path in included_files(page):
            assert path.is_file(), f"{page.relative_to(ROOT)} includes {path}, which is missing"


# -- the generated CLI reference ----------------------------------------------------------


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_cli_reference", HOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def walk(prefix: str, parser):  # type: ignore[no-untyped-def]
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(f"{prefix} {name}", sub)


def reference_sections(page: str) -> dict[str, str]:
    """Heading -> the text under it, up to the next heading."""
    parts = re.split(r"^#{2,4} (.+)$", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_cli_reference_is_generated_from_every_parser():
    import argparse

    hook = load_hook()
    sections = reference_sections(hook.render_reference())
    for program, parser in hook.parsers():
        for path, sub in walk(program, parser):
            assert path in sections, f"{path} has no section in the CLI reference"
            for action in sub._actions:
                for option in action.option_strings:
                    listed = re.search(rf"`{re.escape(option)}[ `]", sections[path]) is not None
                    if action.help is argparse.SUPPRESS:  # hidden aliases (old spellings) stay hidden
                        assert not listed, f"{path}: the hidden {option} is listed in the CLI reference"
                    elif option not in ("-h", "--help"):
                        assert listed, f"{path}: {option} missing from the CLI reference"


def test_the_cli_reference_escapes_markdown_in_help_texts():
    hook = load_hook()
    assert hook.escape("alpha*beta^1.5*gamma^2 <phi> `a*b`") == r"alpha\*beta^1.5\*gamma^2 \<phi\> `a*b`"
    assert hook.slug("nas latency-table build") == "nas-latency-table-build"


# -- the API reference --------------------------------------------------------------------


def own_docstring(obj: object) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if inspect.isclass(obj) and doc and doc.startswith(f"{obj.__name__}("):  # a dataclass's made-up one
        return ""
    return (doc or "").strip()


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_public_name_has_a_docstring(package):
    module = importlib.import_module(package)
    assert own_docstring(module), f"{package} has no module docstring"
    missing = [name for name in module.__all__ if not own_docstring(getattr(module, name))]
    assert missing == [], f"{package}: no docstring for {missing} (the API reference would leave them out)"


def test_the_api_reference_shows_every_public_package():
    text = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^::: (\w+)$", text, flags=re.MULTILINE)) == set(PUBLIC_PACKAGES)


# -- the README as a front door -----------------------------------------------------------


def test_readme_starts_with_the_two_commands_unchanged():
    blocks = code_blocks(README)
    assert [b.text.strip() for b in blocks[:2]] == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert INSTALL_AND_TEST in ci.splitlines()


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines (a front door: at most {README_MAX_LINES})"


def heading_anchors(path: Path) -> set[str]:
    """The anchors mkdocs' table of contents gives a page's headings (code blocks skipped)."""
    anchors, in_fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"^#{1,6} (.+?)\s*#*$", line)):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match[1]).replace("`", "").replace("*", "")
            text = re.sub(r"[^\w\s-]", "", text).strip().lower()
            anchors.add(re.sub(r"[-\s]+", "-", text))
    return anchors


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "the README links into the docs"
    problems = []
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = (ROOT / target) if target else README
        if not path.exists():
            problems.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            problems.append(f"{link}: no heading with that anchor")
    assert problems == []


# -- the site builds ----------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    for module, package in (("mkdocs", "mkdocs"), ("material", "mkdocs-material"),
                            ("mkdocstrings_handlers.python", "mkdocstrings[python]")):  # fmt: skip
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            missing_tool(f"{package} is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "WARNING" not in output, output[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "reference/cli/index.html", "reference/api/index.html", "search/index.html"):
        assert (site / page).is_file(), page
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    assert 'id="nas-search"' in cli and 'id="scaling-family"' in cli
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        missing = [name for name in module.__all__ if f'id="{package}.{name}"' not in api]
        assert missing == [], f"the API reference leaves out {package}: {missing}"

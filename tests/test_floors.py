"""The packages import downward only: search_space -> train_proxy -> results -> nas -> scaling.

Every import statement of every module is read (function-level imports too, which are where
upward imports used to hide), and one that names a package above its own floor fails the test
with its file and line. The run directory's format lives on the results floor
(`results.run_dir`), where the search, the readers, the benchmarks and the scripts all reach it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("search_space", "train_proxy", "results", "nas", "scaling")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    problems = []
    for floor, package in enumerate(FLOORS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, name in imports_of(path):
                top = name.split(".")[0]
                if top in FLOORS and FLOORS.index(top) > floor:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({top} is above {package})")
    return problems


def test_no_package_imports_one_above_it():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The reader of imports finds what it must: relative, nested and function-level imports."""
    pkg = tmp_path / "results"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from nas.search import runner\n    import scaling.cli\nfrom . import run\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imports_of(pkg / "bad.py")
    assert sorted(name for _, name in found) == ["nas.search", "results", "scaling.cli"]


@pytest.mark.parametrize("name", ["nas.search.run_dir", "nas.search.storage", "nas.search.latency_warmup"])
def test_the_run_directory_format_moved_down(name):
    import importlib.util

    assert importlib.util.find_spec(name) is None, f"{name} is the results floor's now (one home)"


def test_every_import_of_our_own_packages_resolves():
    """Function-level imports run only when their branch does; a moved module must not leave one
    behind (a latency search once failed on ``from .latency_warmup import`` after the move)."""
    import importlib.util

    missing = []
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, name in imports_of(path):
                if name.split(".")[0] in FLOORS and importlib.util.find_spec(name) is None:
                    missing.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert missing == []

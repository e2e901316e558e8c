"""Shared test setup: keep torch to few threads (CI has 2 cores) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tiny_config import make_tiny_cfg

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Tests must not depend on whether this machine has Fashion-MNIST installed: for them the commands'
# default data is the bundled digits (Fashion-MNIST's folder points nowhere). Tests of the real
# data, and of the default where it is installed, take the `fashion_mnist` fixture.
FASHION_MNIST_ENV = "HYBRID_NAS_FASHION_MNIST"  # train_proxy.data.FASHION_MNIST_ENV
# Where it really is, kept in a variable of its own: pytest-xdist's workers inherit this process's
# environment after the line below has pointed the data's variable nowhere.
INSTALLED_ENV = "HYBRID_NAS_TESTS_INSTALLED_FASHION_MNIST"
os.environ.setdefault(INSTALLED_ENV, os.environ.get(FASHION_MNIST_ENV) or "/usr/share/datasets/fashion-mnist")
INSTALLED_FASHION_MNIST = Path(os.environ[INSTALLED_ENV])
os.environ[FASHION_MNIST_ENV] = "/nonexistent/hybrid-nas-tests/fashion-mnist"


# Tests that each took 9 s or more in the fast tier (`pytest -m "not slow" --durations=50` on the
# 2-core development machine): in the full suite (CI), out of the fast tier a developer loops on.
# Most start `nas` in a subprocess (torch's import) or train; none is skipped anywhere.
SLOW_IN_FAST_TIER = (
    "test_bad_input.py::test_bad_input_console_entries",
    "test_channel_attention.py::test_analytic_equals_traced_for_samples_with_new_modules",
    "test_fashion_mnist_default.py::test_without_fashion_mnist_the_default_is_digits_with_one_notice",
    "test_hostile_inputs.py::test_a_fifo_or_a_device_is_not_read",
    "test_hostile_inputs.py::test_resume_refuses_an_edited_space_and_a_journal_damaged_in_the_middle",
    "test_hostile_inputs.py::test_run_json_of_the_wrong_shape_is_unreadable_not_a_crash",
    "test_latency_cache_validation.py::test_a_fifo_in_place_of_the_lock_is_refused_not_waited_on",
    "test_latency_runtimes.py::",
    "test_models_and_counting.py::test_analytic_equals_traced_for_random_samples",
    "test_models_and_counting.py::test_analytic_equals_traced_for_zoo",
    "test_models_and_counting.py::test_zoo_forward_at_own_resolution_and_64",
    "test_report.py::test_report_is_self_contained_with_real_figures",
    "test_scaling_cli.py::test_console_script_error_is_one_line",
    "test_scaling_from_run.py::test_expand_in_an_empty_directory_says_how_to_give_a_base",
    "test_terminal_escapes.py::test_nas_train_prints_and_writes_a_hostile_name_escaped",
    "test_timm_models.py::test_timm_loads_saved_weights_with_pretrained_cfg_overlay",
    "test_train_save.py::",
    "test_train_signals.py::",
    "test_training_recipe.py::test_nas_train_end_to_end_rates",
    "test_training_recipe.py::test_nas_train_refuses_a_rate_of_1_5",
    "test_vocabulary.py::test_python_dash_m_runs_both_clis",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        node = item.nodeid.split("/")[-1]
        if node.startswith(SLOW_IN_FAST_TIER):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The installed Fashion-MNIST, made visible as a user with Debian's package sees it (also to
    subprocesses started by the test). Missing: the test fails under CI=true, else it is skipped."""
    from train_proxy.data import FASHION_MNIST_ENV as name, has_idx_files

    assert name == FASHION_MNIST_ENV
    if not has_idx_files(INSTALLED_FASHION_MNIST):
        message = f"Fashion-MNIST is not in {INSTALLED_FASHION_MNIST} (bash scripts/install.sh --test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(INSTALLED_FASHION_MNIST))
    return INSTALLED_FASHION_MNIST


@pytest.fixture
def tiny_cfg():
    return make_tiny_cfg()


@pytest.fixture()
def tiny_yaml(tmp_path, tiny_cfg) -> Path:
    """The tiny config as a YAML file (what `nas train` and friends are given)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_cfg.to_yaml())
    return path


@pytest.fixture
def cli(capsys):
    """Run the `nas` CLI in-process: returns (exit code, stdout, stderr). Usage errors exit via SystemExit."""

    def run(*argv: str, main=None):
        from nas.cli import main as nas_main

        try:
            code = (main or nas_main)([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test fails the run: `install.sh --test` installs every tool the
    tests need (chromium, onnxruntime), so a skip there means a missing install step."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        names = ", ".join(sorted({r.nodeid for r in skipped})[:5])
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped ({names}): failing the run", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for the session (tests/pg_cluster.py: initdb + pg_ctl in a temp
    dir, 127.0.0.1 on a free port, password auth); stopped and removed at the end, whatever happened."""
    from pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()

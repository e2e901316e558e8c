"""Fashion-MNIST as the default data where it is installed (issue: real data as the proving ground).

These run the real commands on the real files of Debian's `dataset-fashion-mnist` (the
`fashion_mnist` fixture: installed by `scripts/install.sh --test`; missing under CI=true fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def nas(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "nas.cli", *argv], capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_one_epoch_of_van_b0_on_a_fifth_of_fashion_mnist_passes_70_percent(fashion_mnist: Path) -> None:
    done = nas("train", "van_b0", "--data", "fashion-mnist", "--epochs", "1", "--proxy-resolution", "32",
               "--data-fraction", "0.2", "--no-progress", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["data"] == "fashion-mnist"
    # 9,600 training images, the fixed 12,000-image validation part: a tenth would be chance
    assert result["val_acc"] > 0.70


@pytest.mark.slow
def test_a_search_without_data_uses_fashion_mnist_and_records_it(fashion_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = nas("search", "--budget", "4GFLOPs", "--trials", "2", "--epochs", "1", "--proxy-width", "0.25",
               "--data-fraction", "0.02", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "note:" not in done.stderr  # the real data is there: nothing to apologise for
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["data"] == "fashion-mnist"
    card_texts = [p.read_text() for p in out.rglob("*.md")]
    assert card_texts and all("fashion-mnist" in text for text in card_texts)


def test_without_fashion_mnist_the_default_is_digits_with_one_notice(tmp_path: Path) -> None:
    # conftest points Fashion-MNIST's folder nowhere: what a machine without the package sees
    done = nas("search", "--budget", "4GFLOPs", "--trials", "1", "--epochs", "1", "--proxy-width", "0.25",
               "--data-fraction", "0.1", "--concurrency", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    notices = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert len(notices) == 1 and "Fashion-MNIST is not installed" in notices[0]
    assert "apt-get install dataset-fashion-mnist" in notices[0]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["data"] == "digits"


def test_a_missing_fashion_mnist_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = nas("search", "--budget", "4GFLOPs", "--data", "fashion-mnist:/nonexistent", "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "/nonexistent" in done.stderr
    assert not (tmp_path / "r").exists()

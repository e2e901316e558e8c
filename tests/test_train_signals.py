"""`nas train` and signals: SIGTERM ends a training with exit 143 and one closing line that says what
was kept and how to continue (Ctrl-C keeps its 130); `--resume` of a finished training says so and
changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_save import epochs_saved, nas

NAS = [sys.executable, "-m", "nas.cli"]
# digits, three short epochs (about a second each here): quick, yet long enough to signal mid-epoch
QUICK = ["--data", "digits", "--epochs", "3", "--data-fraction", "0.3", "--threads", "1", "--seed", "3", "--no-progress"]


def signal_mid_training(tiny_yaml: Path, kept: Path, sig: int) -> tuple[int, str]:
    """Start `nas train --save kept`, wait until epoch 2 is being trained, send ``sig``."""
    proc = subprocess.Popen([*NAS, "train", str(tiny_yaml), *QUICK, "--save", str(kept)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while epochs_saved(kept) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"nas train ended before its first epoch was saved: {proc.stderr.read()[-2000:]}"
    time.sleep(0.1)  # inside epoch 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("sig, code, opening", [(signal.SIGTERM, 143, "interrupted by SIGTERM"),
                                                (signal.SIGINT, 130, "interrupted ")], ids=["sigterm", "ctrl-c"])  # fmt: skip
def test_a_signal_mid_training_closes_with_one_line_and_the_training_resumes(tmp_path, tiny_yaml, sig, code, opening):
    kept = tmp_path / "kept"
    returncode, err = signal_mid_training(tiny_yaml, kept, sig)
    assert returncode == code, err[-3000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    if sig == signal.SIGINT:
        assert "SIGTERM" not in line
    saved = epochs_saved(kept)
    assert 1 <= saved < 3 and not (kept / "result.json").exists(), "the signal came after the training ended"
    assert line.startswith(opening) and f"during epoch {saved + 1} of 3" in line, line
    assert f"{saved} finished epoch" in line and str(kept) in line, line
    assert line.endswith(f"continue with nas train --save {kept} --resume"), line
    assert not list(kept.glob(".*.tmp")), "a temporary file was left behind"

    again = nas("train", "--save", str(kept), "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and epochs_saved(kept) == 3
    assert json.loads((kept / "result.json").read_text())["epochs"] == 3


def test_sigterm_without_save_says_nothing_was_kept(tmp_path, tiny_yaml):
    proc = subprocess.Popen([*NAS, "train", str(tiny_yaml), *QUICK], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the first epoch's line: epoch 2 is being trained
        if line.startswith("epoch"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    (line,) = err.strip().splitlines()
    assert line.startswith("interrupted by SIGTERM during epoch") and "nothing was kept" in line, line


def test_resume_of_a_finished_training_says_so_and_changes_nothing(tmp_path, tiny_yaml):
    kept = tmp_path / "kept"
    done = nas("train", str(tiny_yaml), "--data", "digits", "--epochs", "1", "--data-fraction", "0.3", "--threads", "1",
               "--no-progress", "--save", str(kept))  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = ("result.json", "card.md", "history.json", "model.safetensors", "training_state.pt", "curves.png")
    before = {name: ((kept / name).read_bytes(), (kept / name).stat().st_mtime_ns) for name in files}
    result = json.loads((kept / "result.json").read_text())
    time.sleep(0.05)  # a rewrite would show in the modification times

    again = nas("train", "--save", str(kept), "--resume", "--no-progress")
    as_json = nas("train", "--save", str(kept), "--resume", "--json")
    after = {name: ((kept / name).read_bytes(), (kept / name).stat().st_mtime_ns) for name in files}
    for name in files:
        assert after[name][0] == before[name][0], f"{name} rewritten with other contents"
        assert after[name][1] == before[name][1], f"{name} rewritten"
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{kept}: training finished (1 epochs, val_acc {result['val_acc']:.4f}); nothing to do\n"
    assert again.stderr == ""
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == result


def test_kept_run_of_a_finished_training_returns_its_result_untouched(tmp_path, tiny_cfg):
    """The library path (`nas finalize` goes through it too) leaves a finished training alone."""
    from train_proxy import ProxySpec, load_data
    from results.cards import trained_card
    from train_proxy import keep as kept
    from train_proxy.checkpoint import TrainingDir

    spec = ProxySpec(epochs=1, data_fraction=0.2, threads=1)
    bundle = load_data("digits", spec.resolution, fraction=spec.data_fraction)
    d = TrainingDir.create(tmp_path / "d")
    kept.start(d, tiny_cfg, spec, "digits", bundle, evaluate_test=False)
    first = kept.run(d, bundle, card=trained_card)
    stamp = (d.path / "result.json").stat().st_mtime_ns, (d.path / "card.md").stat().st_mtime_ns
    assert kept.finished(d) == json.loads((d.path / "result.json").read_text())
    again = kept.run(d, bundle, card=trained_card)
    assert again["images_per_second"] == first["images_per_second"] > 0
    assert ((d.path / "result.json").stat().st_mtime_ns, (d.path / "card.md").stat().st_mtime_ns) == stamp


def test_signals_held_while_an_epoch_is_written_come_afterwards():
    """A signal during the writes of an epoch waits for them, then reaches the handler in place."""
    from train_proxy.keep import signals_held

    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert seen == []  # held
        assert seen == [signal.SIGTERM]  # delivered once the block is done
    finally:
        signal.signal(signal.SIGTERM, previous)

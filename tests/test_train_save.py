"""`nas train --save` / `--resume`: a kept training, killed mid-epoch and resumed, ends with the
weights of an uninterrupted run; kept directories are refused when they would be misused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from search_space import ArchConfig, analytic_cost, build_model
from search_space.errors import UserError
from train_proxy.checkpoint import TrainingDir

NAS = [sys.executable, "-m", "nas.cli"]
TRAIN = ["--data", "digits", "--epochs", "2", "--threads", "1", "--seed", "3", "--no-progress"]


def nas(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*NAS, *argv], capture_output=True, text=True, timeout=600, **kw)


def epochs_saved(d: Path) -> int:
    try:
        return len(json.loads((d / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path, tiny_yaml):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = nas("train", str(tiny_yaml), *TRAIN, "--save", str(whole))
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([*NAS, "train", str(tiny_yaml), *TRAIN, "--save", str(resumed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while epochs_saved(resumed) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # well inside epoch 2 (an epoch takes seconds)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert epochs_saved(resumed) == 1, "the kill came after epoch 2 had finished"
    assert not (resumed / "result.json").exists()
    assert not list(resumed.glob(".*.tmp")), "a temporary file was left behind"

    again = nas("train", "--save", str(resumed), "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout

    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history_a = json.loads((whole / "history.json").read_text())
    history_b = json.loads((resumed / "history.json").read_text())
    assert [h["val_acc"] for h in history_a] == [h["val_acc"] for h in history_b]
    assert [h["train_loss"] for h in history_a] == [h["train_loss"] for h in history_b]


def test_saved_directory_holds_a_loadable_model_and_a_card(tmp_path, tiny_yaml, tiny_cfg):
    d = tmp_path / "kept"
    done = nas("train", str(tiny_yaml), "--data", "digits", "--epochs", "1", "--data-fraction", "0.3", "--threads", "1",
               "--no-progress", "--save", str(d), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    names = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "config.yaml", "training_state.pt", "history.json", "curves.png",
            "result.json", "card.md", "train.json"} <= names  # fmt: skip
    assert (d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert oct((d / "card.md").stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    # the saved config is the tiny network with the data's classes, at the trained resolution (32 px)
    built = ArchConfig.from_dict(yaml.safe_load((d / "config.yaml").read_text()))
    assert built.stages == tiny_cfg.stages and built.resolution == 32 and built.num_classes == 10
    model = build_model(built)
    model.load_state_dict(load_file(d / "model.safetensors"))  # strict: every tensor present and shaped
    assert sum(p.numel() for p in model.parameters()) == analytic_cost(built).params == printed["params"]

    # the training state loads without pickle code
    state = torch.load(d / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and set(state["rng"]) >= {"torch", "loop", "python", "numpy"}

    card = (d / "card.md").read_text()
    assert f"{printed['val_acc']:.4f}" in card and "AdamW" in card and "nas train" in card
    assert "model.safetensors" in card and f"{analytic_cost(built).params:,}" in card

    # resuming a finished training changes nothing and says so through the same result
    again = nas("train", "--save", str(d), "--resume", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["val_acc"] == printed["val_acc"]


def test_saved_training_scores_the_official_test_split(tmp_path, tiny_yaml, fashion_mnist):
    d = tmp_path / "fm"
    done = nas("train", str(tiny_yaml), "--data", "fashion-mnist", "--epochs", "1", "--data-fraction", "0.02",
               "--threads", "1", "--no-progress", "--save", str(d), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((d / "result.json").read_text())
    assert 0.1 < result["test_acc"] <= 1.0  # 10 classes: chance is 0.1
    assert f"| official test split | {result['test_acc']:.4f} |" in (d / "card.md").read_text()


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--save", "{missing}", "--resume"], "not a directory"),
        (["--save", "{empty}", "--resume"], "no train.json"),
        (["{yaml}", "--save", "{full}"], "not empty"),
        (["{yaml}", "--save", "{file}"], "not a directory"),
        (["{yaml}", "--save", "{link}"], "symbolic link"),
        (["{yaml}", "--save", "{kept}"], "--resume"),
        (["--save", "{kept}", "--resume", "--epochs", "5"], "drop --epochs"),
        (["{yaml}", "--save", "{kept}", "--resume"], "give no model"),
        (["--save", "{broken}", "--resume"], "unreadable training state"),
        (["--save", "{badjson}", "--resume"], "train.json"),
        ([], "give a model"),
    ],
)
def test_bad_save_and_resume_get_one_line_and_exit_2(tmp_path, tiny_yaml, argv, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "train.json").write_text(json.dumps({"format": 1, "source_config": {}, "spec": {}, "data": "digits"}))
    broken = tmp_path / "broken"
    broken.mkdir()
    source = {"format": 1, "source_config": yaml.safe_load(tiny_yaml.read_text()), "data": "digits",
              "spec": {"epochs": 1, "threads": 1}}  # fmt: skip
    (broken / "train.json").write_text(json.dumps(source))
    (broken / "training_state.pt").write_bytes(b"PK\x03\x04 not really a zip")
    badjson = tmp_path / "badjson"
    badjson.mkdir()
    (badjson / "train.json").write_text("{not json")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "full": full, "file": tmp_path / "file",
             "link": tmp_path / "link", "kept": kept, "broken": broken, "badjson": badjson, "yaml": tiny_yaml}  # fmt: skip
    done = nas("train", *[a.format(**paths) for a in argv], "--no-progress")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert (full / "mine.txt").read_text() == "keep me" and sorted(p.name for p in full.iterdir()) == ["mine.txt"]
    assert not any((tmp_path / "target").iterdir())


def test_training_dir_refuses_a_state_for_another_length(tmp_path, tiny_cfg):
    from train_proxy import ProxySpec, train_proxy

    d = TrainingDir.create(tmp_path / "d")
    spec = ProxySpec(epochs=1, data_fraction=0.2, threads=1)
    train_proxy(tiny_cfg, spec, "digits", checkpoint=d)
    with pytest.raises(UserError, match="for 1 epochs"):
        train_proxy(tiny_cfg, ProxySpec(epochs=2, data_fraction=0.2, threads=1), "digits", checkpoint=d)


def test_export_of_a_trained_directory_carries_its_weights(tmp_path, tiny_yaml):
    """ONNX and TorchScript exported from a kept training give the logits of the saved weights
    (loaded here independently, with build_model + safetensors), within 1e-4."""
    import numpy as np
    import onnxruntime as ort

    d, out = tmp_path / "kept", tmp_path / "exported"
    done = nas("train", str(tiny_yaml), "--data", "digits", "--epochs", "1", "--data-fraction", "0.3", "--threads", "1",
               "--no-progress", "--save", str(d))  # fmt: skip
    assert done.returncode == 0, done.stderr
    exported = nas("export", str(d), "--out", str(out), "--format", "onnx,torchscript", "--json")
    assert exported.returncode == 0, exported.stderr
    (entry,) = json.loads(exported.stdout)
    assert entry["onnx_max_abs_diff"] <= 1e-4

    model = build_model(ArchConfig.load(d / "config.yaml"))
    model.load_state_dict(load_file(d / "model.safetensors"))
    model.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(entry["files"]["onnx"], providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    scripted = torch.jit.load(entry["files"]["torchscript"])
    assert np.abs(scripted(x).detach().numpy() - want).max() <= 1e-4
    card = Path(entry["card"]).read_text()
    result = json.loads((d / "result.json").read_text())
    assert "freshly initialised" not in card and f"validation accuracy {result['val_acc']:.4f}" in card

    # --weights with a run: refused without exactly one trial; a training directory takes no --trial
    refused = nas("export", str(d), "--out", str(out), "--trial", "1")
    assert refused.returncode == 2 and "training directory" in refused.stderr


def test_export_refuses_an_unfinished_training(tmp_path, tiny_yaml):
    d = tmp_path / "kept"
    done = nas("train", str(tiny_yaml), "--data", "digits", "--epochs", "1", "--data-fraction", "0.3", "--threads", "1",
               "--no-progress", "--save", str(d))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (d / "result.json").unlink()
    refused = nas("export", str(d), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "has not finished" in refused.stderr
    assert not (tmp_path / "x").exists()

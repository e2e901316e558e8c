"""timm interop: our networks through `timm.create_model`, weights saved by `nas train --save`
loaded by timm's own pretrained mechanism (tested on what `nas train` really writes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is in the test extra: bash scripts/install.sh --test")

import train_proxy.timm_models  # noqa: E402,F401  (registers the models)
from safetensors.torch import load_file  # noqa: E402

from search_space import ArchConfig, build_model, zoo_names  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny network trained one epoch by the real command, kept with --save."""
    from tests.tiny_config import make_tiny_cfg

    root = tmp_path_factory.mktemp("timm")
    config = root / "tiny.yaml"
    config.write_text(make_tiny_cfg().to_yaml())
    d = root / "kept"
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli", "train", str(config), "--data", "digits", "--epochs", "1", "--data-fraction",
         "0.3", "--threads", "1", "--no-progress", "--save", str(d)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return d


def reference(d: Path) -> torch.nn.Module:
    model = build_model(ArchConfig.load(d / "config.yaml"))
    model.load_state_dict(load_file(d / "model.safetensors"))
    return model.eval()


def images(n: int = 4, channels: int = 3, side: int = 32) -> torch.Tensor:
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(0))


def test_timm_loads_saved_weights_with_pretrained_cfg_overlay(trained):
    model = timm.create_model("hybrid_nas", arch=str(trained / "config.yaml"), num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(trained / "model.safetensors"))).eval()  # fmt: skip
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), reference(trained)(x))


def test_a_training_directory_is_a_complete_arch(trained):
    model = timm.create_model("hybrid_nas", arch=str(trained), pretrained=True).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), reference(trained)(x))
    # the data's normalisation and the trained input size, as `nas train` recorded them
    settings = json.loads((trained / "train.json").read_text())
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 32, 32)
    assert list(data_cfg["mean"]) == pytest.approx(settings["input"]["mean"])
    assert list(data_cfg["std"]) == pytest.approx(settings["input"]["std"])
    assert model.pretrained_cfg["classifier"] == "head.fc"
    assert isinstance(model.get_submodule(model.pretrained_cfg["first_conv"]), torch.nn.Conv2d)


def test_other_num_classes_keeps_the_backbone_and_drops_the_classifier(trained):
    model = timm.create_model("hybrid_nas", arch=str(trained), pretrained=True, num_classes=5)
    saved = load_file(trained / "model.safetensors")
    state = model.state_dict()
    assert state["head.fc.weight"].shape == (5, saved["head.fc.weight"].shape[1])
    backbone = [k for k in saved if not k.startswith("head.fc.")]
    assert backbone and all(torch.equal(state[k], saved[k]) for k in backbone)


def test_one_input_channel_sums_the_first_conv(trained):
    """timm folds RGB weights into one channel by summing them: on a grey image repeated three
    times the 3-channel network must give the same logits."""
    grey = timm.create_model("hybrid_nas", arch=str(trained), pretrained=True, in_chans=1).eval()
    x = images(channels=1)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), reference(trained)(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_zoo_models_are_timm_models_with_paper_sizes():
    names = set(timm.list_models("hybrid_nas*"))
    assert {f"hybrid_nas_{n}" for n in zoo_names()} | {"hybrid_nas"} <= names
    # the papers' parameter counts: VAN-B0 4.1 M (VAN, Table 2), CMT-Ti 9.5 M (CMT, Table 1)
    for name, millions in (("hybrid_nas_van_b0", 4.1), ("hybrid_nas_cmt_ti", 9.5)):
        model = timm.create_model(name)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
        assert model.pretrained_cfg["input_size"][1:] == ((224, 224) if "van" in name else (160, 160))


def test_timm_training_kwargs_reach_the_config(tmp_path, tiny_cfg):
    path = tmp_path / "found.yaml"
    path.write_text(tiny_cfg.to_yaml())
    model = timm.create_model("hybrid_nas", arch=str(path), num_classes=7, drop_path_rate=0.2, drop_rate=0.1)
    assert model.cfg.drop_path_rate == 0.2 and model.cfg.head.dropout == 0.1 and model.num_classes == 7
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="needs arch"):
        timm.create_model("hybrid_nas")

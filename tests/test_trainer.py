"""Proxy trainer: recipe pieces, determinism, the non-finite-loss guard, early stop, `nas train`."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from nas.cli import main
from search_space import ArchConfig, StageConfig, StemConfig, analytic_cost
from search_space.errors import UserError
from train_proxy import DataBundle, ProxySpec, load_data, train_proxy
from train_proxy.trainer import _Run, augment, proxy_config

# Small data and tiny models keep every training here to a second or two on one core. Full width and
# a one-epoch warm-up, as these tests were written (ProxySpec()'s defaults are the default proxy's).
FAST = {"epochs": 2, "batch_size": 32, "data_fraction": 0.1, "threads": 1, "device": "cpu", "width_multiplier": 1.0,
        "warmup_epochs": 1}  # fmt: skip


def tiny_config(block: str = "van", width: int = 8, resolution: int = 224) -> ArchConfig:
    stages = tuple(
        StageConfig(
            block=block,
            depth=1,
            width=width * 2 ** min(i, 2),
            heads=2 if block != "van" else 1,
            kv_reduction=(8, 4, 2, 1)[i],
            mlp_ratio=2.0,
            attn_kernel=3,
        )
        for i in range(4)
    )
    return ArchConfig(
        stages=stages, name=f"tiny_{block}", resolution=resolution, num_classes=1000, stem=StemConfig("conv3", 8)
    )


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", 32, fraction=0.1)


# -- recipe pieces ------------------------------------------------------------------------


def test_augment_shifts_and_flips_within_the_padded_frame() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, False, gen), x)
    flipped = augment(x, 0, True, torch.Generator().manual_seed(1))
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    out = augment(x, 2, False, gen)
    windows = [padded[:, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    assert all(any(torch.equal(out[i], w[i]) for w in windows) for i in range(2))
    again = augment(x, 2, True, torch.Generator().manual_seed(7))
    assert torch.equal(again, augment(x, 2, True, torch.Generator().manual_seed(7)))


def test_learning_rate_warms_up_then_decays_to_zero(digits: DataBundle) -> None:
    run = _Run(
        tiny_config(),
        ProxySpec(epochs=4, batch_size=16, lr=1e-3, warmup_epochs=1),
        digits,
        torch.device("cpu"),
        None,
        False,
    )
    lrs = [run.lr_at(s) for s in range(run.total_steps)]
    peak = run.warmup_steps - 1
    assert lrs[0] < lrs[peak] == pytest.approx(1e-3)
    assert all(a <= b for a, b in pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in pairwise(lrs[peak + 1 :]))
    assert lrs[-1] < 1e-5


def test_proxy_config_takes_classes_resolution_and_width() -> None:
    cfg = tiny_config("cmt")
    proxy = proxy_config(cfg, ProxySpec(resolution=64, width_multiplier=2.0), num_classes=10)
    assert proxy.num_classes == 10 and proxy.resolution == 64
    assert [s.width for s in proxy.stages] == [2 * s.width for s in cfg.stages]
    # a K/V reduction that cannot divide the 32 px maps: built at its own resolution instead
    odd = cfg.replace(stages=(replace(cfg.stages[0], kv_reduction=7),) + cfg.stages[1:])
    assert proxy_config(odd, ProxySpec(resolution=32), 10).resolution == 224


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"resolution": 48}, "multiple of 32"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"data_fraction": 0.0}, "data_fraction"),
        ({"lr": float("nan")}, "lr"),
        ({"threads": 0}, "threads"),
        ({"device": "tpu"}, "device"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_proxy_specs(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ProxySpec(**changes)


def test_bundle_at_another_resolution_is_refused(digits: DataBundle) -> None:
    with pytest.raises(UserError, match="32 px images but the proxy resolution is 64"):
        train_proxy(tiny_config(), ProxySpec(resolution=64, **FAST), digits)


# -- training -----------------------------------------------------------------------------


def test_training_learns_reports_every_epoch_and_counts_the_proxy_model(digits: DataBundle) -> None:
    seen: list[dict] = []
    cfg = tiny_config("cmt")
    result = train_proxy(cfg, ProxySpec(**{**FAST, "epochs": 3, "batch_size": 16}), digits, on_epoch=seen.append)
    assert result.status == "ok" and result.failure_reason is None and result.epochs == 3
    assert [r["epoch"] for r in seen] == [1, 2, 3] and seen == result.history
    assert {"epoch", "val_acc", "train_loss", "seconds"} <= set(seen[0])
    assert result.val_acc == seen[-1]["val_acc"] and result.best_val_acc == max(r["val_acc"] for r in seen)
    assert result.val_acc > 0.3  # ten classes: chance is 0.1
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert result.images_per_second > 0 and result.train_seconds > 0
    proxy = proxy_config(cfg, ProxySpec(**FAST), 10)
    assert result.macs == analytic_cost(proxy, 32).macs and result.params == analytic_cost(proxy, 32).params
    assert result.n_train == len(digits.train) and result.n_val == len(digits.val)


def test_same_seed_same_result_other_seed_other_result(digits: DataBundle) -> None:
    cfg = tiny_config("acmix")
    a = train_proxy(cfg, ProxySpec(seed=3, **FAST), digits)
    b = train_proxy(cfg, ProxySpec(seed=3, **FAST), digits)
    c = train_proxy(cfg, ProxySpec(seed=4, **FAST), digits)
    strip = lambda h: [{k: r[k] for k in ("epoch", "val_acc", "train_loss")} for r in h]
    assert a.val_acc == b.val_acc and strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


def test_threads_are_pinned_for_the_call_and_restored(digits: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    train_proxy(tiny_config(), ProxySpec(**{**FAST, "epochs": 1, "threads": 1}), digits,
                on_epoch=lambda r: seen.append(torch.get_num_threads()))  # fmt: skip
    assert seen == [1] and torch.get_num_threads() == before


def test_non_finite_loss_fails_with_a_reason_instead_of_raising(digits: DataBundle) -> None:
    result = train_proxy(tiny_config(), ProxySpec(**{**FAST, "lr": 1e30, "warmup_epochs": 0}), digits)
    assert result.status == "failed"
    assert result.failure_reason is not None and result.failure_reason.startswith("non-finite loss at epoch 1 step ")
    assert result.epochs == 0 and result.val_acc == 0.0


def test_non_finite_forward_is_caught_at_its_step(digits: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from search_space.model import HybridNet

    calls = {"n": 0}
    forward = HybridNet.forward
    steps_per_epoch = len(digits.train) // FAST["batch_size"]

    def poisoned(self, x):  # type: ignore[no-untyped-def]
        if self.training:
            calls["n"] += 1
            if calls["n"] == steps_per_epoch + 2:  # second epoch, second step
                return forward(self, x) * float("inf")
        return forward(self, x)

    monkeypatch.setattr(HybridNet, "forward", poisoned)
    result = train_proxy(tiny_config(), ProxySpec(**FAST), digits)
    assert result.status == "failed" and result.failure_reason == "non-finite loss at epoch 2 step 2"
    assert result.epochs == 1 and len(result.history) == 1 and math.isfinite(result.val_acc)


def test_callback_returning_false_stops_early(digits: DataBundle) -> None:
    result = train_proxy(tiny_config(), ProxySpec(**{**FAST, "epochs": 3}), digits, on_epoch=lambda r: r["epoch"] < 1)
    assert result.status == "stopped" and result.epochs == 1 and len(result.history) == 1


def test_full_bundle_is_subsampled_to_the_spec_fraction(digits: DataBundle) -> None:
    full = load_data("digits", 32)
    result = train_proxy(tiny_config(), ProxySpec(**{**FAST, "epochs": 1}), full)
    assert result.n_train == len(digits.train)
    with pytest.raises(UserError, match="fraction 0.1 but the proxy asks for 0.5"):
        train_proxy(tiny_config(), ProxySpec(**{**FAST, "data_fraction": 0.5}), digits)


# -- nas train ----------------------------------------------------------------------------


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    tiny_config().save(path)
    return path


ARGS = ["--epochs", "1", "--data-fraction", "0.1", "--batch-size", "32", "--threads", "1", "--device", "cpu", "--data", "digits"]


def test_nas_train_json(tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_yaml), *ARGS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for key in ("val_acc", "best_val_acc", "epochs", "train_seconds", "images_per_second", "status", "params",
                "macs", "resolution", "data"):  # fmt: skip
        assert key in out
    assert out["status"] == "ok" and out["epochs"] == 1 and out["resolution"] == 32 and out["data"] == "digits"
    assert 0.0 <= out["val_acc"] <= 1.0 and out["n_train"] == len(load_data("digits", 32, fraction=0.1).train)


def test_nas_train_human_output(tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_yaml), *ARGS, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "val_acc" in out and "images/s" in out


def test_nas_train_failure_exits_1_with_one_line(tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_yaml), *ARGS, "--lr", "1e30", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "failed"
    assert captured.err.count("\n") == 1 and captured.err.startswith(
        "error: training failed: non-finite loss at epoch 1"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "svhn"], "unknown data spec 'svhn'"),
        (["--data", "cifar10:/no/such/dir"], "does not exist"),
        (["--proxy-resolution", "48"], "not a multiple of 32"),
        (["--data-fraction", "2"], "must be in (0, 1]"),
        (["--lr", "abc"], "'abc' is not a number"),
        (["--batch-size", "1"], "must be >= 2"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    ],
)
def test_nas_train_bad_input_exits_2(
    tiny_yaml: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert run_cli(["train", str(tiny_yaml), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_nas_train_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["train", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def run_cli(argv: list[str]) -> int:
    """`nas` as the console script runs it: argparse errors exit via SystemExit(2)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# -- channels-last on the CPU ----------------------------------------------------------------


@pytest.mark.parametrize("block", ["cmt", "van"])
def test_channels_last_trains_the_same_network_to_float_rounding(digits: DataBundle, block: str, monkeypatch) -> None:
    """The CPU's channels-last layout (`CPU_CHANNELS_LAST`) changes summation orders, not the function:
    the same seed gives the same losses and accuracy as contiguous tensors, to float rounding."""
    from train_proxy import trainer as T

    spec = ProxySpec(**FAST)
    runs = []
    for channels_last in (True, False):
        monkeypatch.setattr(T, "CPU_CHANNELS_LAST", channels_last)
        seen: list[dict] = []
        result = train_proxy(tiny_config(block), spec, digits, on_epoch=seen.append)
        runs.append((result, [h["train_loss"] for h in seen]))
    (cl, cl_losses), (nchw, nchw_losses) = runs
    assert cl.status == nchw.status == "ok"
    assert cl_losses == pytest.approx(nchw_losses, rel=1e-4)
    assert abs(cl.val_acc - nchw.val_acc) <= 1 / nchw.n_val + 1e-9  # one image at most on either side of a tie


def test_a_state_saved_channels_last_resumes_right_on_contiguous_weights(digits: DataBundle, tmp_path, monkeypatch) -> None:
    """A training kept on CUDA (channels-last weights and moments in training_state.pt, as the real
    writer stores them; trained here on the CPU in that layout) resumed on the CPU (contiguous):
    AdamW's fused kernel must see each moment in its weight's layout, or it updates the wrong
    elements. Against the same training run whole on the CPU."""
    from train_proxy import trainer as T
    from train_proxy.checkpoint import TrainingDir

    spec = ProxySpec(**FAST)
    cfg = tiny_config("cmt")
    whole = train_proxy(cfg, spec, digits)
    kept = TrainingDir.create(tmp_path / "kept")
    monkeypatch.setattr(T, "CPU_CHANNELS_LAST", True)
    first = train_proxy(cfg, spec, digits, on_epoch=lambda record: False, checkpoint=kept)  # stops after epoch 1
    assert first.status == "stopped"
    saved = kept.load_state()["optimizer"]["state"]
    layouts = [t.is_contiguous() for s in saved.values() for t in s.values() if torch.is_tensor(t) and t.dim() == 4]
    assert not all(layouts), "moments of 4-d weights stored channels-last (1x1 kernels are both layouts at once)"
    monkeypatch.setattr(T, "CPU_CHANNELS_LAST", False)
    resumed = train_proxy(cfg, spec, digits, checkpoint=kept)
    assert resumed.status == "ok"
    assert resumed.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-4)
    assert abs(resumed.val_acc - whole.val_acc) <= 1 / whole.n_val + 1e-9

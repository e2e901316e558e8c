"""The fault-injection hooks themselves (fast, in-process); the faults they cause are tested
end to end in test_reliability.py and test_cluster_faults.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from nas.search import faults
from search_space.errors import UserError
from train_proxy.data import DataBundle


def test_parse_faults_reads_every_kind() -> None:
    parsed = faults.parse_faults("pause@sample:2, raise@trial:1,nan@trial:3,oom@trial:4,flaky@trial:5,pause@checkpoint:6")
    assert [(f.action, f.where, f.n) for f in parsed] == [
        ("pause", "sample", 2), ("raise", "trial", 1), ("nan", "trial", 3),
        ("oom", "trial", 4), ("flaky", "trial", 5), ("pause", "checkpoint", 6),
    ]  # fmt: skip
    assert faults.parse_faults("") == () and faults.parse_faults(None) == ()


@pytest.mark.parametrize("text", ["raise", "raise@trial", "raise@trial:x", "explode@trial:1", "raise@sample:1"])
def test_parse_faults_rejects_malformed_items(text: str) -> None:
    with pytest.raises(UserError, match="HYBRID_NAS_FAULT"):
        faults.parse_faults(text)


def test_hooks_are_off_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.FAULT_VAR, raising=False)
    monkeypatch.delenv(faults.TRAIN_LOG_VAR, raising=False)
    assert faults.hooks_from_env() == {}
    bundle = _bundle()
    assert faults.before_training({}, 1, 1, bundle) is bundle
    assert faults.DriverFaults().faults == ()


def _bundle() -> DataBundle:
    x = torch.zeros(4, 3, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    return DataBundle(TensorDataset(x, y), TensorDataset(x, y), 10, "t")


def test_trial_faults_raise_per_attempt_and_poison_data(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    hooks = {"fault": "raise@trial:1,flaky@trial:2,oom@trial:3,nan@trial:4", "train_log": str(log)}
    bundle = _bundle()
    from results.run_dir import arch_hash
    from tiny_config import make_tiny_cfg

    arch = make_tiny_cfg()
    for attempt in (1, 2):
        assert faults.start_attempt(hooks, 2, arch, None) == attempt
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    h = arch_hash(arch)
    assert [(r["number"], r["attempt"], r["arch_hash"]) for r in rows] == [(2, 1, h), (2, 2, h)]
    with pytest.raises(RuntimeError, match="injected failure of trial 1"):
        faults.before_training(hooks, 1, 3, bundle)
    with pytest.raises(RuntimeError, match="attempt 1"):
        faults.before_training(hooks, 2, 1, bundle)
    assert faults.before_training(hooks, 2, 2, bundle) is bundle  # flaky: fine on the retry
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        faults.before_training(hooks, 3, 1, bundle)
    poisoned = faults.before_training(hooks, 4, 1, bundle)
    assert math.isnan(float(poisoned.train.tensors[0].sum())) and bundle.train.tensors[0].sum() == 0
    assert faults.before_training(hooks, 5, 1, bundle) is bundle


def test_checkpoint_pause_writes_half_the_file_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Paused(Exception):
        pass

    def stop(message: str) -> None:
        raise Paused(message)

    monkeypatch.setattr(faults, "_pause_forever", stop)
    hooks = faults.DriverFaults("pause@checkpoint:2,pause@sample:7")
    target = tmp_path / "state.json"
    assert hooks.during_checkpoint(str(target), b"0123456789") is False and not target.exists()
    with pytest.raises(Paused, match="checkpoint 2"):
        hooks.during_checkpoint(str(target), b"0123456789")
    assert target.read_bytes() == b"01234"
    hooks.after_sample(6)
    with pytest.raises(Paused, match="sample of trial 7"):
        hooks.after_sample(7)


def test_non_finite_loss_from_poisoned_data_is_caught_by_the_trainer(tiny_cfg) -> None:
    from train_proxy.trainer import ProxySpec, train_proxy

    x = torch.randn(32, 3, 32, 32)
    y = torch.randint(0, 10, (32,))
    bundle = DataBundle(TensorDataset(x, y), TensorDataset(x[:8], y[:8]), 10, "t", fraction=1.0)
    poisoned = faults.before_training({"fault": "nan@trial:0"}, 0, 1, bundle)
    result = train_proxy(tiny_cfg, ProxySpec(resolution=32, epochs=1, batch_size=16, threads=1), poisoned)
    assert result.status == "failed" and "non-finite loss" in (result.failure_reason or "")

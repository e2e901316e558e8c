"""`nas search` and `nas status`: every bad input refused cleanly, and a tiny real search.

The bad-input table runs in-process and never starts Ray: each case must exit 2 with one line on
stderr, no traceback, and leave an existing run directory byte-identical. The real search (slow)
runs the CLI in a subprocess with a budget tight enough that most candidates are infeasible, and
checks the promises of the command: every trained trial satisfies every constraint, infeasible
candidates are never trained (Ray never even sees them), counts add up, the exported Pareto
configs load and profile, `--resume` extends a finished run without retraining, and a second
search on a directory in use is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.cli import main
from results.run_dir import STUDY_NAME, RunDir
from nas.search.settings import SearchSettings
from search_space.units import format_macs
from search_space import ArchConfig, SearchSpace, analytic_cost, build_model

BUDGET = "1.5G"  # about one in five architectures of the default space fits: many infeasible
TINY = ["--epochs", "2", "--proxy-width", "0.25", "--data-fraction", "0.25", "--seed", "3", "--data", "digits"]


def tree_hash(path: Path) -> str:
    """Names and bytes of every file under ``path`` (mtimes ignored)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def existing_run(tmp_path: Path) -> Path:
    """A run directory as a (small, finished) search leaves it, written by hand."""
    rd = RunDir(tmp_path / "existing")
    settings = SearchSettings(budget_macs=4_000_000_000, concurrency=2, epochs=3)
    rd.create(settings.to_json(), (Path(__file__).parents[1] / "search_space" / "spaces" / "default.yaml").read_text())
    rd.update(status="finished")
    (rd.trial_dir(0)).mkdir(parents=True)
    (rd.trial_dir(0) / "result.json").write_text('{"status": "complete"}\n')
    (rd.path / "study.journal").write_text("")
    return rd.path


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "binary": tmp_path / "binary.yaml",
        "malicious": tmp_path / "evil.yaml",
        "empty": tmp_path / "empty.yaml",
        "unknown_block": tmp_path / "unknown_block.yaml",
        "a_file": tmp_path / "a_file",
    }
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    files["malicious"].write_text("!!python/object/apply:os.system ['echo pwned']\n")
    files["empty"].write_text("")
    space = SearchSpace.default()
    text = (Path(__file__).parents[1] / "search_space" / "spaces" / "default.yaml").read_text()
    files["unknown_block"].write_text(text.replace("block: [van, cmt, acmix]", "block: [van, transformer]", 1))
    files["a_file"].write_text("not a directory\n")
    assert space.resolution == 224
    return files


def _smallest_macs() -> str:
    return format_macs(SearchSpace.default().smallest()[1].macs)


# (arguments after `nas search`, a piece of the expected one-line message)
BAD_INPUTS = [
    (["--budget", "4GFLOP", "--out", "{new}"], "malformed MAC budget '4GFLOP'"),
    (["--budget=-1G", "--out", "{new}"], "malformed MAC budget '-1G'"),
    (["--budget", "abc", "--out", "{new}"], "malformed MAC budget 'abc'"),
    (["--budget", "0", "--out", "{new}"], "must be positive"),
    (["--budget", "", "--out", "{new}"], "malformed MAC budget"),
    (["--out", "{new}"], "--budget is required"),
    (["--budget", "4G", "--params", "abc", "--out", "{new}"], "malformed parameter count 'abc'"),
    (["--budget", "4G", "--params", "0", "--out", "{new}"], "must be positive"),
    (["--budget", "4G", "--trials", "0", "--out", "{new}"], "--trials: must be >= 1"),
    (["--budget", "4G", "--trials", "-3", "--out", "{new}"], "--trials: must be >= 1"),
    (["--budget", "4G", "--epochs", "0", "--out", "{new}"], "--epochs: must be >= 1"),
    (["--budget", "4G", "--concurrency", "0", "--out", "{new}"], "--concurrency: must be >= 1"),
    (["--budget", "4G", "--concurrency", "two", "--out", "{new}"], "'two' is not an integer"),
    (["--budget", "4G", "--seed", "-1", "--out", "{new}"], "--seed: must be >= 0"),
    (["--budget", "4G", "--proxy-resolution", "48", "--out", "{new}"], "not a multiple of 32"),
    (["--budget", "4G", "--proxy-width", "0", "--out", "{new}"], "--proxy-width 0 must be in (0, 4]"),
    (["--budget", "4G", "--data-fraction", "0", "--out", "{new}"], "--data-fraction 0 must be in (0, 1]"),
    (["--budget", "4G", "--data-fraction", "1.5", "--out", "{new}"], "--data-fraction 1.5 must be in (0, 1]"),
    (["--budget", "4G", "--data", "cifar10:/nonexistent/cifar", "--out", "{new}"], "/nonexistent/cifar does not exist"),
    (["--budget", "4G", "--data", "imagefolder:/nonexistent/imgs", "--out", "{new}"], "/nonexistent/imgs does not exist"),
    (["--budget", "4G", "--data", "svhn", "--out", "{new}"], "unknown data spec 'svhn'"),
    (["--budget", "4G", "--data", "fashion-mnist:/nonexistent/fm", "--out", "{new}"], "/nonexistent/fm does not exist"),
    (["--budget", "4G", "--data", "mnist:{tmp}", "--out", "{new}"], "missing train-images-idx3-ubyte.gz"),
    (["--budget", "4G", "--objectives", "acc,flops", "--out", "{new}"], "unknown objective 'flops'"),
    (["--budget", "4G", "--objectives", "macs", "--out", "{new}"], "must start with acc"),
    (["--budget", "4G", "--sampler", "grid", "--out", "{new}"], "invalid choice: 'grid'"),
    (["--budget", "4G", "--latency-device", "cuda", "--out", "{new}"], "needs --latency-ms or a latency objective"),
    (["--budget", "4G", "--latency-ms", "-5", "--out", "{new}"], "must be a positive number of milliseconds"),
    (["--budget", "4G", "--latency-ms", "fast", "--out", "{new}"], "malformed --latency-ms 'fast'"),
    (["--budget", "4G", "--space", "{tmp}/missing.yaml", "--out", "{new}"], "no such search space file"),
    (["--budget", "4G", "--space", "{binary}", "--out", "{new}"], "not a text file"),
    (["--budget", "4G", "--space", "{malicious}", "--out", "{new}"], "not valid YAML"),
    (["--budget", "4G", "--space", "{empty}", "--out", "{new}"], "empty search space"),
    (["--budget", "4G", "--space", "{unknown_block}", "--out", "{new}"], "unknown block type 'transformer'"),
    (["--budget", "100MFLOPs", "--out", "{new}"], "its smallest has {smallest} MACs"),
    (["--budget", "4G", "--params", "1M", "--out", "{new}"], "no architecture of the space fits --params"),
    (["--budget", "4G", "--address", "nowhere", "--out", "{new}"], "malformed --address 'nowhere'"),
    (["--budget", "4G", "--resume"], "--resume needs --out RUN_DIR"),
    (["--budget", "4G", "--resume", "--out", "{new}"], "no such run directory to resume"),
    (["--resume", "--out", "{existing}", "--budget", "2G"], "--budget 2.00G differs from the run's 4.00G"),
    (["--resume", "--out", "{existing}", "--epochs", "9"], "--epochs 9 differs from the run's 3"),
    (["--resume", "--out", "{a_file}"], "no such run directory to resume"),
    (["--budget", "4G", "--out", "{existing}"], "directory exists and is not empty (use --resume"),
    (["--budget", "4G", "--out", "{a_file}"], "exists and is not a directory"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    argv: list[str], message: str, existing_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {k: str(v) for k, v in _bad_files(tmp_path).items()}
    names.update(new=str(tmp_path / "new_run"), existing=str(existing_run), tmp=str(tmp_path))
    argv = [a.format(**names) for a in argv]
    before = tree_hash(existing_run)
    code, out, err = run_cli(["search", *argv], capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert message.format(smallest=_smallest_macs()) in lines[0]
    assert tree_hash(existing_run) == before
    assert not (tmp_path / "new_run").exists()


def test_cuda_latency_device_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["search", "--budget", "4G", "--latency-ms", "15", "--latency-device", "cuda", "--data", "digits",
                            "--out", str(tmp_path / "run")], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CUDA is not available" in err
    assert not (tmp_path / "run").exists()


def test_run_dir_in_use_is_refused(existing_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_hash(existing_run)
    with RunDir(existing_run).locked():  # what a running search holds
        lock_bytes = (existing_run / ".lock").read_bytes()
        for argv in (["--resume", "--out", str(existing_run)], ["--budget", "4G", "--out", str(existing_run)]):
            code, _, err = run_cli(["search", *argv], capsys)
            assert code == 2 and "in use by another nas search" in err and len(err.strip().splitlines()) == 1
        assert (existing_run / ".lock").read_bytes() == lock_bytes
    (existing_run / ".lock").unlink()
    assert tree_hash(existing_run) == before


def test_status_of_a_non_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        code, _, err = run_cli(["status", str(target)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run_cli(["status", str(tmp_path)], capsys)
    assert "not a search run directory" in err


def test_help_says_flops_are_macs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["search", "--help"], capsys)
    assert code == 0
    assert "FLOPs means multiply-accumulates (MACs)" in out and "VAN and CMT papers" in out


# -- a tiny real search ---------------------------------------------------------------------------


def nas(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "nas.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search") / "run"
    proc = nas("search", "--budget", BUDGET, "--trials", "4", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front" in proc.stdout
    return out


def load_study(run: Path):  # type: ignore[no-untyped-def]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(run / "study.journal"))))


def ray_trained_numbers(run: Path) -> list[int]:
    """The Optuna trial numbers Ray Tune actually ran, from Tune's own experiment state."""
    numbers = []
    for state in run.glob("tune/segment-*/experiment_state-*.json"):
        data = json.loads(state.read_text())
        for trial_json in data["trial_data"]:
            trial = json.loads(trial_json[0]) if isinstance(trial_json, list) else json.loads(trial_json)
            config = trial.get("config") or {}
            numbers.append(int(config["number"]))
    return numbers


@pytest.mark.slow
def test_trained_trials_satisfy_every_constraint(tiny_run: Path) -> None:
    study = load_study(tiny_run)
    budget = json.loads((tiny_run / "run.json").read_text())["settings"]["budget_macs"]
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("complete", "pruned", "failed")]
    assert len(trained) == 4
    for t in trained:
        assert t.constraints and all(v <= 0 for v in t.constraints.values()), t.number
        cfg = ArchConfig.from_dict(t.user_attrs["config"])
        assert analytic_cost(cfg).macs <= budget
        assert t.user_attrs["macs"] == analytic_cost(cfg).macs


@pytest.mark.slow
def test_infeasible_candidates_are_never_trained(tiny_run: Path) -> None:
    study = load_study(tiny_run)
    infeasible = [t for t in study.trials if t.user_attrs.get("status") == "infeasible"]
    assert infeasible, "the tight budget should have produced infeasible candidates"
    for t in infeasible:
        assert any(v > 0 for v in t.constraints.values())
        assert "MACs" in t.user_attrs["failure_reason"] and "> budget" in t.user_attrs["failure_reason"]
        d = tiny_run / "trials" / f"{t.number:05d}"
        assert not (d / "metrics.jsonl").exists()
        assert json.loads((d / "result.json").read_text())["trained"] is False
    ran = ray_trained_numbers(tiny_run)
    assert sorted(ran) == sorted(t.number for t in study.trials if t.user_attrs.get("status") in ("complete", "pruned", "failed"))
    assert not set(ran) & {t.number for t in infeasible}
    top = SearchSettings.from_json(json.loads((tiny_run / "run.json").read_text())["settings"]).top_rung
    for t in study.trials:  # ASHA-stopped trials are PRUNED at a lower rung, never COMPLETE with a partial value
        if t.user_attrs.get("status") == "complete":
            assert t.user_attrs["rung"] == top and t.state.name == "COMPLETE"
        if t.user_attrs.get("status") == "pruned":
            assert t.user_attrs["rung"] < top and t.state.name == "PRUNED" and t.values is None
        if t.user_attrs.get("status") == "infeasible":  # told without a made-up accuracy
            assert t.state.name == "PRUNED" and t.values is None


@pytest.mark.slow
def test_status_counts_add_up(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["status", str(tiny_run), "--json"], capsys)
    assert code == 0
    s = json.loads(out)
    keys = ("complete", "pruned", "failed", "running", "infeasible", "duplicate")
    assert sum(s[k] for k in keys) == s["total"] == len(load_study(tiny_run).trials)
    assert s["complete"] + s["pruned"] + s["failed"] == 4 == s["trained"]
    assert s["running"] == 0 and s["infeasible"] > 0 and s["status"] == "finished"
    assert s["complete"] >= 1 and s["best"] and s["best"][0]["val_acc"] > 0
    run_json = json.loads((tiny_run / "run.json").read_text())
    assert {k: run_json["counts"][k] for k in keys} == {k: s[k] for k in keys}
    assert run_json["settings"]["concurrency"] >= 1 and run_json["versions"]["optuna"]
    code, out, _ = run_cli(["status", str(tiny_run)], capsys)
    assert code == 0 and "infeasible" in out and "never trained" in out


@pytest.mark.slow
def test_pareto_configs_load_profile_and_build(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yamls = sorted((tiny_run / "pareto").glob("*.yaml"))
    assert yamls
    budget = json.loads((tiny_run / "run.json").read_text())["settings"]["budget_macs"]
    accs = []
    for path in yamls:
        cfg = ArchConfig.load(path)
        cost = analytic_cost(cfg)
        assert cost.macs <= budget and cfg.resolution == 224
        code, out, _ = run_cli(["profile", str(path), "--json"], capsys)
        assert code == 0 and json.loads(out)["macs"] == cost.macs
        with torch.no_grad():
            assert build_model(cfg.replace(resolution=64))(torch.randn(1, 3, 64, 64)).shape == (1, cfg.num_classes)
        card = path.with_suffix(".md").read_text()
        for piece in ("params", "MACs", "proxy accuracy", "trial", "seed"):
            assert piece in card
        accs.append((cost.macs, json.loads((tiny_run / "trials" / path.stem.split("_")[1] / "result.json").read_text())["val_acc"]))
    accs.sort()
    assert all(a[1] < b[1] for a, b in itertools.pairwise(accs)), "a front: more MACs must buy more accuracy"


@pytest.mark.slow
def test_resume_extends_without_retraining_and_refuses_a_second_search(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    trained_before = {p.parent.name: p.read_bytes() for p in run.glob("trials/*/metrics.jsonl")}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", "--resume", "--out", str(run), "--trials", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not RunDir(run).in_use():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the resumed search never took its lock"
            time.sleep(0.2)
        code, _, err = run_cli(["search", "--resume", "--out", str(run)], capsys)
        assert code == 2 and "in use by another nas search" in err and len(err.strip().splitlines()) == 1
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    study = load_study(run)
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("complete", "pruned", "failed")]
    assert len(trained) == 6
    hashes = [t.user_attrs["arch_hash"] for t in trained]
    assert len(set(hashes)) == len(hashes), "an architecture was trained twice"
    for name, data in trained_before.items():  # the first run's trials were not retrained
        assert (run / "trials" / name / "metrics.jsonl").read_bytes() == data
    assert all(t.state.name != "RUNNING" for t in study.trials)
    assert sorted(ray_trained_numbers(run)) == sorted(t.number for t in trained)
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["status"] == "finished" and len(run_json["resumes"]) == 1
    code, out, _ = run_cli(["status", str(run), "--json"], capsys)
    assert json.loads(out)["trained"] == 6
    # and a finished run asked for no more trials trains nothing
    again = nas("search", "--resume", "--out", str(run))
    assert again.returncode == 0 and "nothing to train" in again.stderr


# -- the searcher's bookkeeping, driven the way Ray Tune drives it (no Ray, no training) ----------

SMALL_SPACE = {
    "name": "small", "resolution": 64, "num_classes": 10, "downsampling": "cmt", "stem_channels": 8, "head_fc_dim": 0,
    "stages": [
        {"block": "van", "depth": 1, "width": [8, 16, 24]},
        {"block": "van", "depth": 1, "width": 16},
        {"block": "van", "depth": 1, "width": 16},
        {"block": "van", "depth": [1, 2], "width": 32},
    ],
}  # fmt: skip


def small_space_macs() -> list[int]:
    from search_space.space import RandomChooser

    space = SearchSpace.from_dict(SMALL_SPACE)
    seen = {}
    for seed in range(200):
        cfg = space.suggest(RandomChooser(seed))
        seen[cfg.to_yaml()] = analytic_cost(cfg).macs
    return sorted(seen.values())


def make_searcher(tmp_path: Path, budget: int, rungs: int = 2):  # type: ignore[no-untyped-def]
    import yaml
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nas.search.searcher import NasSearcher, make_sampler

    settings = SearchSettings(budget_macs=budget, trials=20, rungs=rungs, sampler="random", concurrency=1)
    rd = RunDir(tmp_path / "run")
    if not rd.is_run():
        rd.create(settings.to_json(), yaml.safe_dump(SMALL_SPACE))
    storage = JournalStorage(JournalFileBackend(str(rd.journal)))
    events: list[tuple[str, dict]] = []
    searcher = NasSearcher(space=SearchSpace.from_dict(SMALL_SPACE), settings=settings, run_dir=rd, storage=storage,
                           sampler=make_sampler(settings, 0), listener=lambda e, i: events.append((e, i)))  # fmt: skip
    return searcher, rd, events


def test_searcher_tells_what_tune_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    import nas.search.searcher as searcher_module

    monkeypatch.setattr(searcher_module, "MAX_CONSECUTIVE_SKIPS", 40)  # the small space runs out fast

    macs = small_space_macs()
    assert len(macs) == 6
    budget = macs[2]  # three feasible architectures, three infeasible
    searcher, rd, events = make_searcher(tmp_path, budget)
    study = searcher.study

    def trial(number: int):  # type: ignore[no-untyped-def]
        return study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))

    # 1: trains both rungs -> COMPLETE with (top-rung acc, MACs); infeasible candidates before it were told, never returned
    c1 = searcher.suggest("t1")
    assert trial(c1["number"]).constraints["macs"] <= 0
    searcher.on_trial_result("t1", {"rung": 0, "budget": 1, "val_acc": 0.5, "epochs": 1, "cpu_seconds": 2.0, "timestamp": 1})
    searcher.on_trial_complete("t1", {"rung": 1, "budget": 3, "val_acc": 0.75, "epochs": 1, "cpu_seconds": 3.5,
                                      "timestamp": 2})  # the STOP row comes only here
    t1 = trial(c1["number"])
    assert t1.state == TrialState.COMPLETE and t1.values[0] == 0.75 and t1.user_attrs["status"] == "complete"
    assert t1.values[1] == t1.user_attrs["macs"] <= budget and t1.user_attrs["rung"] == 1
    assert t1.user_attrs["rung_val_acc"] == [0.5, 0.75]
    assert t1.user_attrs["train_cpu_seconds"] == 5.5  # both rungs' CPU time (a CPU budget counts it)
    searcher.on_trial_complete("t1", {"rung": 1, "val_acc": 0.75, "timestamp": 2})  # a repeat is ignored, not raised
    # 2: stopped by ASHA after rung 0 -> PRUNED with its rung-0 accuracy kept, not COMPLETE with a low-fidelity value
    c2 = searcher.suggest("t2")
    searcher.on_trial_complete("t2", {"rung": 0, "budget": 1, "val_acc": 0.3, "timestamp": 3})
    t2 = trial(c2["number"])
    assert t2.state == TrialState.PRUNED and t2.user_attrs["status"] == "pruned" and t2.values is None
    assert t2.user_attrs["rung"] == 0 and t2.user_attrs["val_acc"] == 0.3 and "rung 1 of 2" in t2.user_attrs["failure_reason"]
    # 3: reported a non-finite loss -> FAIL with the trainer's reason
    c3 = searcher.suggest("t3")
    searcher.on_trial_result("t3", {"status": "failed", "failure_reason": "non-finite loss at epoch 1 step 3",
                                    "rung": -1, "val_acc": 0.0, "timestamp": 4})  # fmt: skip
    searcher.on_trial_complete("t3", {"status": "failed", "rung": -1, "val_acc": 0.0, "timestamp": 4})
    t3 = trial(c3["number"])
    assert t3.state == TrialState.FAIL and t3.user_attrs["failure_reason"] == "non-finite loss at epoch 1 step 3"
    # every feasible architecture has now been trained once: what follows is infeasible or a duplicate
    assert searcher.suggest("t4") == Searcher.FINISHED and searcher.exhausted  # 40 untrainable in a row: stop
    statuses = [t.user_attrs.get("status") for t in study.trials]
    assert statuses.count("infeasible") >= 1 and statuses.count("duplicate") >= 1
    for t in study.trials:
        if t.user_attrs.get("status") == "duplicate":
            original = trial(t.user_attrs["duplicate_of"])
            assert t.state == original.state and t.values == original.values
            assert not (rd.trial_dir(t.number) / "metrics.jsonl").exists()
        if t.user_attrs.get("status") == "infeasible":  # never trained: no accuracy told, only its violation
            assert t.constraints["macs"] > 0 and "> budget" in t.user_attrs["failure_reason"]
            assert t.state == TrialState.PRUNED and t.values is None and not t.intermediate_values
    assert searcher.trained_count() == 3
    assert [e for e, _ in events].count("start") == 3


def test_searcher_error_text_and_interrupted_trials(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from nas.search.searcher import INTERRUPTED, mark_interrupted

    budget = small_space_macs()[-1]  # everything fits
    searcher, _, _ = make_searcher(tmp_path, budget)
    c1 = searcher.suggest("t1")
    searcher.on_trial_result("t1", {"rung": 0, "val_acc": 0.4, "timestamp": 1})
    searcher.on_trial_complete("t1", error=True)  # Tune: the trial raised after its retries...
    searcher.on_trial_error_text("t1", "RuntimeError: worker blew up")  # ...then the callback brings the text
    t1 = searcher.study.trials[c1["number"]]
    assert t1.state == TrialState.FAIL and t1.user_attrs["failure_reason"] == "RuntimeError: worker blew up"
    c2 = searcher.suggest("t2")  # a search killed while this one trains
    killed_hash = searcher.study.trials[c2["number"]].user_attrs["arch_hash"]
    assert searcher.study.trials[c2["number"]].state == TrialState.RUNNING

    resumed, _, _ = make_searcher(tmp_path, budget)
    assert mark_interrupted(resumed.study) == [c2["number"]]
    resumed, _, _ = make_searcher(tmp_path, budget)  # a fresh searcher indexes the repaired study
    t2 = resumed.study.trials[c2["number"]]
    assert t2.state == TrialState.FAIL and t2.user_attrs["failure_reason"] == INTERRUPTED
    c3 = resumed.suggest("t3")  # the interrupted architecture is trained again, not called a duplicate
    assert resumed.study.trials[c3["number"]].user_attrs["arch_hash"] == killed_hash
    assert resumed.trained_count() == 1  # the failed trial counts; the interrupted one does not

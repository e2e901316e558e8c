"""Issue 24, parts 2-4: one guarded writer, one guarded reader, one pre-flight check of a run.

Unit tests of `search_space.files` (fast) check each defence on the real writer and reader; the
CLI tests (slow: they need a real finished search) check that every command goes through them:
planted directory links and hard links, FIFOs and sparse giants where run files belong, outputs
aimed at a run's own records, and resumes of runs whose study, trial records or settings are
gone or edited, each refused with one line before Ray starts, nothing outside the named
directories touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import shared_search_run, tree_digest

from search_space.errors import UserError
from search_space.files import (
    append_atomic,
    held_lock,
    make_dirs,
    read_bytes,
    read_json,
    write_atomic,
)

NAS = [sys.executable, "-m", "nas.cli"]
SCALING = [sys.executable, "-m", "scaling.cli"]


def _env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYBRID_NAS_FAULT")}
    out.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    return out


def run(cmd: list, *argv: object, timeout: float = 120, preexec=None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([*cmd, *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=_env(),
                          preexec_fn=preexec)  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-2000:]}"
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


# -- the writer (fast) ---------------------------------------------------------------------------


def test_a_link_in_any_component_below_the_root_is_refused(tmp_path):
    root, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "report").symlink_to(elsewhere, target_is_directory=True)
    for target in (root / "report" / "report.html", root / "report" / "deeper" / "x.png"):
        with pytest.raises(UserError, match="symbolic link"):
            write_atomic(target, "x", root=root)
        with pytest.raises(UserError, match="symbolic link"):
            make_dirs(target.parent, root=root)
    assert list(elsewhere.iterdir()) == []
    # the root itself is the user's to name: a link there is followed
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    write_atomic(alias / "fine" / "x.txt", "ok", root=alias)
    assert (root / "fine" / "x.txt").read_text() == "ok"


def test_replacing_a_hard_linked_file_leaves_the_other_name_alone(tmp_path, victim):
    target = tmp_path / "run.json"
    os.link(victim, target)
    write_atomic(target, "new", root=tmp_path)
    assert victim.read_text() == "precious\n" and target.read_text() == "new"
    assert os.stat(target).st_nlink == 1


def test_appending_to_a_hard_linked_file_never_writes_in_place(tmp_path, victim):
    metrics = tmp_path / "metrics.jsonl"
    os.link(victim, metrics)
    append_atomic(metrics, '{"epoch": 2}\n', root=tmp_path)
    assert victim.read_text() == "precious\n"
    assert metrics.read_text() == 'precious\n{"epoch": 2}\n'


def test_metrics_of_a_trial_never_reach_a_hard_link(tmp_path, victim):
    from results.run_dir import RunDir

    rd = RunDir(tmp_path / "run")
    make_dirs(rd.trial_dir(0), root=rd.path)
    os.link(victim, rd.trial_dir(0) / "metrics.jsonl")
    rd.append_metrics(0, {"epoch": 1, "val_acc": 0.5})  # epoch 1 starts the file afresh
    rd.append_metrics(0, {"epoch": 2, "val_acc": 0.6})
    assert victim.read_text() == "precious\n"
    assert [r["epoch"] for r in rd.read_trial_metrics(0)] == [1, 2]


def test_a_hard_linked_lock_gets_its_own_inode_and_still_excludes(tmp_path, victim):
    from results.run_dir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    os.link(victim, rd.lock_file)
    with rd.locked():
        assert victim.read_text() == "precious\n"
        assert rd.lock_file.read_text().strip() == str(os.getpid())
        assert os.stat(rd.lock_file).st_nlink == 1
        with pytest.raises(BlockingIOError):  # a second holder is refused on the new inode
            with held_lock(rd.lock_file, root=rd.path):
                pass
        assert rd.in_use()


def test_a_fifo_lock_is_refused_not_waited_on(tmp_path):
    from results.run_dir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    os.mkfifo(rd.lock_file)
    started = time.monotonic()
    with pytest.raises(UserError, match="not a regular file"):
        with rd.locked():
            pass
    assert not rd.in_use() and not rd.search_alive()
    assert time.monotonic() - started < 5


def test_a_resume_does_not_grow_a_hard_linked_backup_journal(tmp_path):
    import optuna

    from results.run_dir import RunDir
    from results.storage import RunStorage

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    study = optuna.create_study(study_name="search", storage=RunStorage(rd).open_for_search())
    study.add_trial(optuna.trial.create_trial(value=1.0))
    backup = tmp_path / "backup.journal"
    os.link(rd.journal, backup)  # what `cp -al run backup` leaves
    before = backup.read_bytes()
    storage = RunStorage(rd).open_for_search()  # the resume's way in
    optuna.load_study(study_name="search", storage=storage).add_trial(optuna.trial.create_trial(value=2.0))
    assert backup.read_bytes() == before
    assert len(optuna.load_study(study_name="search", storage=RunStorage(rd).open_for_search()).trials) == 2


def test_a_run_record_is_never_an_output(tmp_path):
    from results.run_dir import refuse_run_records

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    for out in (run / "pareto", run / "run.json", run / "trials" / "00000", run):
        with pytest.raises(UserError, match="--out"):
            refuse_run_records(out, "--out")
    link = tmp_path / "link"
    link.symlink_to(run / "pareto")
    with pytest.raises(UserError, match="pareto"):
        refuse_run_records(link, "--out")
    refuse_run_records(run / "report", "--out")  # the report's own place
    refuse_run_records(run / "final" / "00003", "--save", allow=("final",))
    refuse_run_records(tmp_path / "elsewhere", "--out")


# -- the reader (fast) ---------------------------------------------------------------------------


def test_the_reader_refuses_fifos_devices_and_giants_at_once(tmp_path):
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    sparse = tmp_path / "run.json"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 30)  # 1 GB, no blocks
    started = time.monotonic()
    with pytest.raises(UserError, match="not a regular file"):
        read_json(fifo, "result")
    with pytest.raises(UserError, match="not a regular file"):
        read_bytes("/dev/zero", "latency table")
    with pytest.raises(UserError, match="larger than"):
        read_json(sparse, "run.json")
    assert time.monotonic() - started < 2
    assert read_json(tmp_path / "missing.json", "result", missing_ok=True) is None
    (tmp_path / "half.json").write_text('{"a": ')
    assert read_json(tmp_path / "half.json", "result", lenient=True) is None


# -- every command through them (slow: a real finished search) ----------------------------------


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory) -> Path:
    shared = shared_search_run(tmp_path_factory.getbasetemp())
    assert shared.returncode == 0, shared.output[-3000:]
    return shared.run_dir


@pytest.fixture()
def run_dir(run_copy, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_copy, target, symlinks=True)
    return target


@pytest.mark.slow
def test_a_linked_report_directory_and_outputs_over_run_records_are_refused(run_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "report").symlink_to(elsewhere, target_is_directory=True)
    one_error_line(run(NAS, "report", run_dir), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    (run_dir / "report").unlink()

    before = tree_digest(run_dir)
    one_error_line(run(NAS, "export", run_dir, "--top", "1", "--out", run_dir / "pareto"), "pareto")
    one_error_line(run(NAS, "report", run_dir, "--out", run_dir / "trials"), "trials")
    trial = json.loads(run(NAS, "status", run_dir, "--json").stdout)["pareto"][0]
    one_error_line(run(SCALING, "expand", "--from", run_dir, "--trial", trial, "--phi", "1", "--out",
                       run_dir / "run.json"), "run.json")  # fmt: skip
    assert tree_digest(run_dir) == before


@pytest.mark.slow
def test_a_linked_final_directory_is_refused_before_training(run_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "final").symlink_to(elsewhere, target_is_directory=True)
    one_error_line(run(NAS, "finalize", run_dir, "--top", "1", "--epochs", "1"), "symbolic link")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_a_fifo_result_or_lock_hangs_no_reader(run_dir):
    result = run_dir / "trials" / "00000" / "result.json"
    result.unlink()
    os.mkfifo(result)
    for argv in (["status", run_dir], ["report", run_dir], ["export", run_dir, "--top", "1", "--out", run_dir.parent / "x"],
                 ["compare", run_dir, run_dir], ["search", "--resume", "--out", run_dir, "--trials", "4"],
                 ["finalize", run_dir, "--top", "1", "--epochs", "1"]):  # fmt: skip
        one_error_line(run(NAS, *argv, timeout=60), "not a regular file")
    listing = run(NAS, "runs", run_dir.parent, "--json", timeout=60)  # a damaged run is listed, not fatal
    assert listing.returncode == 0 and "not a regular file" in listing.stdout
    one_error_line(run(SCALING, "expand", "--from", run_dir, "--phi", "1", timeout=60), "not a regular file")
    result.unlink()
    lock = run_dir / ".lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    assert run(NAS, "status", run_dir, timeout=60).returncode == 0
    assert run(NAS, "runs", run_dir.parent, timeout=60).returncode == 0


@pytest.mark.slow
def test_a_sparse_giant_run_json_or_result_is_refused_quickly(run_dir):
    result = run_dir / "trials" / "00000" / "result.json"
    with open(result, "r+b") as fh:
        fh.truncate(1 << 30)
    started = time.monotonic()
    one_error_line(run(NAS, "status", run_dir, timeout=60), "larger than")
    with open(run_dir / "run.json", "r+b") as fh:
        fh.truncate(1 << 30)
    one_error_line(run(NAS, "status", run_dir, timeout=60), "larger than")
    assert time.monotonic() - started < 30  # two CLI start-ups, no gigabytes read


@pytest.mark.slow
def test_resume_checks_the_run_against_its_record_before_ray(run_dir):
    pristine = tree_digest(run_dir)
    trials = run_dir / "trials"
    shutil.move(trials, run_dir.parent / "trials.away")
    one_error_line(run(NAS, "search", "--resume", "--out", run_dir, "--trials", "4"), "trials", "missing")
    shutil.move(run_dir.parent / "trials.away", trials)

    meta = json.loads((run_dir / "run.json").read_text())
    edited = json.loads(json.dumps(meta))
    edited["settings"]["objectives"] = ["acc", "flops"]
    (run_dir / "run.json").write_text(json.dumps(edited))
    one_error_line(run(NAS, "search", "--resume", "--out", run_dir, "--trials", "4"), "objectives")
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    assert tree_digest(run_dir) == pristine

    journal = run_dir / "study.journal"
    shutil.move(journal, run_dir.parent / "journal.away")
    started = time.monotonic()
    one_error_line(run(NAS, "search", "--resume", "--out", run_dir, "--trials", "4"), "study is missing")
    assert time.monotonic() - started < 30  # refused before Ray starts
    for argv in (["status", run_dir], ["report", run_dir]):
        one_error_line(run(NAS, *argv), "study", "missing")
    after = tree_digest(run_dir)
    assert {k: v for k, v in after.items()} == {k: v for k, v in pristine.items() if k != "study.journal"}


@pytest.mark.slow
def test_a_read_only_run_directory_is_refused_before_ray(run_dir):
    argv = [*NAS, "search", "--resume", "--out", str(run_dir), "--trials", "4"]
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount in a private mount namespace
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(run_dir), *argv]
    else:
        os.chmod(run_dir, 0o555)
    before = tree_digest(run_dir)
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_env())
    finally:
        os.chmod(run_dir, 0o755)
    one_error_line(done, "cannot write")
    assert "symbolic link" not in done.stderr
    assert time.monotonic() - started < 30
    assert tree_digest(run_dir) == before


def test_a_journal_lock_link_left_by_a_kill_does_not_block_the_resume(tmp_path):
    """Optuna's default journal lock is a symbolic link next to the journal: a SIGKILL mid-append left
    it behind, and the resume refused "a symbolic link inside the run directory". Appends are now
    locked in-process; a stale link of that one kind is removed, any other link still refused."""
    import optuna

    from results.run_dir import RunDir
    from results.storage import RunStorage

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    (rd.path / "run.json").write_text("{}")
    study = optuna.create_study(study_name="search", storage=RunStorage(rd).open_for_search())
    study.add_trial(optuna.trial.create_trial(value=1.0))
    assert not os.path.lexists(rd.stale_journal_lock)  # no link made by our appends
    rd.stale_journal_lock.symlink_to(rd.journal)  # what a kill during an old version's append left
    rd.check_no_links()
    RunStorage(rd).open_for_search()
    assert not os.path.lexists(rd.stale_journal_lock)
    rd.stale_journal_lock.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="symbolic link"):
        rd.check_no_links()

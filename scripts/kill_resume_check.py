"""Kill `nas search` with SIGKILL at random moments, resume it each time, and check nothing is lost.

    python scripts/kill_resume_check.py [--kills 5] [--trials 24] [--seed 0] [--min-delay 1] [--max-delay 8] [--keep DIR]

A soak test beside the deterministic ones in ``tests/test_reliability.py``: one run on a tiny space
is started, killed (the whole process group) at a random moment between ``--min-delay`` and
``--max-delay`` seconds after each (re)start's first training began, and resumed, ``--kills`` times; then it is resumed to the end. After every kill it
checks that each trial finished before the kill keeps its state and values, and at the end that no
trial is RUNNING, the requested count was trained, no architecture was trained twice (the
``HYBRID_NAS_TRAIN_LOG`` testing hook records every training start) and that ``nas status`` adds
up. Every process a search started (Ray's included) must be gone 45 s after a kill; the script
ends stragglers by PID. Prints one line per kill and a summary; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_helpers import (
    Tagged,
    assert_consistent,
    nas_cmd,
    run_cli,
    search_args,
    snapshot,
    start_cli,
    status_json,
    study_trials,
    train_log,
    trained,
    write_space,
)

from results.run_dir import RunDir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-delay", type=float, default=1.0, help="seconds after the first training (default 1)")
    parser.add_argument("--max-delay", type=float, default=8.0, help="(default 8)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    space = write_space(work / "space.yaml")
    run = work / "run"
    log = work / "train.jsonl"
    tagged = Tagged()
    env = tagged.env(HYBRID_NAS_TRAIN_LOG=str(log), TUNE_GLOBAL_CHECKPOINT_S="2")
    problems: list[str] = []
    previous: dict = {}  # the study after the last kill
    try:
        for k in range(args.kills):
            argv = search_args(run, space, trials=args.trials, epochs=2, concurrency=2) if k == 0 else \
                ["search", "--resume", "--out", str(run)]  # fmt: skip
            trainings_before = len(train_log(log))
            proc = start_cli(nas_cmd(*argv), env, work / f"search{k}.log")
            # the clock starts at this search's first training (Ray's start-up varies with load)
            while len(train_log(log)) == trainings_before and proc.poll() is None:
                time.sleep(0.1)
            delay = rng.uniform(args.min_delay, args.max_delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            if proc.poll() is not None:
                print(f"kill {k + 1}: the search ended (exit {proc.returncode}) before {delay:.1f}s; no kill")
                break
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            t0 = time.monotonic()
            left = tagged.wait_gone(45)
            if left:
                problems.append(f"kill {k + 1}: {len(left)} process(es) outlived the search")
                tagged.kill_all()
            before = snapshot(run, work / f"snap{k}") if RunDir(run).journal.exists() else {}
            report = status_json(run) if RunDir(run).run_json.exists() else {}
            running = {n for n, t in before.items() if t.state.name == "RUNNING"}
            print(f"kill {k + 1} {delay:4.1f}s after the first training: {sum(trained(t) for t in before.values())} trained, "
                  f"running {sorted(running)}, processes gone in {time.monotonic() - t0:.1f}s, "
                  f"status says {report.get('status')}")  # fmt: skip
            for n, t in previous.items():
                now = before.get(n)
                if t.state.name != "RUNNING" and (now is None or now.state != t.state or now.values != t.values):
                    problems.append(f"kill {k + 1}: trial {n} changed after it had finished")
            previous = before
        final = run_cli(nas_cmd("search", "--resume", "--out", run), env, timeout=1200)
        if final.returncode != 0:
            problems.append(f"final resume exited {final.returncode}: {final.stderr[-500:]}")
        else:
            try:
                report = assert_consistent(run, args.trials)
                print(f"final: {report['trained']} trained, {report['interrupted']} interrupted, "
                      f"{report['total']} trials in the study")  # fmt: skip
            except AssertionError as exc:
                problems.append(f"final state: {exc}")
            rows = train_log(log)
            end = study_trials(run)
            interrupted = [t.user_attrs.get("arch_hash") for t in end.values() if t.user_attrs.get("interrupted")]
            for h in {r["arch_hash"] for r in rows}:
                n = sum(r["arch_hash"] == h for r in rows)
                if n > 1 + interrupted.count(h):
                    problems.append(f"architecture {h[:8]} trained {n} times")
    finally:
        tagged.cleanup()
    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)", f"(work dir {work})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

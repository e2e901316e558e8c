"""`nas search`: Ray-distributed Optuna search under MAC ("FLOPs"), params and latency budgets."""

from __future__ import annotations

import argparse
import sys
import textwrap

from ..cli_utils import DATA_HELP, non_negative_int, old_spellings, positive_int, resolution_arg
from ..search import settings as S

DEFAULTS = textwrap.fill(
    f"Defaults ({S.DEFAULT_TRIALS} trials of up to {S.DEFAULT_EPOCHS} epochs at {S.DEFAULT_PROXY_RESOLUTION} px, "
    f"proxy width x{S.DEFAULT_PROXY_WIDTH:g}, on {S.DEFAULT_DATA_FRACTION:g} of the training data, one trial per "
    "CPU) are sized to finish within 10 minutes on 2 CPU cores (docs/search.md gives measured times and fronts). "
    "The default data is Fashion-MNIST where it is installed (scripts/install.sh installs it), else the bundled "
    "digits with a one-line notice. Scale up with --trials/--epochs/--proxy-resolution/--proxy-width, "
    "other data (--data fashion-mnist, cifar10:PATH or imagefolder:PATH), a GPU (used automatically when Ray sees one), or a cluster "
    "(--address HOST:PORT of `ray start --head`).",
    width=98,
)

DESCRIPTION = f"""\
Search the hybrid VAN/CMT/ACmix space for architectures that fit a budget, training each candidate
as a cheap proxy (low resolution, few epochs) with Ray Tune (ASHA early stopping) and Optuna.

FLOPs means multiply-accumulates (MACs), as in the VAN and CMT papers (CMT-S: 4.0 G at 224 px).
The budget applies to the architecture at the space's deploy resolution (224 px for the default
space); the proxy trains at --proxy-resolution on the data's classes. Candidates over a budget are
rejected when sampled and never trained; repeated architectures are not trained twice.

{DEFAULTS}

Everything lands in RUN_DIR: the Optuna journal, Ray Tune state, per-trial metrics, and
pareto/*.yaml configs (+ .md cards) that `nas profile` and `build_model` accept. With --storage
the Optuna study is kept in that database instead (run.json says which; watch it live with
`nas dashboard RUN_DIR`)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search architectures under a FLOPs (MACs) / params / latency budget",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("budgets (FLOPs = multiply-accumulates, MACs)")
    g.add_argument("--budget", metavar="MACS",
                   help="MAC budget at deploy resolution: 4GFLOPs, 4G, 600MFLOPs, 4e9, 4000000000 "
                        "(required for a new run)")  # fmt: skip
    g.add_argument("--params", metavar="N", help="parameter limit: 30M, 2.5M, 3e7")
    g.add_argument("--latency-ms", metavar="MS", help="latency limit (batch 1, one thread), predicted per block")
    g.add_argument("--latency-device", choices=S.DEVICES,
                   help=f"the device whose latency is predicted and measured (default {S.DEFAULT_LATENCY_DEVICE}; "
                        "the trials' training device is chosen by Ray)")  # fmt: skip
    g.add_argument("--latency-table", metavar="TABLE.json",
                   help="predict latency with a table built on the target device (nas latency-table build "
                        "there); default: a table measured on this machine")  # fmt: skip
    o = p.add_argument_group("search")
    o.add_argument("--objectives", metavar="LIST",
                   help="acc | acc,macs | acc,latency | acc,macs,latency (default acc,macs)")  # fmt: skip
    o.add_argument("--sampler", choices=S.SAMPLERS, help=f"Optuna sampler (default {S.DEFAULT_SAMPLER})")
    o.add_argument("--trials", type=positive_int,
                   help=f"architectures to train (default {S.DEFAULT_TRIALS}); infeasible and duplicate "
                        "candidates are free and do not count")  # fmt: skip
    o.add_argument("--space", metavar="SPACE.yaml", help="search space YAML (default: the packaged space)")
    o.add_argument("--seed", type=non_negative_int, help=f"sampler and data seed (default {S.DEFAULT_SEED})")
    t = p.add_argument_group("proxy training")
    t.add_argument("--rungs", type=positive_int,
                   help=f"fidelity rungs (default {S.DEFAULT_RUNGS}): every architecture trains at the lowest, the best "
                        f"1/{S.RUNG_GROWTH} of each rung goes on to the next (twice the width, then {S.RUNG_GROWTH}x "
                        "the images); the proxy flags below describe the top rung, which decides the front; "
                        "1: one proxy for all")  # fmt: skip
    t.add_argument("--epochs", type=positive_int, help=f"proxy epochs per trial (default {S.DEFAULT_EPOCHS})")
    t.add_argument("--proxy-resolution", type=resolution_arg,
                   help=f"proxy training resolution, a multiple of 32 (default {S.DEFAULT_PROXY_RESOLUTION})")  # fmt: skip
    t.add_argument("--proxy-width", metavar="W",
                   help=f"width multiplier of the proxy model (default {S.DEFAULT_PROXY_WIDTH:g}; 1 trains the real widths)")  # fmt: skip
    t.add_argument("--batch-size", type=positive_int, help=f"proxy batch size (default {S.DEFAULT_BATCH_SIZE})")
    t.add_argument("--data-fraction", metavar="F",
                   help=f"fraction of the training data at the top rung, in (0, 1] (default {S.DEFAULT_DATA_FRACTION:g})")  # fmt: skip
    t.add_argument("--data", metavar="SPEC", help=DATA_HELP)
    r = p.add_argument_group("resources and run directory")
    r.add_argument("--concurrency", type=positive_int, help="trials at a time (default: one per CPU of the cluster)")
    r.add_argument("--threads", type=positive_int, help="CPU threads per trial (default: CPUs / concurrency)")
    r.add_argument("--max-failures", type=non_negative_int,
                   help=f"retries of a trial that raised or lost its worker (default {S.DEFAULT_MAX_FAILURES})")  # fmt: skip
    r.add_argument("--address", metavar="HOST:PORT", help="join an existing Ray cluster (default: start Ray locally)")
    r.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/search-<timestamp>)")
    r.add_argument("--storage", metavar="URL",
                   help="keep the Optuna study in a database instead of RUN_DIR/study.journal: sqlite:///PATH or "
                        "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB (the password is never stored: give "
                        "it in PGPASSWORD or ~/.pgpass, or here again with --resume)")  # fmt: skip
    r.add_argument("--study-name", metavar="NAME",
                   help="the study's name in the storage (default: search-<run dir name>-<random> in a "
                        "database, search in the journal)")  # fmt: skip
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out to the requested --trials (its other settings are kept)")  # fmt: skip
    old_spellings(p, {"--device": "--latency-device"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..search.runner import prepare
    from ..search.runner import run as run_search
    from results.storage import redact

    # run.json records the command line (and Ray its driver's): never with a database password
    sys.argv[:] = [redact(a) for a in sys.argv]
    plan = prepare(args)  # every check that can fail on user input, before anything is written
    if args.data is None and not args.resume:
        from train_proxy.data import default_data_notice

        notice = default_data_notice()
        if notice:
            print(notice, file=sys.stderr)
    # Not a terminal (a log, CI): wide enough that the Pareto table is never cut.
    # markup=False: a "[red]" in a path or name is text, not a style (and nothing of ours uses markup)
    out, err = Console(soft_wrap=True, markup=False), Console(stderr=True, soft_wrap=True, markup=False)
    if not out.is_terminal:
        out = Console(soft_wrap=True, width=200, markup=False)
    return run_search(plan, out, err)

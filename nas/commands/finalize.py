"""`nas finalize RUN_DIR`: train chosen architectures of a search fully, into RUN_DIR/final/<trial>/."""

from __future__ import annotations

import argparse
import shlex
import sys

from search_space.text import printable

from train_proxy import proxy_defaults as D

from ..cli_utils import (DATA_HELP, batch_size_arg, fraction_arg, non_negative_int, old_spellings, positive_int,
                         print_json, resolution_arg, width_arg)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finalize",
        help="train the chosen architectures of a run fully (kept, resumable)",
        description="Train architectures of a search run fully: the trial's network at full width on all the "
        "training data (AdamW, warm-up + cosine, label smoothing, the config's stochastic depth), saved after "
        "every epoch into RUN_DIR/final/<trial>/ as nas train --save does (weights as safetensors, training "
        "state, history, curves, card; test-split accuracy at the end where the data has one). Default: the "
        "run's Pareto front. Run it again to continue unfinished trainings; finished ones are kept. Several "
        "train at once as Ray tasks. --data-fraction and --proxy-width make a quicker, smaller final training (as in "
        "nas train). nas report RUN_DIR then compares proxy and final accuracy.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by nas search")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=non_negative_int, action="append", metavar="N", help="trial to train (repeatable)")
    pick.add_argument("--top", type=positive_int, metavar="K", help="the K most accurate complete feasible trials")
    p.add_argument("--epochs", type=positive_int, default=D.FULL_EPOCHS,
                   help=f"epochs of each full training (default {D.FULL_EPOCHS})")  # fmt: skip
    p.add_argument("--proxy-resolution", type=resolution_arg,
                   help="training resolution, a multiple of 32 (default: the run's proxy resolution)")  # fmt: skip
    p.add_argument("--data", help=f"{DATA_HELP} (default: the run's data)")
    p.add_argument("--data-fraction", type=fraction_arg, default=D.FULL_DATA_FRACTION,
                   help=f"share of the train split used, in (0, 1] (default {D.FULL_DATA_FRACTION:g}: all of it)")  # fmt: skip
    p.add_argument("--proxy-width", type=width_arg, default=D.FULL_WIDTH,
                   help=f"width multiplier, in (0, {D.MAX_WIDTH:g}] (default {D.FULL_WIDTH:g}: the network's own widths)")  # fmt: skip
    p.add_argument("--batch-size", type=batch_size_arg, default=D.BATCH_SIZE, help=f"batch size (default {D.BATCH_SIZE})")
    p.add_argument("--lr", type=float, default=D.LR, help=f"peak learning rate of AdamW (default {D.LR:g})")
    p.add_argument("--seed", type=int, default=D.SEED, help=f"training seed (default {D.SEED})")
    p.add_argument("--concurrency", type=positive_int, help="trainings at a time (default: one per CPU, at most "
                   "the number of trainings)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, help="CPU threads per training (default: CPUs / concurrency)")
    p.add_argument("--device", default=D.DEVICE, help=f"training device: auto (default {D.DEVICE}), cpu or cuda[:N]")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default=D.PRECISION,
                   help="on CUDA: auto (default: bf16 autocast where the GPU has it natively, else fp16 with a "
                        "gradient scaler), bf16, fp16 or fp32; on the CPU auto is fp32, and bf16 (autocast) needs "
                        "a CPU with native bf16 (AVX512-BF16 or AMX)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON list")
    old_spellings(p, {"--resolution": "--proxy-resolution"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from nas.finalize import FinalizeOptions, plan, start_new, train_all
    from search_space.errors import UserError

    if not (args.lr > 0 and args.lr < 10):
        raise UserError(f"--lr must be a positive number below 10, got {args.lr}")
    options = FinalizeOptions(epochs=args.epochs, resolution=args.proxy_resolution, data=args.data,
                              data_fraction=args.data_fraction, width=args.proxy_width, batch_size=args.batch_size,
                              lr=args.lr, seed=args.seed, device=args.device, precision=args.precision)  # fmt: skip
    cpus = os.cpu_count() or 1
    provisional_threads = args.threads or 1
    run_, jobs, spec, data, bundle = plan(args.run_dir, args.trial, args.top, options, provisional_threads)
    todo = [j for j in jobs if j.state != "done"]
    concurrency = min(args.concurrency or cpus, max(1, len(todo)))
    gpus_per_job = 0.0
    if concurrency > 1:
        from nas.search.runner import plan_resources, start_ray

        start_ray(None)
        res = plan_resources(concurrency, args.threads)
        concurrency, threads, gpus_per_job = res.concurrency, res.threads, res.gpus_per_trial
    else:
        threads = args.threads or max(1, cpus)
    if threads != provisional_threads:
        from dataclasses import replace

        spec = replace(spec, threads=threads)
    start_new(jobs, spec, data, bundle, run_, shlex.join(["nas", *sys.argv[1:]]))
    for j in jobs:
        if j.state == "done":
            print(f"trial {j.trial.number}: already finalised in {printable(j.path)}", file=sys.stderr)
    print(f"finalising {len(todo)} trial(s) of {printable(run_.path)} on {printable(bundle.summary())}: {spec.epochs} epochs at "
          f"{spec.resolution} px, width x{spec.width_multiplier:g}, data fraction {spec.data_fraction:g}, "
          f"{concurrency} at a time, {threads} thread(s) each"
          + (f", {gpus_per_job:g} GPU each" if gpus_per_job else ""), file=sys.stderr)  # fmt: skip

    results: dict[int, dict] = {}
    failed: list[int] = []

    def report(job, result, error) -> None:  # type: ignore[no-untyped-def]
        if error is not None or result is None or result.get("status") == "failed":
            failed.append(job.trial.number)
            why = error or (result or {}).get("failure_reason")
            print(f"trial {job.trial.number}: FAILED ({printable(why)}); run nas finalize again to continue", file=sys.stderr)
            return
        results[job.trial.number] = result
        test = f", test_acc {result['test_acc']:.4f}" if result.get("test_acc") is not None else ""
        print(f"trial {job.trial.number}: proxy val_acc {job.trial.val_acc:.4f} -> final val_acc "
              f"{result['val_acc']:.4f}{test} after {result['epochs']} epochs ({result['train_seconds']:.0f} s)",
              file=sys.stderr)  # fmt: skip

    train_all(jobs, concurrency, threads, gpus_per_job, bundle, report)
    finals = {f.number: f for f in run_.finals()}
    rows = [{"trial": j.trial.number, "dir": str(j.path), "proxy_val_acc": j.trial.val_acc,
             "final_val_acc": finals[j.trial.number].val_acc if j.trial.number in finals else None,
             "final_test_acc": finals[j.trial.number].test_acc if j.trial.number in finals else None,
             "state": "failed" if j.trial.number in failed else "done"} for j in jobs]  # fmt: skip
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            final = f"{r['final_val_acc']:.4f}" if r["final_val_acc"] is not None else "-"
            print(f"trial {r['trial']}: proxy {r['proxy_val_acc']:.4f}  final {final}  {printable(r['dir'])}")
    return 1 if failed else 0

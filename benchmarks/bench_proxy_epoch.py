"""One proxy epoch of `train_proxy` (what `nas train` and a search's trials run) against a plain
fp32 eager PyTorch loop, side by side in one run, on the same network, images, batch, optimiser
and threads, each with one evaluation pass over the same validation images.

    python benchmarks/bench_proxy_epoch.py                                   # default proxy, van1/cmt1/acmix1
    python benchmarks/bench_proxy_epoch.py --width 1.0                       # the reference's network
    python benchmarks/bench_proxy_epoch.py --data-fraction 0.02 --val-fraction 0.2 --repeats 3   # shorter

The architectures are the fidelity study's (`bench_proxy_fidelity.choose_architectures`: the
mixed a00-a11 and the pure-family van0-2, cmt0-2, acmix0-2; by default van1, cmt1, acmix1). Variants, each a full epoch (model build, training steps, one
validation pass):

* ``plain``: the loop anyone would write over ``build_model``'s network with PyTorch's stock
  kernels: index a batch, forward, cross-entropy, backward, AdamW step; then score the
  validation images in batches of 256 under ``torch.no_grad``. ACmix's window attention runs as
  the shifted-view loop, CMT's attention as SDPA whatever its number of keys, and convolutions as
  oneDNN's (`--plain-now` instead keeps the two attention paths that ``build_model``'s network
  takes on small maps, so that the trainer's own gain shows).
* ``trainer``: `train_proxy.train_proxy` as shipped (its recipe adds augmentation, the learning
  rate schedule and loss tracking; on the CPU it swaps in `train_proxy.fast_kernels`).
* ``trainer-stock`` (``--stock``): the trainer with the stock kernels (both fast paths off), whose
  accuracy the shipped trainer must equal: same seed, same data order, only float rounding differs.
* candidates (``--candidates``): the plain loop with one change each: ``channels_last``,
  ``bf16`` (CPU autocast; AVX512-BF16/AMX absent it runs emulated), ``eval-inference`` (inference
  mode, batches of 1024), ``compile`` (torch.compile of the model, its compile time included).

Each repeat runs every variant once, in an order rotated from repeat to repeat. Reported: medians
of wall and process CPU seconds, their split into training steps and evaluation, the accuracy,
and the median of the per-repeat ratios variant / plain (CPU time is robust to other processes
competing for the cores; wall time is what a user waits). The command and the load average
(os.getloadavg, before and after) are printed with the figures. Goal (issue 28): trainer / plain
<= 0.6 for the default proxy and for the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy_fidelity import choose_architectures  # noqa: E402

from search_space import build_model  # noqa: E402
from search_space.files import write_json_atomic  # noqa: E402
from train_proxy import ProxySpec, load_data, train_proxy  # noqa: E402
from train_proxy import fast_kernels  # noqa: E402
from train_proxy import proxy_defaults as D  # noqa: E402
from train_proxy.data import stratified_subset  # noqa: E402
from train_proxy.trainer import DATA_SEED, proxy_config  # noqa: E402

CANDIDATES = ("channels_last", "bf16", "eval-inference", "compile")


def stock_kernels(stock: bool) -> contextlib.AbstractContextManager[None]:
    """The small-map fast paths off (`train_proxy.fast_kernels.stock_paths`) while ``stock``."""
    return fast_kernels.stock_paths() if stock else contextlib.nullcontext()


def validation(bundle: Any, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images the trainer scores at ``fraction`` (its fixed stratified subset)."""
    x, y = bundle.val.tensors
    if fraction < 1.0:
        keep = torch.from_numpy(np.sort(stratified_subset(y.numpy(), fraction, DATA_SEED)))
        x, y = x[keep], y[keep]
    return x, y


def plain_epoch(cfg: Any, spec: ProxySpec, bundle: Any, *, change: str | None = None, stock: bool = True) -> dict[str, Any]:
    """One epoch of the plain loop (module docstring), with at most one candidate ``change``."""
    wall, cpu = time.perf_counter(), time.process_time()
    with stock_kernels(stock):
        torch.manual_seed(spec.seed)
        model = build_model(proxy_config(cfg, spec, bundle.num_classes))
        if change == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        run = torch.compile(model) if change == "compile" else model
        built = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if change == "bf16" else contextlib.nullcontext()
        x_all, y_all = bundle.train.tensors
        order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(spec.seed))
        steps = len(y_all) // spec.batch_size
        model.train()
        for i in range(steps):
            idx = order[i * spec.batch_size : (i + 1) * spec.batch_size]
            x, y = x_all[idx], y_all[idx]
            if change == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = run(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=spec.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trained = time.perf_counter()
        x_val, y_val = validation(bundle, spec.val_fraction)
        model.eval()
        batch = 1024 if change == "eval-inference" else 256
        grad_off = torch.inference_mode() if change == "eval-inference" else torch.no_grad()
        correct = 0
        with grad_off, autocast:
            for start in range(0, len(y_val), batch):
                x = x_val[start : start + batch]
                if change == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                correct += int((run(x).argmax(1) == y_val[start : start + batch]).sum())
    end = time.perf_counter()
    return {"wall": end - wall, "cpu": time.process_time() - cpu, "train": trained - built, "eval": end - trained,
            "val_acc": correct / len(y_val)}  # fmt: skip


def trainer_epoch(cfg: Any, spec: ProxySpec, bundle: Any, *, stock: bool = False) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    with stock_kernels(stock):
        result = train_proxy(cfg, spec, bundle)
    end = time.perf_counter()
    if result.status != "ok":
        raise SystemExit(f"training failed: {result.failure_reason}")
    h = result.history[-1]
    return {"wall": end - wall, "cpu": time.process_time() - cpu, "train": h["step_seconds"], "eval": h["eval_seconds"],
            "val_acc": result.val_acc}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="van1,cmt1,acmix1", help="fidelity-study architectures (a00-a11, van0-2, cmt0-2, acmix0-2)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--width", type=float, default=D.WIDTH, help=f"width multiplier (default {D.WIDTH}; "
                        f"{D.FULL_WIDTH}: the reference's network)")  # fmt: skip
    parser.add_argument("--data-fraction", type=float, default=D.DATA_FRACTION)
    parser.add_argument("--val-fraction", type=float, default=D.VAL_FRACTION)
    parser.add_argument("--batch-size", type=int, default=D.BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain-now", action="store_true", help="plain loop with the network's small-map attention paths on")
    parser.add_argument("--stock", action="store_true", help="also the trainer with the stock kernels")
    parser.add_argument("--candidates", default="", help=f"comma-separated plain-loop changes: {', '.join(CANDIDATES)}")
    parser.add_argument("--epoch-steps", type=int, help="also the CPU ratio extrapolated to an epoch of this many "
                        "training steps (e.g. 750: the reference's epoch, measured on a share of its data)")  # fmt: skip
    parser.add_argument("--epoch-val", type=int, help="... and this many validation images (with --epoch-steps; "
                        "default: those measured)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()

    known = {cfg.name: cfg for cfg in choose_architectures()}
    names = [n.strip() for n in args.archs.split(",") if n.strip()]
    changes = [c.strip() for c in args.candidates.split(",") if c.strip()]
    bad = [n for n in names if n not in known] + [c for c in changes if c not in CANDIDATES]
    if bad:
        parser.exit(2, f"unknown architecture or candidate {bad[0]!r}\n")
    torch.set_num_threads(args.threads)
    spec = ProxySpec(width_multiplier=args.width, data_fraction=args.data_fraction, val_fraction=args.val_fraction,
                     batch_size=args.batch_size, threads=args.threads, device="cpu")  # fmt: skip
    bundle = load_data(args.data, spec.resolution, fraction=spec.data_fraction, seed=DATA_SEED)
    n_val = len(validation(bundle, spec.val_fraction)[1])
    load_before = os.getloadavg()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in load_before)} (1, 5, 15 min)")  # fmt: skip
    print(f"one epoch: width x{args.width:g}, {len(bundle.train)} training images ({len(bundle.train) // args.batch_size} "
          f"steps of {args.batch_size}), {n_val} validation images; {args.repeats} repeats, order rotated")  # fmt: skip

    variants: dict[str, Any] = {"plain": lambda cfg: plain_epoch(cfg, spec, bundle, stock=not args.plain_now),
                                "trainer": lambda cfg: trainer_epoch(cfg, spec, bundle)}  # fmt: skip
    if args.stock:
        variants["trainer-stock"] = lambda cfg: trainer_epoch(cfg, spec, bundle, stock=True)
    for change in changes:
        variants[f"plain+{change}"] = lambda cfg, change=change: plain_epoch(cfg, spec, bundle, change=change,
                                                                             stock=not args.plain_now)  # fmt: skip
    record: dict[str, Any] = {"command": sys.argv, "load_before": load_before, "torch": torch.__version__,
                              "threads": args.threads, "results": {}}  # fmt: skip
    med = statistics.median
    for name in names:
        cfg = known[name]
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        order = list(variants)
        for r in range(args.repeats):
            for v in order[r % len(order) :] + order[: r % len(order)]:
                runs[v].append(variants[v](cfg))
        print(f"\n== {name} ({'plain loop with the small-map attention paths' if args.plain_now else 'plain loop with stock kernels'})")
        print(f"   {'variant':<24}{'wall s':>8}{'cpu s':>8}{'train s':>9}{'eval s':>8}{'val_acc':>9}"
              f"{'cpu ratio':>11}{'wall ratio':>11}")  # fmt: skip
        for v, rows in runs.items():
            cpu_ratio = med(a["cpu"] / b["cpu"] for a, b in zip(rows, runs["plain"]))
            wall_ratio = med(a["wall"] / b["wall"] for a, b in zip(rows, runs["plain"]))
            accs = sorted({round(row["val_acc"], 4) for row in rows})
            print(f"   {v:<24}{med(r['wall'] for r in rows):8.1f}{med(r['cpu'] for r in rows):8.1f}"
                  f"{med(r['train'] for r in rows):9.1f}{med(r['eval'] for r in rows):8.1f}"
                  f"{'/'.join(f'{a:.4f}' for a in accs):>9}{cpu_ratio:11.3f}{wall_ratio:11.3f}")  # fmt: skip
        if args.epoch_steps:
            steps = len(bundle.train) // args.batch_size

            val_scale = (args.epoch_val or n_val) / n_val

            def extrapolated(row: dict[str, Any]) -> float:
                """CPU seconds with training scaled to epoch_steps and evaluation to epoch_val (the wall
                seconds of each part converted at the run's CPU / wall ratio); the rest as measured."""
                per_wall = row["cpu"] / row["wall"]
                return row["cpu"] + per_wall * ((args.epoch_steps / steps - 1) * row["train"] + (val_scale - 1) * row["eval"])

            for v, rows in runs.items():
                ratio = med(extrapolated(a) / extrapolated(b) for a, b in zip(rows, runs["plain"]))
                print(f"   {v:<24}extrapolated to {args.epoch_steps} steps, {args.epoch_val or n_val} validation images: "
                      f"{med(extrapolated(r) for r in rows):8.1f} CPU s, cpu ratio {ratio:.3f}")  # fmt: skip
        record["results"][name] = runs
        sys.stdout.flush()
    load_after = os.getloadavg()
    record["load_after"] = load_after
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in load_after)}; ratios are medians over repeats of "
          "variant / plain within a repeat (goal for the trainer: <= 0.6)")  # fmt: skip
    if args.json:
        write_json_atomic(args.json, record, indent=1)


if __name__ == "__main__":
    main()

"""Where one proxy epoch's time goes: torch.profiler (CPU) over `train_proxy.trainer.train_proxy`.

    python benchmarks/profile_proxy_epoch.py                          # van1, cmt1, acmix1, default proxy
    python benchmarks/profile_proxy_epoch.py --archs acmix1 --data-fraction 0.02 --json /tmp/p.json

The architectures are the fidelity study's pure-family ones (`bench_proxy_fidelity.
choose_family_architectures`: van0-2, cmt0-2, acmix0-2, each the default space with every stage's
block fixed to one family). Each is trained for one epoch of the proxy (`ProxySpec()`'s values
unless a flag says otherwise, one thread, on the CPU) under the profiler, exactly as `nas train`
and a search's trials run it.

The trainer marks its phases with `torch.profiler.record_function` ranges: ``proxy.batch``
(indexing, augmentation, learning rate), ``proxy.forward``, ``proxy.loss``, ``proxy.backward``,
``proxy.optimizer`` and ``proxy.evaluate`` (the validation pass). For each phase the report gives
its share of the epoch, and how much of it is spent *inside* ATen operators (the outermost
``aten::`` calls) versus *outside* them: Python (module calls, the loop), the dispatcher and the
autograd engine's bookkeeping, i.e. the overhead a fused or compiled graph removes. Then the
operators ranked by self CPU time (time in the operator itself, not in the operators it calls),
grouped into kinds (convolution, matmul, attention, norm, elementwise, data movement, optimizer),
and the number of operator calls per training step and per evaluation batch.

The profiler adds a few microseconds per operator call; ``--unprofiled`` also times the epoch
without it, so the overhead can be read off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy_fidelity import choose_family_architectures  # noqa: E402

from search_space.files import write_json_atomic  # noqa: E402
from train_proxy import ProxySpec, load_data, train_proxy  # noqa: E402
from train_proxy import proxy_defaults as D  # noqa: E402
from train_proxy.fast_kernels import stock_paths  # noqa: E402
from train_proxy.trainer import EVAL_BATCH  # noqa: E402

PHASES = ("proxy.batch", "proxy.forward", "proxy.loss", "proxy.backward", "proxy.optimizer", "proxy.evaluate")

# operator name fragments -> kind (first match wins; names are lower-cased ATen names)
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul")),
    ("attention", ("scaled_dot_product", "_softmax", "softmax")),
    ("convolution", ("conv", "mkldnn_convolution", "thnn_conv", "slow_conv")),
    ("matmul", ("::mm", "::bmm", "addmm", "matmul", "linear", "baddbmm")),
    ("norm", ("batch_norm", "layer_norm", "native_batch", "native_layer")),
    ("data movement", ("copy_", "::cat", "::stack", "index", "gather", "scatter", "pad", "reflection", "clone",
                       "contiguous", "::to", "_to_copy", "fill_", "zero_", "::empty", "as_strided", "unfold")),
    ("elementwise", ("add", "mul", "sub", "div", "gelu", "sigmoid", "silu", "relu", "hardswish", "sum", "mean",
                     "where", "neg", "exp", "log", "sqrt", "pow", "rsub", "clamp", "max", "argmax", "eq", "tanh")),
)  # fmt: skip


def kind_of(name: str) -> str:
    low = name.lower()
    if "backward" in low and not low.startswith("aten::"):
        return "autograd bookkeeping"
    for kind, fragments in KINDS:
        if any(f in low for f in fragments):
            return kind
    return "other"


def _is_op(event: Any) -> bool:
    return event.name.startswith("aten::")


def analyse(events: list[Any], steps: int, eval_batches: int, top: int) -> dict[str, Any]:
    """Phase totals, inside/outside operators, operator ranking and kinds from profiler events."""
    phases: dict[str, dict[str, float]] = {p: {"us": 0.0, "in_ops_us": 0.0, "ops": 0} for p in PHASES}
    for event in events:
        if event.name not in phases:
            continue
        row = phases[event.name]
        row["us"] += event.cpu_time_total
        stack = list(event.cpu_children)
        while stack:  # outermost aten ops below this range (their time includes what they call)
            child = stack.pop()
            if _is_op(child):
                row["in_ops_us"] += child.cpu_time_total
                row["ops"] += 1 + _count_ops(child)
            else:  # autograd::engine::evaluate_function and the like: look inside
                stack.extend(child.cpu_children)
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: {"self_us": 0.0, "calls": 0})
    for event in events:
        if _is_op(event):
            by_op[event.name]["self_us"] += event.self_cpu_time_total
            by_op[event.name]["calls"] += 1
    ops_total = sum(v["self_us"] for v in by_op.values())
    kinds: dict[str, float] = defaultdict(float)
    for name, v in by_op.items():
        kinds[kind_of(name)] += v["self_us"]
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1]["self_us"])[:top]
    epoch_us = sum(phases[p]["us"] for p in PHASES)
    return {
        "epoch_seconds_profiled": epoch_us / 1e6,
        "phases": {p: {"seconds": r["us"] / 1e6, "share": r["us"] / epoch_us if epoch_us else 0.0,
                       "inside_ops_share": r["in_ops_us"] / r["us"] if r["us"] else 0.0,
                       "ops_per_call": r["ops"] / (eval_batches if p == "proxy.evaluate" else steps)}
                   for p, r in phases.items()},  # fmt: skip
        "kinds": {k: {"seconds": v / 1e6, "share": v / ops_total} for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": n, "self_seconds": v["self_us"] / 1e6, "share": v["self_us"] / ops_total, "calls": v["calls"]}
                    for n, v in ranked],  # fmt: skip
    }


def _count_ops(event: Any) -> int:
    n, stack = 0, list(event.cpu_children)
    while stack:
        child = stack.pop()
        n += _is_op(child)
        stack.extend(child.cpu_children)
    return n


def combine(sample: dict[str, Any], history: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Seconds per phase of the whole epoch: its training steps split as in the profiled sample."""
    train_phases = [p for p in PHASES if p != "proxy.evaluate"]
    train_share = sum(sample["phases"][p]["seconds"] for p in train_phases)
    epoch = history["epoch_seconds"]
    rows = {p: history["step_seconds"] * sample["phases"][p]["seconds"] / train_share for p in train_phases}
    rows["proxy.evaluate"] = history["eval_seconds"]
    rows["other (model build, bookkeeping)"] = max(0.0, history["seconds"] - epoch)
    total = sum(rows.values())
    return {p: {"seconds": v, "share": v / total} for p, v in rows.items()}


def report(name: str, result: dict[str, Any], out: Any = sys.stdout) -> None:
    sample = result["sample"]
    print(f"\n== {name}: {result['macs'] / 1e6:.1f} M MACs/image, batch {result['batch']}; "
          f"val_acc {result['val_acc']:.4f}" if result["val_acc"] is not None else f"\n== {name}", file=out)  # fmt: skip
    if result.get("epoch"):
        h = result["history"]
        print(f"   one epoch (no profiler): {h['seconds']:.1f} s wall = {h['step_seconds']:.1f} s in "
              f"{h['train_steps']} training steps + {h['eval_seconds']:.1f} s scoring {result['n_val']} "
              f"validation images + {h['seconds'] - h['epoch_seconds']:.1f} s building", file=out)  # fmt: skip
        for phase, row in result["epoch"].items():
            print(f"     {phase:<34}{row['seconds']:8.1f} s {row['share']:6.1%}", file=out)
    print(f"   profiled sample: {result['sample_steps']} steps, {result['sample_val']} validation images, "
          f"{sample['epoch_seconds_profiled']:.1f} s under the profiler", file=out)  # fmt: skip
    print(f"   {'phase':<16}{'seconds':>9}{'share':>8}{'in ops':>8}{'ops/call':>10}", file=out)
    for phase, row in sample["phases"].items():
        print(f"   {phase:<16}{row['seconds']:9.2f}{row['share']:8.1%}{row['inside_ops_share']:8.1%}"
              f"{row['ops_per_call']:10.0f}", file=out)  # fmt: skip
    print("   operator kinds (self time): " + ", ".join(f"{k} {v['share']:.0%}" for k, v in sample["kinds"].items()), file=out)
    print(f"   {'operator':<44}{'self s':>8}{'share':>7}{'calls':>9}", file=out)
    for row in sample["top_ops"]:
        print(f"   {row['op']:<44}{row['self_seconds']:8.2f}{row['share']:7.1%}{row['calls']:9d}", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="van1,cmt1,acmix1", help="fidelity-study family architectures")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-fraction", type=float, default=D.DATA_FRACTION, help="of the epoch timed whole")
    parser.add_argument("--val-fraction", type=float, default=D.VAL_FRACTION, help="of the epoch timed whole")
    parser.add_argument("--width", type=float, default=D.WIDTH, help="width multiplier (1.0: the reference's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6, help="training steps in the profiled sample")
    parser.add_argument("--val-images", type=int, default=512, help="validation images in the profiled sample")
    parser.add_argument("--no-epoch", action="store_true", help="profile the sample only (no whole epoch)")
    parser.add_argument("--stock", action="store_true", help="stock kernels: ACmix's shifted-view loop, CMT's "
                        "attention through SDPA and oneDNN's convolutions (train_proxy.fast_kernels.stock_paths)")  # fmt: skip
    parser.add_argument("--top", type=int, default=15, help="operators listed per architecture")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    known = {cfg.name: cfg for cfg in choose_family_architectures()}
    names = [n.strip() for n in args.archs.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.exit(2, f"unknown architecture {unknown[0]!r} (known: {', '.join(known)})\n")
    torch.set_num_threads(args.threads)
    bundle = load_data(args.data, D.RESOLUTION)
    n_train, n_val = len(bundle.train), len(bundle.val)
    spec = ProxySpec(data_fraction=args.data_fraction, val_fraction=args.val_fraction, width_multiplier=args.width,
                     threads=args.threads, device="cpu")  # fmt: skip
    # the sample: the same proxy on just enough images for ``steps`` batches and ``val_images``
    sample_spec = ProxySpec(data_fraction=min(1.0, (args.steps + 0.5) * spec.batch_size / n_train),
                            val_fraction=min(1.0, args.val_images / n_val), width_multiplier=args.width,
                            threads=args.threads, device="cpu")  # fmt: skip
    load = os.getloadavg()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    results = {}
    with stock_paths() if args.stock else contextlib.nullcontext():
        for name in names:
            cfg = known[name]
            figures: dict[str, Any] = {"batch": spec.batch_size}
            if not args.no_epoch:
                result = train_proxy(cfg, spec, bundle)
                figures.update(val_acc=result.val_acc, macs=result.macs, n_val=result.n_val, history=result.history[-1])
            train_proxy(cfg, sample_spec, bundle)  # warm: oneDNN primitives, allocator
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                small = train_proxy(cfg, sample_spec, bundle)
            steps = small.history[-1]["train_steps"]
            sample = analyse(list(prof.events()), steps, -(-small.n_val // EVAL_BATCH), args.top)
            del prof
            figures.update(sample=sample, sample_steps=steps, sample_val=small.n_val)
            figures.setdefault("macs", small.macs)
            figures.setdefault("val_acc", None)
            if not args.no_epoch:
                figures["epoch"] = combine(sample, figures["history"])
            results[name] = figures
            report(name, figures)
            sys.stdout.flush()
    if args.json:
        write_json_atomic(args.json, {"command": sys.argv, "load": load, "torch": torch.__version__,
                                      "threads": args.threads, "results": results}, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()

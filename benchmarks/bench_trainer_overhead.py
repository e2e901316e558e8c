"""Proxy trainer throughput against a bare hand-written PyTorch loop, side by side in one run.

Both do the same work on the same architecture: build the model (same seed), train the same
number of steps on the same digits batches with the same batch size, thread count and AdamW,
then run one validation pass. The bare loop is the minimum a person would write: index a batch,
forward, cross-entropy, backward, step. The trainer adds what its recipe needs (augmentation, a
per-step learning-rate schedule, loss tracking, the non-finite-loss guard, result bookkeeping).
Repeats alternate which of the two goes first; every call is timed by wall clock and by process
CPU time (CPU time is robust to other processes competing for the cores, which wall time is not).

    overhead = median over repeats of (trainer time / bare time) - 1     (goal: at most 5%)

    python benchmarks/bench_trainer_overhead.py                     # van_b0, digits, 32 px, 1 thread
    python benchmarks/bench_trainer_overhead.py --model smallest    # the default space's smallest model
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from search_space import SearchSpace, build_model, resolve_config
from train_proxy import ProxySpec, load_data, train_proxy
from nas.cli_utils import old_spellings
from train_proxy.proxy_defaults import FULL_WIDTH
from train_proxy.trainer import proxy_config, resolve_device


def bare_run(cfg, spec: ProxySpec, bundle, steps: int, device: torch.device) -> None:  # type: ignore[no-untyped-def]
    """Build, train ``steps`` batches with the plainest loop, evaluate once."""
    torch.manual_seed(spec.seed)
    model = build_model(cfg)
    cuda = device.type == "cuda"
    x_all, y_all = bundle.train.tensors
    x_val, y_val = bundle.val.tensors
    if cuda:
        model = model.to(device, memory_format=torch.channels_last)
        x_all, y_all, x_val, y_val = (t.to(device) for t in (x_all, y_all, x_val, y_val))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **({"fused": True} if cuda else {})
    )
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(spec.seed)).to(x_all.device)
    model.train()
    for i in range(steps):
        idx = order[i * spec.batch_size : (i + 1) * spec.batch_size]
        x, y = x_all[idx], y_all[idx]
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=spec.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        for start in range(0, len(y_val), 256):
            correct += int((model(x_val[start : start + 256]).argmax(1) == y_val[start : start + 256]).sum())
    if cuda:
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="van_b0", help="zoo name, YAML path, or 'smallest' (default van_b0)")
    parser.add_argument("--proxy-resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-fraction", type=float, default=0.5, help="share of digits' train split per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    old_spellings(parser, {"--resolution": "--proxy-resolution", "--fraction": "--data-fraction"})
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = SearchSpace.default().smallest()[0] if args.model == "smallest" else resolve_config(args.model)
    spec = ProxySpec(
        resolution=args.proxy_resolution, epochs=1, batch_size=args.batch_size, data_fraction=args.data_fraction,
        width_multiplier=FULL_WIDTH, threads=args.threads, device=str(device),  # the model named, at its own widths
    )  # fmt: skip
    bundle = load_data("digits", args.proxy_resolution, fraction=args.data_fraction)
    steps = len(bundle.train) // args.batch_size
    images = steps * args.batch_size
    proxy = proxy_config(cfg, spec, bundle.num_classes)
    print(
        f"{cfg.name} at {args.proxy_resolution} px, batch {args.batch_size}, {steps} steps + 1 validation pass per call, "
        f"{args.threads} thread(s), device {device}, {args.repeats} repeats (alternating order)"
    )

    def run_trainer() -> None:
        result = train_proxy(cfg, spec, bundle)
        assert result.status == "ok" and result.epochs == 1 and result.n_train // args.batch_size == steps

    bare_run(proxy, spec, bundle, min(steps, 2), device)  # warm-up: kernels, allocator, oneDNN primitives
    trainer, bare = [], []
    for r in range(args.repeats):
        pair = {}
        for name, fn in (("t", run_trainer), ("b", lambda: bare_run(proxy, spec, bundle, steps, device)))[
            :: 1 if r % 2 == 0 else -1
        ]:
            pair[name] = timed(fn)
        trainer.append(pair["t"])
        bare.append(pair["b"])
        print(
            f"  repeat {r + 1}: trainer {images / pair['t'][0]:7.1f} img/s wall, {pair['t'][1]:6.2f} s CPU   "
            f"bare loop {images / pair['b'][0]:7.1f} img/s wall, {pair['b'][1]:6.2f} s CPU"
        )

    med = statistics.median
    print(
        f"median trainer   {images / med(w for w, _ in trainer):7.1f} images/s wall   {med(c for _, c in trainer):6.2f} s CPU"
    )
    print(
        f"median bare loop {images / med(w for w, _ in bare):7.1f} images/s wall   {med(c for _, c in bare):6.2f} s CPU"
    )
    cpu_ratio = med(t[1] / b[1] for t, b in zip(trainer, bare))
    wall_ratio = med(t[0] / b[0] for t, b in zip(trainer, bare))
    print(
        f"trainer overhead (median of paired ratios): CPU time {100 * (cpu_ratio - 1):+.1f}%   "
        f"wall time {100 * (wall_ratio - 1):+.1f}%   (goal <= 5%)"
    )


if __name__ == "__main__":
    main()

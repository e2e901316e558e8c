"""When does torch.compile pay off on the CPU? Compile cost against the per-step saving, side by side.

    PYTHONPATH=$PWD python3 benchmarks/bench_compile_payoff.py [--archs van1,cmt1,acmix1] [--widths 0.5,1.0]

For each fidelity-study family architecture (`bench_proxy_fidelity.choose_family_architectures`) at
each width multiplier (0.5: the search's top rung; 1.0: the fidelity reference and `nas finalize`),
the model the trainer trains (`proxy_config` at 32 px, Fashion-MNIST's 10 classes, the trainer's
fast kernels swapped in) runs, on one thread:

- **eager**: training steps (forward, label-smoothed cross-entropy, backward, fused AdamW) on one
  fixed batch of 64, then evaluation batches of 1,024 in inference mode; the median CPU time per
  step and per evaluated image after warm-up;
- **compiled**: the same with ``torch.compile(model)`` (inductor, default mode): the CPU time of
  the first training step and of the first evaluation batch (compilation: the evaluation is a
  second graph, so it compiles again), then the same medians. The compiled model has the fast
  kernels too (their custom autograd functions split the graph); ``--compile-stock`` compiles the
  stock model instead (one graph per block, oneDNN's convolutions), against the same eager baseline.

Compilation runs in this process (``TORCHINDUCTOR_COMPILE_THREADS=1``) so that its CPU time is
counted. From these: the compiled/eager ratio of a step, and the training steps (and epochs of the
reference's 750 steps, of the top rung's 75) after which the compile time is paid back, evaluation
included (an epoch scores 12,000 images). The rows say where compilation is worth it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy_fidelity import choose_family_architectures  # noqa: E402

from search_space import build_model  # noqa: E402
from train_proxy.fast_kernels import use_fast_kernels  # noqa: E402
from train_proxy.trainer import ProxySpec, proxy_config  # noqa: E402

BATCH, EVAL_BATCH, CLASSES, PX = 64, 1024, 10, 32
VAL_IMAGES = 12_000
STEPS_PER_EPOCH = {0.5: 75, 1.0: 750}  # the top rung's 4,800 images, the reference's 48,000


def cpu() -> float:
    return time.process_time()


def measure(model: torch.nn.Module, compiled: bool, steps: int, evals: int) -> dict[str, float]:
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 3, PX, PX, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)
    xv = torch.randn(EVAL_BATCH, 3, PX, PX, generator=g)

    def step() -> float:
        start = cpu()
        loss = F.cross_entropy(run(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return cpu() - start

    def evaluate() -> float:
        start = cpu()
        with torch.inference_mode():
            run(xv).argmax(1)
        return cpu() - start

    model.train()
    first_step = step()
    for _ in range(2):
        step()
    step_s = statistics.median(step() for _ in range(steps))
    model.eval()
    first_eval = evaluate()
    evaluate()
    eval_s = statistics.median(evaluate() for _ in range(evals)) / EVAL_BATCH
    return {"first_step": first_step, "step": step_s, "first_eval": first_eval, "eval_image": eval_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="van1,cmt1,acmix1")
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--steps", type=int, default=9, help="timed training steps per measurement (median)")
    ap.add_argument("--evals", type=int, default=3, help="timed evaluation batches per measurement (median)")
    ap.add_argument("--compile-stock", action="store_true", help="compile the model without the fast kernels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    archs = {c.name: c for c in choose_family_architectures()}
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"CPU seconds (process time, compilation in-process); compiled: the "
          f"{'stock model' if args.compile_stock else 'model with the fast kernels'}")  # fmt: skip
    print("| arch | width | eager step | compiled step | ratio | compile CPU s (train + eval) | eager / compiled eval, "
          "ms per image | pays off after | epochs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.archs.split(","):
        for width in (float(w) for w in args.widths.split(",")):
            cfg = proxy_config(archs[name], ProxySpec(width_multiplier=width), CLASSES)
            res = {}
            for compiled in (False, True):
                torch.manual_seed(0)
                model = build_model(cfg)
                if not (compiled and args.compile_stock):
                    use_fast_kernels(model)
                res[compiled] = measure(model, compiled, args.steps, args.evals)
                torch._dynamo.reset()
            e, c = res[False], res[True]
            compile_cpu = (c["first_step"] - c["step"]) + (c["first_eval"] - c["eval_image"] * EVAL_BATCH)
            per_epoch_saving = (e["step"] - c["step"]) * STEPS_PER_EPOCH.get(width, 75) + (
                e["eval_image"] - c["eval_image"]) * VAL_IMAGES
            per_step_saving = per_epoch_saving / STEPS_PER_EPOCH.get(width, 75)
            if per_step_saving > 0:
                steps = compile_cpu / per_step_saving
                payoff, epochs = f"{steps:,.0f} steps", f"{steps / STEPS_PER_EPOCH.get(width, 75):.1f}"
            else:
                payoff, epochs = "never", "-"
            print(f"| {name} | {width:g} | {e['step']:.3f} | {c['step']:.3f} | {c['step'] / e['step']:.2f} | "
                  f"{compile_cpu:.0f} | {e['eval_image'] * 1e3:.3f} / {c['eval_image'] * 1e3:.3f} | {payoff} | {epochs} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""What gradient checkpointing costs and saves: memory and time of a training step, side by side.

Each model is created through timm (``timm.create_model``) and trained with and without
``model.set_grad_checkpointing()`` (what timm's ``train.py --grad-checkpointing`` calls), each mode
in a fresh subprocess, on the same batch. Per mode:

- activations kept for the backward pass: the bytes of the distinct tensors autograd saves during
  the forward pass (PyTorch's saved-tensor hooks), the memory checkpointing is there to save;
- peak memory of the step: on CUDA ``torch.cuda.max_memory_allocated`` above what the step
  started with; on the CPU the process's peak resident set (VmHWM, reset through
  /proc/self/clear_refs before the step) above its resident set at its start, in a process whose
  allocations over 64 KiB are their own mappings (``MALLOC_MMAP_THRESHOLD_``), so that a freed
  tensor leaves the resident set at once (otherwise glibc keeps it and the peak shows nothing);
- seconds per training step (forward, backward, AdamW step): the median of ``--steps`` timed
  steps after one warm-up step, in another process with the ordinary allocator; wall-clock and
  CPU seconds of the process (all its threads: on a machine shared with other jobs the CPU time
  is the steadier measure of the work).

    PYTHONPATH=$PWD python3 benchmarks/bench_grad_checkpointing.py                 # van_b0, cmt_ti, acmix_t
    PYTHONPATH=$PWD python3 benchmarks/bench_grad_checkpointing.py --models van_b0 --batch-size 32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(model_name: str, checkpointing: bool, batch_size: int, steps: int, device: str, threads: int) -> dict:
    """One mode of one model, in this process (``steps`` 1 for the CPU memory figure)."""
    import timm
    import torch

    import train_proxy.timm_models  # noqa: F401  (registers the models)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model(f"hybrid_nas_{model_name}", num_classes=10, drop_path_rate=0.1).to(device).train()
    side = model.pretrained_cfg["input_size"][-1]
    if checkpointing:
        model.set_grad_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, side, side, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step(count_saved: bool = False) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if count_saved:
                storage = t.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return sum(seen.values())

    saved = step(count_saved=True)  # warm-up (allocates the optimizer state), counting what is saved
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to now
        start = _rss_kib("VmRSS") * 1024
    seconds, cpu_seconds = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    return {"model": model_name, "side": side, "checkpointing": checkpointing, "saved_bytes": saved,
            "peak_bytes": peak - start, "step_seconds": statistics.median(seconds),
            "step_cpu_seconds": statistics.median(cpu_seconds), "steps": steps}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="van_b0,cmt_ti,acmix_t", help="zoo names, comma-separated")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per mode (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: MODEL:0|1, measured in this process
    args = p.parse_args()
    if args.one:
        name, flag = args.one.split(":")
        print(json.dumps(measure(name, flag == "1", args.batch_size, args.steps, args.device, args.threads)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"batch {args.batch_size}, {args.steps} timed steps (median), device {args.device}, {args.threads} "
          f"thread(s); load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print(f"{'model':<9} {'px':>4} | {'saved for backward':>19} | {'peak memory of a step':>22} | "
          f"{'wall s per step':>17} | {'CPU s per step':>17}")  # fmt: skip
    print(f"{'':<9} {'':>4} | {'plain':>9} {'ckpt':>9} | {'plain':>10} {'ckpt':>11} | {'plain':>8} {'ckpt':>8} | "
          f"{'plain':>8} {'ckpt':>8}")  # fmt: skip
    for name in args.models.split(","):
        rows = []
        for flag in ("0", "1"):
            def one(steps: int, extra_env: dict[str, str]) -> dict:  # noqa: B023
                done = subprocess.run([sys.executable, __file__, "--one", f"{name}:{flag}", "--batch-size",  # noqa: B023
                                       str(args.batch_size), "--steps", str(steps), "--device", args.device,
                                       "--threads", str(args.threads)], capture_output=True, text=True,
                                      env={**env, **extra_env}, check=True)  # fmt: skip
                return json.loads(done.stdout.strip().splitlines()[-1])

            timed = one(args.steps, {})
            if not args.device.startswith("cuda"):  # the CPU's peak from a process that returns freed memory
                timed["peak_bytes"] = one(1, {"MALLOC_MMAP_THRESHOLD_": "65536"})["peak_bytes"]
            rows.append(timed)
        plain, ckpt = rows
        mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
        print(f"{name:<9} {plain['side']:>4} | {mib(plain['saved_bytes']):>9} {mib(ckpt['saved_bytes']):>9} | "
              f"{mib(plain['peak_bytes']):>10} {mib(ckpt['peak_bytes']):>11} | {plain['step_seconds']:>7.2f}s "
              f"{ckpt['step_seconds']:>7.2f}s | {plain['step_cpu_seconds']:>7.2f}s {ckpt['step_cpu_seconds']:>7.2f}s  "
              f"(peak x{ckpt['peak_bytes'] / max(plain['peak_bytes'], 1):.2f}, CPU time "
              f"x{ckpt['step_cpu_seconds'] / plain['step_cpu_seconds']:.2f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Latency measurement: warm-up, a pinned thread count, the median of timed repeats.

One timing method serves whole networks (`measure_latency`) and the small per-block modules of
the lookup-table predictor (`time_module`), so the predictor's entries and the measurements it is
checked against are taken the same way:

* the model is put in eval mode and run under ``torch.inference_mode()``;
* ``torch.set_num_threads(threads)`` is set for the measurement and restored afterwards
  (oversubscribed or unpinned threads make CPU timings meaningless);
* ``warmup`` untimed runs (allocator, kernel selection, caches), then ``repeats`` runs each timed
  with ``time.perf_counter``; on CUDA every run is bracketed by ``torch.cuda.synchronize()`` so the
  asynchronous launch is not mistaken for the work;
* the median (robust to the odd preempted run on a shared machine) and the 90th percentile are
  reported, with the batch size, threads, device and resolution they belong to.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import torch
from torch import nn

from search_space import ArchConfig, build_model
from search_space.errors import UserError

# One default measurement for every latency (`nas latency`, `nas latency-table build`, the
# predictor's table entries, the search's re-measurement of its front): 5 untimed runs, then the
# median of 20. The table's entries were always taken so (latency_table.DEFAULT_TABLE_*), and a
# whole-network measurement is compared with a prediction from them, so both are taken the same
# way; five runs cover the allocator, kernel selection and TorchScript's profiling runs (two).
DEFAULT_WARMUP = 5
DEFAULT_REPEATS = 20
DEFAULT_BATCH_SIZE = 1  # the latency batch (images per forward pass), not a training batch
DEFAULT_DEVICE = "cpu"  # the latency device (where the model is timed), not the training device
CLOCKS = ("wall", "cpu")
# Adaptive timing (the latency table's entries, its calibration networks): ``repeats`` is the most
# timed runs; timing stops once the median is known well enough, i.e. the distribution-free 95 %
# interval of the median (order statistics) lies within +-MEDIAN_TOLERANCE of it, after at least
# MIN_REPEATS runs. Warm-up stops once a run is within WARM_TOLERANCE of the one before (at least one,
# at most ``warmup``), except under TorchScript, whose profiling runs are slow and alike.
MIN_REPEATS = 5
MEDIAN_TOLERANCE = 0.05
WARM_TOLERANCE = 0.10


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement. Times are milliseconds per forward pass of one batch."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int
    device: str
    device_name: str
    resolution: int
    channels_last: bool = False
    bf16: bool = False
    clock: str = "wall"
    runtime: str = "torch"  # torch | torchscript | onnxruntime (train_proxy.runtimes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- devices --------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA asked for but absent is a user error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}' (use cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device '{device}' (use cpu or cuda)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{device}' requested but CUDA is not available on this machine")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{device}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        dev = torch.device("cuda", index)
    return dev


@lru_cache(maxsize=None)
def cpu_model_name() -> str:
    """The CPU's model string (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s ``flags`` line; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX): where CPU bf16 autocast can pay."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model_name()


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Set ``torch``'s intra-op thread count for the block, then put the old value back."""
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- timing ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) without needing numpy arrays."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_known(times: list[float], tolerance: float = MEDIAN_TOLERANCE) -> bool:
    """Whether the 95 % confidence interval of the median of ``times`` (ranks n/2 -+ 0.98 sqrt(n) of
    the sorted values: the binomial interval, no assumption on the distribution) lies within
    +-``tolerance`` of the median, with at least `MIN_REPEATS` values."""
    n = len(times)
    if n < MIN_REPEATS:
        return False
    ordered, half = sorted(times), 0.98 * math.sqrt(n)
    low, high = ordered[max(0, math.floor(n / 2 - half))], ordered[min(n - 1, math.ceil(n / 2 + half))]
    middle = statistics.median(ordered)
    return middle > 0 and high - low <= 2 * tolerance * middle


def time_callable(
    fn: Callable[[], Any],
    *,
    dev: torch.device,
    warmup: int,
    repeats: int,
    progress: Callable[[int], None] | None = None,
    clock: str = "wall",
    adaptive: bool = False,
) -> list[float]:
    """Milliseconds of each of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones.

    ``clock="wall"`` (latency proper) uses ``time.perf_counter``. ``clock="cpu"`` uses the calling
    thread's CPU time (``time.thread_time``): time spent preempted by other processes is not
    counted (cache and SMT-sibling contention still is), so it is steadier on a shared machine, and
    it equals the latency of single-threaded CPU inference on an idle machine (with one intra-op
    thread torch computes on the calling thread). Refused for CUDA and for threads > 1.

    ``adaptive``: ``warmup`` and ``repeats`` are the most runs; warm-up stops at the first run
    within `WARM_TOLERANCE` of the one before, timing once `median_known` (see `MIN_REPEATS`).
    """
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise UserError(f"warmup must be >= 0, got {warmup}")
    cuda = dev.type == "cuda"
    if clock not in CLOCKS:
        raise UserError(f"unknown clock '{clock}' (choose from {', '.join(CLOCKS)})")
    if clock == "cpu" and (cuda or torch.get_num_threads() != 1):
        raise UserError("the cpu clock measures single-threaded CPU inference only (device cpu, threads 1)")
    now = time.thread_time if clock == "cpu" else time.perf_counter

    def timed() -> float:
        if cuda:
            torch.cuda.synchronize(dev)
        start = now()
        fn()
        if cuda:
            torch.cuda.synchronize(dev)
        return (now() - start) * 1000.0

    previous = None
    for _ in range(warmup):
        took = timed()
        if progress:
            progress(1)
        if adaptive and previous is not None and abs(took - previous) <= WARM_TOLERANCE * previous:
            break
        previous = took
    times: list[float] = []
    for _ in range(repeats):
        times.append(timed())
        if progress:
            progress(1)
        if adaptive and median_known(times):
            break
    return times


def time_module(
    module: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    channels_last: bool = False,
    bf16: bool = False,
    progress: Callable[[int], None] | None = None,
    clock: str = "wall",
    runtime: str = "torch",
    adaptive: bool = False,
) -> list[float]:
    """Per-call milliseconds of ``module(example)`` with the engine's timing method.

    ``example`` is moved to the device (and to channels_last when asked); the module is put in
    eval mode on the device. bf16 autocast only applies on CUDA. ``runtime`` other than torch
    runs the module as TorchScript or in ONNX Runtime (`train_proxy.runtimes`). ``adaptive``:
    `time_callable`'s early stops (warm-up stops early except under TorchScript).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    module = module.to(dev).eval()
    x = example.to(dev)
    if channels_last and x.dim() == 4:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if runtime != "torch":
        from .runtimes import prepare

        with pinned_threads(threads), torch.inference_mode():
            ready = prepare(runtime, module, x, dev, threads)
            if adaptive and runtime == "torchscript":  # its profiling runs must all happen: warm up in full
                time_callable(ready.run, dev=dev, warmup=warmup, repeats=1, clock=clock)
                warmup = 0
            return time_callable(ready.run, dev=dev, warmup=warmup, repeats=repeats, progress=progress, clock=clock,
                                 adaptive=adaptive)  # fmt: skip
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if bf16 and dev.type == "cuda"
        else contextlib.nullcontext()
    )
    with pinned_threads(threads), torch.inference_mode(), autocast:
        return time_callable(lambda: module(x), dev=dev, warmup=warmup, repeats=repeats, progress=progress, clock=clock,
                             adaptive=adaptive)  # fmt: skip


def summarise(
    times: list[float],
    *,
    warmup: int,
    batch_size: int,
    threads: int,
    dev: torch.device,
    resolution: int,
    channels_last: bool = False,
    bf16: bool = False,
    clock: str = "wall",
    runtime: str = "torch",
) -> LatencyResult:
    return LatencyResult(
        median_ms=statistics.median(times),
        p90_ms=percentile(times, 90.0),
        mean_ms=statistics.fmean(times),
        min_ms=min(times),
        repeats=len(times),
        warmup=warmup,
        batch_size=batch_size,
        threads=threads,
        device=str(dev),
        device_name=device_name(dev),
        resolution=resolution,
        channels_last=channels_last,
        bf16=bf16 and dev.type == "cuda",
        clock=clock,
        runtime=runtime,
    )


def measure_latency(
    cfg_or_model: ArchConfig | nn.Module,
    *,
    device: str = DEFAULT_DEVICE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = 1,
    resolution: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    channels_last: bool = False,
    bf16: bool = False,
    in_channels: int | None = None,
    progress: Callable[[int], None] | None = None,
    clock: str = "wall",
    runtime: str = "torch",
    adaptive: bool = False,
) -> LatencyResult:
    """Latency of one forward pass of a batch (inference: eval mode, no autograd).

    ``cfg_or_model``: an `ArchConfig` (built here with fresh weights; latency does not depend on
    their values) or any ``nn.Module`` taking NCHW images. For a module, ``resolution`` defaults
    to its ``cfg.resolution`` when it has one (models from ``build_model`` do) and is required
    otherwise. ``progress`` is called with 1 after every (warm-up or timed) run. ``clock``: see
    `time_callable` (``wall`` by default; ``cpu`` for contention-free single-thread CPU timings);
    ``adaptive`` its early stops (``repeats`` and ``warmup`` are then the most runs).
    """
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    if runtime != "torch":
        from .runtimes import check_runtime

        check_runtime(runtime, dev)
    cfg = cfg_or_model if isinstance(cfg_or_model, ArchConfig) else getattr(cfg_or_model, "cfg", None)
    if resolution is None:
        if not isinstance(cfg, ArchConfig):
            raise UserError("measure_latency needs a resolution for a module without an ArchConfig")
        resolution = cfg.resolution
    if resolution < 1:
        raise UserError(f"resolution must be >= 1, got {resolution}")
    if in_channels is None:
        in_channels = cfg.in_channels if isinstance(cfg, ArchConfig) else 3
    model = build_model(cfg_or_model) if isinstance(cfg_or_model, ArchConfig) else cfg_or_model
    was_training = model.training
    example = torch.randn(batch_size, in_channels, resolution, resolution, generator=torch.Generator().manual_seed(0))
    try:
        times = time_module(
            model,
            example,
            device=dev,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            channels_last=channels_last,
            bf16=bf16,
            progress=progress,
            clock=clock,
            runtime=runtime,
            adaptive=adaptive,
        )
    finally:
        model.train(was_training)  # a caller's module keeps its mode
    return summarise(
        times,
        warmup=warmup,
        batch_size=batch_size,
        threads=threads,
        dev=dev,
        resolution=resolution,
        channels_last=channels_last,
        bf16=bf16,
        clock=clock,
        runtime=runtime,
    )

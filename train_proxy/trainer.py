"""Proxy training: a short, cheap training of an `ArchConfig` that ranks architectures.

Recipe: AdamW (no weight decay on norms, biases, layer scales and position biases), per-step
linear warm-up then cosine decay to zero, label smoothing, and light augmentation done on the
batch tensor (reflect-padded random shift; horizontal flip where the data allows it). The model
is built at the proxy resolution with the data's class count and optionally narrower widths.

The loop indexes in-memory tensors with a seeded permutation per epoch (no DataLoader workers)
and avoids per-step host synchronisation on CUDA: the loss is summed on the device and checked
for non-finite values every few steps. On CUDA it runs in channels_last under bf16 autocast (fp16 with a
gradient scaler where the GPU has no native bf16; `ProxySpec.precision` chooses); on
the CPU it pins ``torch`` to ``spec.threads`` for the duration of the call (restored afterwards),
computes in fp32 (bf16 autocast when asked, on CPUs with native bf16 only), and swaps the grouped
and depthwise convolutions for `train_proxy.fast_kernels`' forms, which oneDNN's kernels are
many times slower than on the small maps of a proxy (the same function up to float rounding;
docs/throughput.md). AdamW runs fused (one kernel per step) on either device. Evaluation runs in
inference mode, `EVAL_BATCH` images at a time.

Determinism: the same seed on the same device and thread count gives the same result. The call
seeds ``torch``, ``random`` and ``numpy`` globally (model initialisation reads the global torch
generator); the data order and augmentation use a private ``torch.Generator``. On CUDA, cuDNN is
put in deterministic mode for the call; kernels without a deterministic variant may still vary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from search_space import ArchConfig, analytic_cost, build_model
from search_space.errors import ConfigError, UserError
from search_space.text import printable
from search_space.transforms import scale_widths, with_classes

from . import proxy_defaults as D
from .data import DataBundle, load_data, stratified_subset
from .fast_kernels import use_fast_kernels
from .latency import cpu_native_bf16, pinned_threads
from .latency import resolve_device as _checked_device
from .proxy_defaults import warmup_epochs  # noqa: F401 - the one warm-up rule, importable from here too

DATA_SEED = 0  # the train subset (data_fraction) is the same for every training seed
EVAL_BATCH = 512  # images per evaluation forward pass (inference mode): ~1.2x the throughput of 256 on the CPU
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CUDA_CHECK_EVERY = 16  # steps between host reads of the loss on CUDA (each read synchronises)
CUDA_RESIDENT_BYTES = 4 << 30  # datasets below this live on the GPU for the whole run
# Channels-last on the CPU as well as on CUDA. Tried: the blocks' layers hand on channels-last
# tensors of their own (LayerNorm2d's permute, the token-wise 1x1 convolutions), and an elementwise
# op between a channels-last and a contiguous tensor is many times slower than between two of a
# kind; yet whole proxy epochs, one layout against the other, cost the same on cmt1 and van1 and
# 3-7 % less on acmix1 (docs/throughput.md). Off: the gain is not worth a second layout to keep
# equal. The tests switch it on to train the CUDA layout on the CPU.
CPU_CHANNELS_LAST = False

EpochCallback = Callable[[dict], "bool | None"]


class Checkpointer(Protocol):
    """Where a resumable training keeps its state (`train_proxy.checkpoint.TrainingDir`)."""

    def load_state(self) -> dict[str, Any] | None: ...

    def save_epoch(self, state: dict[str, Any]) -> None: ...


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ProxySpec:
    """How to train a proxy: resolution, length, data share, width and optimiser settings.

    ``ProxySpec()`` is the default proxy (`train_proxy.proxy_defaults`, the one home of these
    values and limits); a full training passes ``width_multiplier=D.FULL_WIDTH`` and
    ``data_fraction=D.FULL_DATA_FRACTION``. ``warmup_epochs`` left out follows the one rule,
    `proxy_defaults.warmup_epochs(epochs)` (a fifth of the run, at most an epoch).
    """

    resolution: int = D.RESOLUTION
    epochs: int = D.EPOCHS
    batch_size: int = D.BATCH_SIZE
    data_fraction: float = D.DATA_FRACTION
    width_multiplier: float = D.WIDTH
    # share of the validation split scored after each epoch: a fixed stratified subset (the same
    # images for every seed and architecture), for the cheap lowest rungs of a search
    val_fraction: float = D.VAL_FRACTION
    seed: int = D.SEED
    lr: float = D.LR
    weight_decay: float = D.WEIGHT_DECAY
    warmup_epochs: float | None = None  # None: warmup_epochs(epochs), set on creation (never None after)
    label_smoothing: float = D.LABEL_SMOOTHING
    threads: int | None = None
    device: str = D.DEVICE
    # Stochastic depth maximum for this run: 0 (off) for proxies, which rank architectures from
    # a few epochs; None trains with the config's own drop_path_rate (full training).
    drop_path_rate: float | None = D.DROP_PATH
    # mixed precision: on CUDA auto (bf16 where native, else fp16 with a grad scaler), bf16, fp16, fp32;
    # on the CPU auto is fp32, bf16 only where the CPU has native bf16 (`amp_dtype`)
    precision: str = D.PRECISION

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"proxy spec: {msg}")

        need(_is_int(self.resolution) and self.resolution >= 32 and self.resolution % 32 == 0,
             f"resolution must be a positive multiple of 32, got {self.resolution!r}")  # fmt: skip
        need(_is_int(self.epochs) and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs!r}")
        if self.warmup_epochs is None and _is_int(self.epochs):
            object.__setattr__(self, "warmup_epochs", warmup_epochs(self.epochs))
        for name, problem in (("batch_size", D.batch_size_problem), ("data_fraction", D.fraction_problem),
                              ("val_fraction", D.fraction_problem), ("width_multiplier", D.width_problem)):  # fmt: skip
            why = problem(getattr(self, name))
            need(why is None, f"{name} {why}, got {getattr(self, name)!r}")
        need(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay!r}")  # fmt: skip
        need(isinstance(self.warmup_epochs, (int, float)) and math.isfinite(self.warmup_epochs)
             and self.warmup_epochs >= 0,
             f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")  # fmt: skip
        need(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(self.threads is None or (_is_int(self.threads) and self.threads >= 1),
             f"threads must be >= 1, got {self.threads!r}")  # fmt: skip
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}")  # fmt: skip
        need(self.drop_path_rate is None or 0.0 <= self.drop_path_rate < 1.0,
             f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")  # fmt: skip

        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of one proxy training. ``val_acc`` is the last completed epoch's accuracy."""

    val_acc: float
    best_val_acc: float
    epochs: int
    train_seconds: float  # model build, training and per-epoch evaluation (data loading excluded)
    images_per_second: float  # training images / seconds inside the training steps
    history: list[dict] = field(default_factory=list)
    status: str = "ok"  # ok | stopped | failed
    failure_reason: str | None = None
    params: int = 0
    macs: int = 0  # of the proxy model at the proxy resolution
    device: str = "cpu"
    resolution: int = 32
    n_train: int = 0
    n_val: int = 0
    drop_path_rate: float = 0.0  # the stochastic depth maximum the run trained with
    test_acc: float | None = None  # on the data's official test split, only when asked (never in a search)
    precision: str = "fp32"  # what the run computed in: fp32, or bf16 / fp16 autocast (fp16: CUDA only)
    # which validation images the last epoch's model classified right, one bit each in the order
    # of the (sub)split, packed big-endian and hex-encoded (`unpack_correct`); only when asked
    val_correct: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proxy_config(cfg: ArchConfig, spec: ProxySpec, num_classes: int, in_channels: int = 3) -> ArchConfig:
    """The architecture the proxy trains: data's classes, scaled widths, built at proxy resolution,
    with the spec's stochastic depth rate (the config's own when the spec's is None).

    Building at the proxy resolution sizes CMT's relative position bias for the feature maps it
    will see (no interpolation on every step). Should the config not be valid at that resolution
    (a K/V reduction that does not divide a smaller map), it is built at its own resolution and
    the model interpolates at run time.
    """
    proxy = with_classes(scale_widths(cfg, spec.width_multiplier), num_classes)
    if spec.drop_path_rate is not None and proxy.drop_path_rate != spec.drop_path_rate:
        proxy = proxy.replace(drop_path_rate=spec.drop_path_rate)
    if proxy.in_channels != in_channels:
        proxy = proxy.replace(in_channels=in_channels)
    if proxy.resolution != spec.resolution:
        at_proxy = proxy.replace(resolution=spec.resolution)
        try:
            at_proxy.validate()
            proxy = at_proxy
        except ConfigError:
            pass
    return proxy


def train_proxy(
    cfg: ArchConfig,
    spec: ProxySpec = ProxySpec(),
    data: str | DataBundle = "digits",
    on_epoch: EpochCallback | None = None,
    *,
    progress: bool = False,
    evaluate_test: bool = False,
    checkpoint: Checkpointer | None = None,
    keep_val_correct: bool = False,
) -> TrainResult:
    """Train ``cfg`` under ``spec``; ``on_epoch`` sees every epoch and may return False to stop.

    ``on_epoch`` receives ``{"epoch", "val_acc", "train_loss" (mean), "train_loss_sum" and
    "train_steps" (the epoch's sum of per-step losses and its step count: TSE, Ru et al. 2021),
    "seconds" (since the start), "epoch_seconds", "step_seconds", "eval_seconds", "lr"}``. A non-finite loss ends the run with status "failed" and a reason.
    A `DataBundle` is used at its own fraction when that equals ``spec.data_fraction``; a full
    bundle (fraction 1) is subsampled to ``spec.data_fraction``. ``evaluate_test`` also scores the
    final model on the bundle's official test split (`DataBundle.test`), which nothing reads otherwise.
    ``keep_val_correct`` keeps which validation images the last model got right (`TrainResult.val_correct`):
    the fidelity study scores a validation subset after the fact from it, on the very same training.
    With a ``checkpoint`` the run starts from its saved state, when it has one, and hands it the
    full state after every epoch: resumed on the same device and thread count, the run ends with
    the weights an uninterrupted run would have.
    """
    bundle = _resolve_data(data, spec)
    device = resolve_device(spec.device)
    # pinned: oversubscribed CPU threads slow training many-fold
    threads = contextlib.nullcontext() if spec.threads is None else pinned_threads(spec.threads)
    with threads, _cudnn_deterministic(device):
        return _Run(cfg, spec, bundle, device, on_epoch, progress).train(evaluate_test, checkpoint, keep_val_correct)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA where present), ``cpu`` or ``cuda[:N]``, checked (`train_proxy.latency.resolve_device`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _checked_device(name)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run (None: float32). On CUDA, ``auto``: bf16 where the GPU has it
    natively, else fp16 (with a gradient scaler). On the CPU, ``auto`` is float32 and ``bf16``
    is bf16 autocast, only where the CPU computes bf16 natively (AVX512-BF16 or AMX): emulated it
    ran 3x slower than float32 here (docs/throughput.md); fp16 is refused."""
    if precision == "fp32" or (device.type != "cuda" and precision == "auto"):
        return None
    if device.type != "cuda":
        if precision == "fp16":
            raise UserError("--precision fp16: CUDA only; on the CPU use fp32 (or bf16 where the CPU has AVX512-BF16 or AMX)")
        if not cpu_native_bf16():
            raise UserError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX, see /proc/cpuinfo "
                            "flags), where bf16 runs emulated, about 3x slower than fp32; use fp32 or auto")  # fmt: skip
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "bf16":
        if not native_bf16:
            raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bfloat16; "
                            "use fp16 or auto")  # fmt: skip
        return torch.bfloat16
    return torch.bfloat16 if native_bf16 else torch.float16


class _Run:
    """One training run; state shared by the loop, the evaluation and the result."""

    def __init__(
        self,
        cfg: ArchConfig,
        spec: ProxySpec,
        bundle: DataBundle,
        device: torch.device,
        on_epoch: EpochCallback | None,
        progress: bool,
    ) -> None:
        self.spec, self.bundle, self.device, self.on_epoch, self.progress = spec, bundle, device, on_epoch, progress
        self.cuda = device.type == "cuda"
        self.channels_last = self.cuda or CPU_CHANNELS_LAST
        self.amp = amp_dtype(spec.precision, device)
        # fp16 gradients underflow without loss scaling; bf16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        x_train, y_train = bundle.train.tensors
        self.cfg = proxy_config(cfg, spec, bundle.num_classes, in_channels=int(x_train.shape[1]))
        self.macs = analytic_cost(self.cfg, spec.resolution).macs
        self.n_train, self.n_val = len(y_train), len(bundle.val)
        if self.n_train < 2 or self.n_val < 1:
            raise UserError(f"{bundle.name}: too little data ({self.n_train} train, {self.n_val} val images)")
        self.batch = min(spec.batch_size, self.n_train)
        self.steps_per_epoch = self.n_train // self.batch  # the ragged last batch is dropped
        self.total_steps = self.steps_per_epoch * spec.epochs
        self.warmup_steps = min(round(spec.warmup_epochs * self.steps_per_epoch), self.total_steps - 1)
        self.pad = round(bundle.max_shift * spec.resolution)
        resident = self.cuda and _nbytes(bundle) <= CUDA_RESIDENT_BYTES
        store = device if resident else torch.device("cpu")
        # On the CPU a grey data set's 3-channel view stays a view (a third of the memory): batches
        # are gathered by index and evaluation slices feed the model as they are.
        dense = (lambda t: t.contiguous()) if self.cuda else (lambda t: t)
        self.x_train, self.y_train = dense(x_train.to(store)), y_train.to(store)
        x_val, y_val = bundle.val.tensors
        if spec.val_fraction < 1.0:  # the same images whatever the training seed (DATA_SEED)
            keep = torch.from_numpy(np.sort(stratified_subset(y_val.numpy(), spec.val_fraction, DATA_SEED)))
            x_val, y_val = x_val[keep], y_val[keep]
            self.n_val = len(y_val)
        self.x_val, self.y_val = (dense(t.to(store)) for t in (x_val, y_val))
        if self.cuda and not resident:
            self.x_train, self.x_val = self.x_train.pin_memory(), self.x_val.pin_memory()

    # -- setup ------------------------------------------------------------------------------
    def _build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        seed = self.spec.seed
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        model = build_model(self.cfg)
        if not self.cuda:  # oneDNN's depthwise kernels are slow on maps small against them (train_proxy.fast_kernels)
            use_fast_kernels(model)
        if self.channels_last:
            model = model.to(self.device, memory_format=torch.channels_last)
        decay, no_decay = [], []
        for name, p in model.named_parameters():  # decay only conv/linear weights
            (decay if p.ndim >= 2 and name.endswith("weight") else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:  # the fused kernel: on the CPU 5-7x faster than the per-parameter loop (docs/throughput.md)
            optimizer = torch.optim.AdamW(groups, lr=self.spec.lr, betas=(0.9, 0.999), fused=True)
        except RuntimeError:  # torch < 2.4 has no fused AdamW on the CPU
            optimizer = torch.optim.AdamW(groups, lr=self.spec.lr, betas=(0.9, 0.999))
        return model, optimizer

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to zero."""
        if step < self.warmup_steps:
            return self.spec.lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return self.spec.lr * 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup_steps) / span))

    # -- the loop ---------------------------------------------------------------------------
    def train(self, evaluate_test: bool = False, checkpoint: Checkpointer | None = None,
              keep_val_correct: bool = False) -> TrainResult:  # fmt: skip
        start = time.perf_counter()
        model, optimizer = self._build()
        params = sum(p.numel() for p in model.parameters())
        history: list[dict] = []
        saved = checkpoint.load_state() if checkpoint is not None else None
        if saved is not None:
            history = self._restore(model, optimizer, saved)
        first_epoch = len(history) + 1
        earlier = history[-1]["seconds"] if history else 0.0  # time spent before a resume
        status, reason, step_seconds = "ok", None, 0.0
        correct: torch.Tensor | None = None  # the last model's per-image hits, when kept
        bar = _progress_bar(self.total_steps, printable(self.cfg.name), self.progress, done=len(history) * self.steps_per_epoch)
        try:
            for epoch in range(first_epoch, self.spec.epochs + 1):
                if bar is not None:
                    bar.set_description(f"train {printable(self.cfg.name)} epoch {epoch}/{self.spec.epochs}")
                epoch_start = time.perf_counter()
                try:
                    loss_sum, bad_step = self._train_epoch(model, optimizer, epoch, bar)
                except torch.OutOfMemoryError:
                    status, reason = "failed", f"out of memory at epoch {epoch} (batch {self.batch})"
                    break
                steps_done = time.perf_counter()
                step_seconds += steps_done - epoch_start
                if bad_step is not None:
                    status, reason = "failed", f"non-finite loss at epoch {epoch} step {bad_step}"
                    break
                last = epoch == self.spec.epochs
                correct = self._correct(model) if keep_val_correct and last else None
                val_acc = int(correct.sum()) / len(correct) if correct is not None else self._evaluate(model)
                now = time.perf_counter()
                record = {
                    "epoch": epoch,
                    "val_acc": val_acc,
                    "train_loss": loss_sum / self.steps_per_epoch,
                    "train_loss_sum": loss_sum,
                    "train_steps": self.steps_per_epoch,
                    "seconds": earlier + now - start,
                    "epoch_seconds": now - epoch_start,
                    "step_seconds": steps_done - epoch_start,
                    "eval_seconds": now - steps_done,
                    "lr": self.lr_at(epoch * self.steps_per_epoch - 1),
                }
                history.append(record)
                if checkpoint is not None:
                    checkpoint.save_epoch(self._state(model, optimizer, epoch, history))
                if bar is not None:
                    bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
                if self.on_epoch is not None and self.on_epoch(dict(record)) is False and epoch < self.spec.epochs:
                    status = "stopped"
                    break
        finally:
            if bar is not None:
                bar.close()
        accs = [h["val_acc"] for h in history]
        trained = (len(history) - first_epoch + 1) * self.steps_per_epoch * self.batch  # in this call
        test_acc = None
        if evaluate_test and self.bundle.test is not None and history and status != "failed":
            test_acc = self._evaluate(model, *self.bundle.test.tensors)
        return TrainResult(
            val_acc=accs[-1] if accs else 0.0,
            best_val_acc=max(accs) if accs else 0.0,
            epochs=len(history),
            train_seconds=earlier + time.perf_counter() - start,
            images_per_second=trained / step_seconds if step_seconds > 0 and trained else 0.0,
            history=history,
            status=status,
            failure_reason=reason,
            params=params,
            macs=self.macs,
            device=str(self.device),
            resolution=self.spec.resolution,
            n_train=self.n_train,
            n_val=self.n_val,
            drop_path_rate=self.cfg.drop_path_rate,
            test_acc=test_acc,
            precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, "fp32"),  # type: ignore[arg-type]
            val_correct=pack_correct(correct) if correct is not None else None,
        )

    # -- resuming -------------------------------------------------------------------------------
    def _state(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict]) -> dict:
        """All a resume needs after ``epoch``: weights, optimizer, every RNG the loop reads, history."""
        numpy_state = np.random.get_state()
        rng = {
            "torch": torch.get_rng_state(),
            "loop": self.gen.get_state(),  # data order and augmentation
            "python": random.getstate(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        }
        if self.cuda:
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": epoch,
            "epochs": self.spec.epochs,
            "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng,
            "history": [dict(h) for h in history],
        }

    def _restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> list[dict]:
        epoch = state["epoch"]
        if state.get("epochs") != self.spec.epochs or not 1 <= epoch <= self.spec.epochs:
            raise UserError(f"saved training state is for {state.get('epochs')} epochs at epoch {epoch}, "
                            f"this training runs {self.spec.epochs}")  # fmt: skip
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            _match_state_layouts(optimizer)
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"saved training state does not fit the network ({first})") from None
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.gen.set_state(rng["loop"])
        version, keys, gauss = rng["python"]
        random.setstate((version, tuple(keys), gauss))
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        if self.cuda and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return [dict(h) for h in state["history"]]

    def _train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, bar: Any
    ) -> tuple[float, int | None]:
        """One pass over the train split. Returns (sum of the per-step losses, 1-based step of a
        non-finite loss or None)."""
        model.train()
        order = torch.randperm(self.n_train, generator=self.gen)
        base = (epoch - 1) * self.steps_per_epoch
        check_every = CUDA_CHECK_EVERY if self.cuda else 1  # on the CPU a host read costs nothing
        loss_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        steps = torch.arange(1, self.steps_per_epoch + 1, device=self.device)
        autocast = self._autocast()
        for i in range(self.steps_per_epoch):
            with record_function("proxy.batch"):
                idx = order[i * self.batch : (i + 1) * self.batch]
                x, y = self._batch(idx)
                for group in optimizer.param_groups:
                    group["lr"] = self.lr_at(base + i)
            with record_function("proxy.forward"), autocast:
                logits = model(x)
            with record_function("proxy.loss"):
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.spec.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            with record_function("proxy.backward"):
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            with record_function("proxy.optimizer"):
                if self.scaler is not None:
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    optimizer.step()
            loss = loss.detach()
            loss_sum += loss
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), steps[i], first_bad)
            if bar is not None:
                bar.update(1)
            if (i + 1) % check_every == 0 or i + 1 == self.steps_per_epoch:
                bad = int(first_bad)
                if bad >= 0:
                    return math.nan, bad
        return float(loss_sum), None

    def _autocast(self):  # type: ignore[no-untyped-def]
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x_train.device != self.device:  # data too large to live on the GPU
            x = self.x_train[idx].to(self.device, non_blocking=True)
            y = self.y_train[idx].to(self.device, non_blocking=True)
        else:
            idx = idx.to(self.device, non_blocking=True)
            x, y = self.x_train[idx], self.y_train[idx]
        x = augment(x, self.pad, self.bundle.hflip, self.gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _evaluate(self, model: nn.Module, images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> float:
        """Accuracy on the validation split (or on ``images`` and ``labels`` when given)."""
        correct = self._correct(model, images, labels)
        return int(correct.sum()) / len(correct)

    @torch.inference_mode()
    def _correct(self, model: nn.Module, images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per image: classified right (bool, on the host), over the validation split by default."""
        x_all, y_all = (self.x_val, self.y_val) if images is None or labels is None else (images, labels)
        model.eval()
        hits = []
        autocast = self._autocast()
        with record_function("proxy.evaluate"):
            for start in range(0, len(y_all), EVAL_BATCH):
                x = x_all[start : start + EVAL_BATCH].to(self.device, non_blocking=True)
                y = y_all[start : start + EVAL_BATCH].to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
                    hits.append(model(x).argmax(dim=1) == y)
            return torch.cat(hits).cpu()


def _match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored optimizer state tensor its parameter's memory layout. The fused AdamW kernel
    reads parameter, gradient and moments as flat memory: channels-last moments (a state saved on
    CUDA, which trains channels-last) against contiguous weights (resumed on the CPU) updated the
    wrong elements, silently."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in list(state.items()):
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def pack_correct(correct: torch.Tensor) -> str:
    """Per-image right/wrong flags as hex text, one bit each (big-endian within a byte)."""
    return np.packbits(correct.numpy().astype(np.uint8)).tobytes().hex()


def unpack_correct(text: str, n: int) -> np.ndarray:
    """The ``n`` flags `pack_correct` wrote (bool array)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def augment(x: torch.Tensor, pad: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to ``pad`` pixels (reflect padding) and optional horizontal flip.

    One gather over the padded batch does both: each sample reads its own window, with its
    column order reversed when flipped. Random numbers come from ``gen`` (CPU) for determinism.
    """
    if pad <= 0 and not hflip:
        return x
    b, c, h, w = x.shape
    pad = min(pad, h - 1, w - 1)
    source = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=gen)
    cols = torch.arange(w).view(1, 1, w).expand(b, 1, w)
    if hflip:
        flip = torch.rand(b, 1, 1, generator=gen) < 0.5
        cols = torch.where(flip, cols.flip(-1), cols)
    rows = dy + torch.arange(h).view(1, h, 1)
    index = (rows * (w + 2 * pad) + dx + cols).view(b, 1, h * w).to(x.device, non_blocking=True)
    return source.flatten(2).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


# -- helpers ------------------------------------------------------------------------------


def _resolve_data(data: str | DataBundle, spec: ProxySpec) -> DataBundle:
    if not isinstance(data, DataBundle):
        return load_data(data, spec.resolution, fraction=spec.data_fraction, seed=DATA_SEED)
    if data.resolution != spec.resolution:
        raise UserError(
            f"{data.name}: data holds {data.resolution} px images but the proxy resolution is {spec.resolution}"
        )
    if data.fraction == spec.data_fraction:
        return data
    if data.fraction != 1.0:
        raise UserError(
            f"{data.name}: data loaded with fraction {data.fraction} but the proxy asks for {spec.data_fraction}"
        )
    x, y = data.train.tensors
    keep = torch.from_numpy(stratified_subset(y.numpy(), spec.data_fraction, DATA_SEED))
    train = torch.utils.data.TensorDataset(x[keep], y[keep])
    return dataclasses.replace(data, train=train, fraction=spec.data_fraction)


def _nbytes(bundle: DataBundle) -> int:
    return sum(t.numel() * t.element_size() for ds in (bundle.train, bundle.val) for t in ds.tensors)


@contextlib.contextmanager
def _cudnn_deterministic(device: torch.device) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _progress_bar(total: int, name: str, enabled: bool, done: int = 0):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: shown only on a terminal, so logs and pipes stay clean
    return tqdm(total=total, initial=done, desc=f"train {name}", unit="step", leave=False, disable=None,
                dynamic_ncols=True)  # fmt: skip

"""The proxy's defaults and limits: one home, read by every command and library entry point.

A proxy is a cheap training of an architecture that ranks it (`train_proxy.trainer`). What the
default proxy is was measured, not chosen: docs/fidelity.md (benchmarks/bench_proxy_fidelity.py)
gives the best rank agreement per CPU-second among the training proxies measured there to one
epoch at 32 px, width x0.5, on a tenth of the training split (4,800 Fashion-MNIST images), scored
on the whole validation part (Kendall tau +0.52 against a full-width epoch on all the data, where
width x0.25 gave +0.27). Every command that trains (`nas search`, `nas train`, `nas finalize`,
`nas fidelity`, `scaling coeffs`, the benchmarks) starts from these values; their flags override them.
"""

from __future__ import annotations

EPOCHS = 1
RESOLUTION = 32  # px; Fashion-MNIST's 28 px padded to the space's stride of 32
WIDTH = 0.5  # width multiplier of the proxy model (deploy widths x this): about half the cost per image
DATA_FRACTION = 0.1  # of the training split, stratified by class
BATCH_SIZE = 64
SEED = 0
LR = 2e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1

# limits every entry point checks (one message each: `check_width`, `check_fraction`)
MAX_WIDTH = 4.0  # four times the deploy widths: beyond it a "proxy" costs more than the network itself
MIN_BATCH_SIZE = 2  # batch norm needs two samples


def warmup_epochs(epochs: int) -> float:
    """The warm-up of a training: a fifth of the run, at most one epoch (a one-epoch proxy would
    otherwise be all warm-up and end at the peak learning rate, never annealed)."""
    return min(1.0, 0.2 * epochs)


def width_problem(value: float) -> str | None:
    """Why ``value`` is no width multiplier (None when it is one)."""
    if not (value == value and 0.0 < value <= MAX_WIDTH):  # NaN fails the first test
        return f"must be in (0, {MAX_WIDTH:g}]"
    return None


def fraction_problem(value: float) -> str | None:
    """Why ``value`` is no data fraction (None when it is one)."""
    if not (value == value and 0.0 < value <= 1.0):
        return "must be in (0, 1]"
    return None

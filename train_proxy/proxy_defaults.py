"""The proxy's defaults and limits: one home, read by every command and library entry point.

A proxy is a cheap training of an architecture that ranks it (`train_proxy.trainer`). What the
default proxy is was measured, not chosen: docs/fidelity.md (benchmarks/bench_proxy_fidelity.py)
gives the best rank agreement per CPU-second among the training proxies measured there to one
epoch at 32 px, width x0.5, on a tenth of the training split (4,800 Fashion-MNIST images), scored
on the whole validation part (Kendall tau +0.52 against a full-width epoch on all the data, where
width x0.25 gave +0.27). Every command that trains (`nas search`, `nas train`, `nas finalize`,
`nas fidelity`, `nas score`, `scaling coeffs`, the benchmarks) starts from these values; their
flags override them. `ProxySpec()` is exactly this proxy.

A command that needs another value for a reason of its own takes it from a named constant below
(never a literal in the command), with the reason beside it. docs/vocabulary.md lists every
flag, its default and the commands that have it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# -- the default proxy (nas search's trials; ProxySpec()) ---------------------------------------
EPOCHS = 1
RESOLUTION = 32  # px; Fashion-MNIST's 28 px padded to the space's stride of 32
WIDTH = 0.5  # width multiplier of the proxy model (deploy widths x this): about half the cost per image
DATA_FRACTION = 0.1  # of the training split, stratified by class
VAL_FRACTION = 1.0  # of the validation split scored after each epoch (a search's low rungs score less)
BATCH_SIZE = 64  # the training batch of every command that trains
SEED = 0
LR = 2e-3  # peak learning rate of AdamW
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
DROP_PATH = 0.0  # stochastic depth off: a proxy ranks architectures from a few epochs
DEVICE = "auto"  # the training device: CUDA where present, else the CPU
PRECISION = "auto"  # on CUDA: bf16 autocast where native, else fp16 with a gradient scaler

# -- multi-fidelity: the rungs of a search (`rung_ladder`) ------------------------------------
# A search trains every architecture at the lowest rung and gives the best 1/RUNG_GROWTH of each
# rung the next one (Ray Tune's ASHA). The proxy flags (--epochs, --proxy-width, --data-fraction)
# describe the top rung, the one that decides the front; each step down the ladder makes the
# proxy cheaper by the next entry of RUNG_STEPS_DOWN, in turn. What is cut first was measured
# (docs/fidelity.md, Kendall tau against a full-width epoch on all the data): at about the same
# CPU, a quarter width on a tenth of the images ranks (tau +0.47, 16 architectures) where half
# width on 3 % of them does not (+0.08), and from there width buys the most (x0.25 -> x0.5:
# +0.47 -> +0.62) where 2.5x the images at x0.25 gave +0.33 (12). So the first step down halves the width and keeps the images; the next cuts
# the images by RUNG_GROWTH; epochs are never cut (one epoch is the least there is).
RUNGS = 2
RUNG_GROWTH = 3  # ASHA's reduction factor: the best third of a rung goes on
RUNG_STEPS_DOWN = ("width", "images")
# The validation share rungs below the top score. A fixed stratified subset is cheaper (at the
# lowest rung a full pass over the 12,000 images costs about half as much as the training), but it
# was measured to cost ranking quality there (docs/fidelity.md, 16 architectures, the same
# trainings scored both ways): Kendall tau +0.47 on all 12,000 images, +0.38 on 6,000, +0.30 on
# 2,000. With the fast kernels the default search ends in about 5 minutes, so every rung scores
# all of it. A run records the share it started with (SearchSettings.low_rung_val_fraction).
LOW_RUNG_VAL_FRACTION = 1.0
MAX_RUNGS = 5


@dataclass(frozen=True)
class Rung:
    """The proxy of one rung: what differs between rungs (the rest is the search's proxy)."""

    index: int  # 0: the lowest, cheapest rung
    epochs: int
    width: float
    data_fraction: float
    val_fraction: float

    @property
    def budget(self) -> int:
        """The rung's place on ASHA's time axis: RUNG_GROWTH ** index (1, 3, 9, ...)."""
        return RUNG_GROWTH**self.index

    def label(self) -> str:
        """``e1-w0.5-f0.1`` (the fidelity study's names); ``-v0.17`` when it scores a validation share."""
        text = f"e{self.epochs}-w{self.width:g}-f{self.data_fraction:.3g}"
        return text + (f"-v{self.val_fraction:.2g}" if self.val_fraction < 1 else "")


def rung_ladder(epochs: int, width: float, data_fraction: float, rungs: int,
                low_val_fraction: float = LOW_RUNG_VAL_FRACTION) -> list[Rung]:
    """The rungs of a search whose top rung trains ``epochs`` at ``width`` on ``data_fraction``
    of the training split, lowest first: each step down applies the next of RUNG_STEPS_DOWN
    (halve the width, then a RUNG_GROWTH-th of the images, then again; see RUNGS above); the
    rungs below the top score ``low_val_fraction`` of the validation split."""
    ladder = [Rung(index=rungs - 1, epochs=epochs, width=width, data_fraction=data_fraction, val_fraction=1.0)]
    for step in range(rungs - 1):
        above = ladder[-1]
        cut = RUNG_STEPS_DOWN[step % len(RUNG_STEPS_DOWN)]
        ladder.append(Rung(index=above.index - 1, epochs=epochs,
                           width=above.width / 2 if cut == "width" else above.width,
                           data_fraction=above.data_fraction / RUNG_GROWTH if cut == "images" else above.data_fraction,
                           val_fraction=low_val_fraction))  # fmt: skip
    return ladder[::-1]


def rungs_problem(value: int) -> str | None:
    """Why ``value`` is no number of rungs (None when it is one)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RUNGS):
        return f"must be an integer from 1 to {MAX_RUNGS}"
    return None


# -- full trainings (`nas train`, `nas finalize`) ------------------------------------------------
# They train the real network, not a proxy of it: its own widths on all the training data.
FULL_WIDTH = 1.0
FULL_DATA_FRACTION = 1.0
# One default length for both: `nas finalize`'s since it was written (nas train had 3). A full-width
# epoch of a default-space network on Fashion-MNIST takes 5-15 CPU-minutes (docs/fidelity.md), so
# this is an hour or more on a CPU: give --epochs for a quick look, or more for a real final
# training (docs/train.md's example uses 30).
FULL_EPOCHS = 10

# -- the fidelity study's reference (`nas fidelity`, train_proxy.fidelity) -----------------------
# The reference the proxies are ranked against: the full network (FULL_WIDTH) on all the data
# (FULL_DATA_FRACTION) for one epoch at the proxy's resolution, as docs/fidelity.md measured it
# (one reference epoch already costs 5-15 CPU-minutes per architecture on Fashion-MNIST).
REF_EPOCHS = 1
REF_RESOLUTION = RESOLUTION

# -- zero-cost scores (`nas score`, the fidelity study) ------------------------------------------
# Not a training batch: the one batch the scores see. NASWOT's kernel is batch x batch, so its
# value depends on it; docs/fidelity.md measured the scores with 32 images.
SCORE_BATCH_SIZE = 32

# -- scaling coeffs --------------------------------------------------------------------------------
# The base proxy resolution of `scaling coeffs`, which compares resolution coefficients (gamma):
# each candidate trains at this times its deploy-resolution gain, on the 32 px grid. The default
# grid's gains at phi=1 are at most 1.29, so at 32 px no candidate would reach the next step and
# gamma would be invisible to the proxy; at 64 px the largest gammas show (the report says when
# none does). Everything else of its proxy is the default proxy.
COEFFS_RESOLUTION = 64

# -- limits every entry point checks (one message each: `width_problem`, `fraction_problem`) -----
MAX_WIDTH = 4.0  # four times the deploy widths: beyond it a "proxy" costs more than the network itself
MIN_BATCH_SIZE = 2  # batch norm needs two samples


def warmup_epochs(epochs: int) -> float:
    """The warm-up of a training: a fifth of the run, at most one epoch (a one-epoch proxy would
    otherwise be all warm-up and end at the peak learning rate, never annealed)."""
    return min(1.0, 0.2 * epochs)


WARMUP_EPOCHS = warmup_epochs(EPOCHS)  # the default proxy's


def width_problem(value: float) -> str | None:
    """Why ``value`` is no width multiplier (None when it is one)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= MAX_WIDTH):
        return f"must be in (0, {MAX_WIDTH:g}]"
    return None


def fraction_problem(value: float) -> str | None:
    """Why ``value`` is no data fraction (None when it is one)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= 1.0):
        return "must be in (0, 1]"
    return None


def batch_size_problem(value: int) -> str | None:
    """Why ``value`` is no training batch size (None when it is one)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= MIN_BATCH_SIZE):
        return f"must be >= {MIN_BATCH_SIZE} (batch norm needs two samples)"
    return None

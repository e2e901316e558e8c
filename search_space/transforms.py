"""Structural edits of an `ArchConfig` with the engine's rounding rules (one place for them).

Rules: a width is rounded to the nearest multiple of lcm(8, heads) (the knobs a block type declares
in ``divides_width``), never below that multiple and never more than 10% below the unrounded value
(EfficientNet's rule); a depth is rounded up and is at least 1; a resolution is rounded to the
nearest multiple of 32 (at least 32).
"""

from __future__ import annotations

import math
from dataclasses import replace

from .blocks.registry import get_block
from .config import ArchConfig, StageConfig

WIDTH_DIVISOR = 8
RESOLUTION_DIVISOR = 32


def width_divisor(stage: StageConfig, divisor: int = WIDTH_DIVISOR) -> int:
    return math.lcm(divisor, get_block(stage.block).width_multiple(stage))


def round_width(width: float, multiple: int) -> int:
    rounded = max(multiple, int(width + multiple / 2) // multiple * multiple)
    if rounded < 0.9 * width:
        rounded += multiple
    return rounded


def round_depth(depth: float) -> int:
    return max(1, math.ceil(depth - 1e-9))


def round_resolution(resolution: float) -> int:
    return max(RESOLUTION_DIVISOR, int(round(resolution / RESOLUTION_DIVISOR)) * RESOLUTION_DIVISOR)


def scale_widths(cfg: ArchConfig, multiplier: float, divisor: int = WIDTH_DIVISOR) -> ArchConfig:
    """Every stage width (and the CMT stem) times ``multiplier``, with the rounding rules above."""
    if multiplier == 1.0:
        return cfg
    stages = tuple(
        replace(s, width=round_width(s.width * multiplier, width_divisor(s, divisor))) for s in cfg.stages
    )
    stem = cfg.stem
    if stem.kind == "conv3":
        stem = replace(stem, channels=max(8, round_width(stem.channels * multiplier, divisor)))
    return replace(cfg, stages=stages, stem=stem)


def with_classes(cfg: ArchConfig, num_classes: int) -> ArchConfig:
    return cfg if cfg.num_classes == num_classes else replace(cfg, num_classes=num_classes)

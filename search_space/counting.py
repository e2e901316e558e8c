"""Counting parameters and MACs ("FLOPs" in the VAN/CMT papers' sense).

* ``analytic_cost``: pure arithmetic on the config (no tensors), microseconds per network, used
  while sampling. One cost function per block type lives next to the block (the registry).
* ``traced_cost``: builds the model on the meta device and runs it under FlopCounterMode
  (conv, linear, matmul and SDPA, exact on meta), plus the elementwise attention products that
  blocks record themselves. Used to check the analytic model.

Both count MACs of convolutions, linear layers and attention products; biases, norms,
activations, softmax and elementwise gating are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .blocks.heads import head_cost
from .blocks.registry import get_block
from .blocks.stems import patch_embed_cost, stem_cost
from .blocks.traced_macs import recording
from .config import ArchConfig
from .cost import Cost
from . import cost as C


@dataclass(frozen=True)
class CostReport:
    total: Cost
    parts: tuple[tuple[str, Cost], ...]  # ("stem", ...), ("stage1", ...), ..., ("head", ...)
    resolution: int


def analytic_report(cfg: ArchConfig, resolution: int | None = None) -> CostReport:
    return _analytic_report(cfg, resolution or cfg.resolution)


@lru_cache(maxsize=8192)  # configs are frozen and hashable; samplers revisit the same ones
def _analytic_report(cfg: ArchConfig, res: int) -> CostReport:
    parts: list[tuple[str, Cost]] = [("stem", stem_cost(cfg.stem, cfg.in_channels, res))]
    channels = cfg.stem.channels if cfg.stem.kind == "conv3" else cfg.in_channels
    config_sizes = cfg.feature_sizes()
    sizes = cfg.feature_sizes(res)
    for i, (stage, size, config_size) in enumerate(zip(cfg.stages, sizes, config_sizes)):
        block = get_block(stage.block)
        stage_cost = (
            patch_embed_cost(channels, stage, size)
            + block.shared_cost(stage, config_size)  # parameters sized for the configured resolution
            + block.cost(stage, size) * stage.depth
            + (C.norm(stage.width) if stage.out_norm == "ln" else Cost())
        )
        parts.append((f"stage{i + 1}", stage_cost))
        channels = stage.width
    parts.append(("head", head_cost(cfg.head, channels, sizes[-1], cfg.num_classes)))
    total = sum((c for _, c in parts), Cost())
    return CostReport(total, tuple(parts), res)


def analytic_cost(cfg: ArchConfig, resolution: int | None = None) -> Cost:
    return analytic_report(cfg, resolution).total


def traced_cost(cfg: ArchConfig, resolution: int | None = None) -> Cost:
    from .model import build_model

    res = resolution or cfg.resolution
    with torch.device("meta"):
        model = build_model(cfg).eval()
        x = torch.empty(1, cfg.in_channels, res, res)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), recording() as extra:
        with FlopCounterMode(display=False) as counter:
            model(x)
    return Cost(params, counter.get_total_flops() // 2 + extra[0])

"""Counting parameters and MACs ("FLOPs" in the VAN/CMT papers' sense).

* ``analytic_cost``: pure arithmetic on the config (no tensors), microseconds per network, used
  while sampling. It sums the costs of the parts `search_space.walk` lists (the parts
  `build_model` builds); one cost function per block type lives next to the block (the registry).
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

from .blocks.traced_macs import recording
from .config import ArchConfig
from .cost import ZERO, Cost
from .walk import network_parts


@dataclass(frozen=True)
class CostReport:
    """The analytic count of a network: its total and its parts, at one resolution."""

    total: Cost
    parts: tuple[tuple[str, Cost], ...]  # ("stem", ...), ("stage1", ...), ..., ("head", ...)
    resolution: int


def analytic_report(cfg: ArchConfig, resolution: int | None = None) -> CostReport:
    """Parameters and MACs per part of the network (stem, each stage, head) and in total.

    Pure arithmetic on the config (no model is built), cached per (config, resolution).

    Args:
        cfg: the architecture.
        resolution: input side in pixels; default the config's own.
    """
    return _analytic_report(cfg, resolution or cfg.resolution)


@lru_cache(maxsize=8192)  # configs are frozen and hashable; samplers revisit the same ones
def _analytic_report(cfg: ArchConfig, res: int) -> CostReport:
    totals: dict[str, Cost] = {}
    for part in network_parts(cfg, res):
        if part.kind == "block":
            if part.index:
                continue  # a stage's blocks are identical: the first one counts for all
            cost = part.cost() * cfg.stages[part.stage].depth
        else:
            cost = part.cost()
        group = part.group
        totals[group] = totals[group] + cost if group in totals else cost
    total = sum(totals.values(), ZERO)
    return CostReport(total, tuple(totals.items()), res)


def analytic_cost(cfg: ArchConfig, resolution: int | None = None) -> Cost:
    """Parameters and MACs of the whole network, from the analytic model (about 0.15 ms).

    MACs are multiply-accumulates of convolutions, linear layers and attention products ("FLOPs"
    as the VAN and CMT papers count them); `traced_cost` agrees exactly.

    Args:
        cfg: the architecture.
        resolution: input side in pixels; default the config's own.
    """
    return analytic_report(cfg, resolution).total


def traced_cost(cfg: ArchConfig, resolution: int | None = None) -> Cost:
    """Parameters and MACs counted by running the network: the check on `analytic_cost`.

    The model is built on PyTorch's meta device (no memory, milliseconds) and run once under
    `torch.utils.flop_counter.FlopCounterMode`, plus the elementwise window-attention products
    ACmix records from the shapes it ran on.

    Args:
        cfg: the architecture.
        resolution: input side in pixels; default the config's own.
    """
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

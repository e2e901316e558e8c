"""`build_model(cfg)`: the network an `ArchConfig` describes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks.heads import ClassifierHead
from .blocks.layers import LayerNorm2d
from .blocks.registry import get_block
from .blocks.stems import PatchEmbed, build_stem
from .config import ArchConfig, StageConfig


def drop_path_schedule(cfg: ArchConfig) -> list[float]:
    """Each block's stochastic depth rate, in network order: linear from 0 at the first block to
    ``cfg.drop_path_rate`` at the last (VAN's and CMT's torch.linspace(0, rate, sum(depths)))."""
    n = sum(stage.depth for stage in cfg.stages)
    if n == 1:
        return [0.0]
    return [cfg.drop_path_rate * (i / (n - 1)) for i in range(n)]  # ends exactly at the rate


class Stage(nn.Module):
    def __init__(self, stage: StageConfig, in_channels: int, size: int, drop_paths: Sequence[float] = ()) -> None:
        super().__init__()
        block_type = get_block(stage.block)
        rates = list(drop_paths) or [0.0] * stage.depth  # one stochastic depth rate per block
        if len(rates) != stage.depth:
            raise ValueError(f"{len(rates)} drop path rates for a stage of depth {stage.depth}")
        self.embed = PatchEmbed(in_channels, stage)
        self.shared = block_type.build_shared(stage, size) if block_type.build_shared else None
        self.blocks = nn.ModuleList(block_type.build(stage, size, drop_path=rate) for rate in rates)
        self.out_norm = LayerNorm2d(stage.width, eps=1e-6) if stage.out_norm == "ln" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, self.shared)
        return self.out_norm(x)


class HybridNet(nn.Module):
    """Stem -> stages -> head. Accepts any input whose side is a multiple of 32."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem, channels = build_stem(cfg.stem, cfg.in_channels)
        stages, rates = [], drop_path_schedule(cfg)
        for stage, size in zip(cfg.stages, cfg.feature_sizes()):
            stages.append(Stage(stage, channels, size, rates[: stage.depth]))
            rates = rates[stage.depth :]
            channels = stage.width
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(cfg.head, channels, cfg.num_classes)
        self.apply(_init_weights)
        for module in self.modules():  # a block family's own rule replaces the default (CMT)
            if module is not self and callable(getattr(module, "init_weights", None)):
                module.init_weights()
        for module in self.modules():  # blocks with a structured init (ACmix's shift kernels)
            if hasattr(module, "_init_shift_kernels"):
                module._init_shift_kernels()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        # The default rule, VAN's: He init on fan-out divided by groups (torch's kaiming ignores
        # groups). A block family with another rule has an init_weights method (CMT's does).
        kh, kw = module.kernel_size
        fan_out = kh * kw * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(cfg: ArchConfig) -> HybridNet:
    return HybridNet(cfg)

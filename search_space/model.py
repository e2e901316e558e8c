"""`build_model(cfg)`: the network an `ArchConfig` describes."""

from __future__ import annotations

import torch
from torch import nn

from .blocks.heads import ClassifierHead
from .blocks.layers import LayerNorm2d
from .blocks.registry import get_block
from .blocks.stems import PatchEmbed, build_stem
from .config import ArchConfig, StageConfig


class Stage(nn.Module):
    def __init__(self, stage: StageConfig, in_channels: int, size: int) -> None:
        super().__init__()
        block_type = get_block(stage.block)
        self.embed = PatchEmbed(in_channels, stage)
        self.shared = block_type.build_shared(stage, size) if block_type.build_shared else None
        self.blocks = nn.ModuleList(block_type.build(stage, size) for _ in range(stage.depth))
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
        stages = []
        for stage, size in zip(cfg.stages, cfg.feature_sizes()):
            stages.append(Stage(stage, channels, size))
            channels = stage.width
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(cfg.head, channels, cfg.num_classes)
        self.apply(_init_weights)
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
        # He init on fan-out per group, as VAN and CMT do (torch's kaiming ignores groups)
        kh, kw = module.kernel_size
        fan_out = kh * kw * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(cfg: ArchConfig) -> HybridNet:
    return HybridNet(cfg)

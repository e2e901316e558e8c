"""The one walk over a network's parts, in forward order; building, counting and the latency table
all follow it, so they cannot disagree about what a network contains.

    stem, then per stage: patch embedding, shared module (if the block type has one), blocks,
    stage-end norm (if any), then the head.

Each part knows its channels and feature sizes (at the walked resolution and at the config's,
which sizes per-stage parameters such as CMT's relative position bias), and builds and counts
itself. A block also carries its stochastic-depth rate: linearly spaced over all the network's
blocks from 0 to ``cfg.drop_path_rate``.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

from torch import nn

from . import cost as C
from .blocks.heads import ClassifierHead, head_cost
from .blocks.layers import LayerNorm2d
from .blocks.registry import get_block
from .blocks.stems import PatchEmbed, build_stem, patch_embed_cost, stem_cost
from .config import ArchConfig, StageConfig
from .cost import Cost

KINDS = ("stem", "embed", "shared", "block", "out_norm", "head")
OUT_NORM_EPS = 1e-6


class NetworkPart(NamedTuple):
    """One part of a network (a NamedTuple: counting walks thousands of networks per second)."""

    kind: str  # one of KINDS
    name: str  # "stem", "stage2.embed", "stage2.shared", "stage2.block0", "stage2.out_norm", "head"
    cfg: ArchConfig
    in_channels: int
    out_channels: int
    in_size: int  # input side at the walked resolution
    size: int  # output side at the walked resolution
    config_size: int  # output side at the config's own resolution
    stage: Optional[int] = None  # 0-based stage index (None for the stem and the head)
    index: Optional[int] = None  # 0-based block index within its stage (blocks only)
    drop_path: float = 0.0  # stochastic-depth rate (blocks only)

    @property
    def group(self) -> str:
        """The part of a cost report it belongs to: "stem", "stage<n>" or "head"."""
        return self.name.split(".", 1)[0]

    @property
    def stage_config(self) -> StageConfig:
        assert self.stage is not None, f"{self.name} belongs to no stage"
        return self.cfg.stages[self.stage]

    def build(self) -> Optional[nn.Module]:
        """The module of this part (None for a shared part whose block type builds nothing)."""
        cfg = self.cfg
        if self.kind == "stem":
            return build_stem(cfg.stem, cfg.in_channels)[0]
        if self.kind == "embed":
            return PatchEmbed(self.in_channels, self.stage_config)
        if self.kind == "shared":
            build_shared = get_block(self.stage_config.block).build_shared
            assert build_shared is not None  # the walk yields shared parts only for block types with one
            return build_shared(self.stage_config, self.config_size)
        if self.kind == "block":
            stage = self.stage_config
            return get_block(stage.block).build(stage, self.config_size, drop_path=self.drop_path)
        if self.kind == "out_norm":
            return LayerNorm2d(self.out_channels, eps=OUT_NORM_EPS)
        return ClassifierHead(cfg.head, self.in_channels, cfg.num_classes)

    def cost(self) -> Cost:
        """Params and MACs of this part at the walked resolution (shared parts: at the config's)."""
        cfg = self.cfg
        if self.kind == "stem":
            return stem_cost(cfg.stem, cfg.in_channels, self.in_size)
        if self.kind == "embed":
            return patch_embed_cost(self.in_channels, self.stage_config, self.size)
        if self.kind == "shared":
            return get_block(self.stage_config.block).shared_cost(self.stage_config, self.config_size)
        if self.kind == "block":
            return get_block(self.stage_config.block).cost(self.stage_config, self.size)
        if self.kind == "out_norm":
            return C.norm(self.out_channels)
        return head_cost(cfg.head, self.in_channels, self.in_size, cfg.num_classes)


def drop_path_schedule(cfg: ArchConfig) -> list[float]:
    """Each block's stochastic depth rate, in network order: linear from 0 at the first block to
    ``cfg.drop_path_rate`` at the last (VAN's and CMT's torch.linspace(0, rate, sum(depths)))."""
    n = sum(stage.depth for stage in cfg.stages)
    top = float(cfg.drop_path_rate)
    return [top * (i / (n - 1)) if n > 1 else 0.0 for i in range(n)]  # ends exactly at the rate


def network_parts(cfg: ArchConfig, resolution: int | None = None) -> Iterator[NetworkPart]:
    """The parts of ``cfg`` run at ``resolution`` (default: its own), in forward order."""
    res = resolution or cfg.resolution
    stride = cfg.stem.stride
    channels = cfg.stem.channels if cfg.stem.kind == "conv3" else cfg.in_channels
    size, config_size = res // stride, cfg.resolution // stride
    yield NetworkPart("stem", "stem", cfg, cfg.in_channels, channels, res, size, config_size)
    rates = iter(drop_path_schedule(cfg))
    sizes, config_sizes = cfg.feature_sizes(res), cfg.feature_sizes()
    for i, (stage, out_size, out_config_size) in enumerate(zip(cfg.stages, sizes, config_sizes)):
        prefix, width = f"stage{i + 1}.", stage.width
        yield NetworkPart("embed", prefix + "embed", cfg, channels, width, size, out_size, out_config_size, i)
        size, config_size = out_size, out_config_size
        if get_block(stage.block).build_shared is not None:
            yield NetworkPart("shared", prefix + "shared", cfg, width, width, size, size, config_size, i)
        for j in range(stage.depth):
            yield NetworkPart(
                "block", f"{prefix}block{j}", cfg, width, width, size, size, config_size, i, j, next(rates)
            )
        if stage.out_norm != "none":
            yield NetworkPart("out_norm", prefix + "out_norm", cfg, width, width, size, size, config_size, i)
        channels = width
    yield NetworkPart("head", "head", cfg, channels, cfg.num_classes, size, 1, 1)

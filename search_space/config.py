"""`ArchConfig`: the one architecture description that flows through the whole engine.

Sampling, building, counting, training, export and scaling all read this object and nothing
else. It is a tree of frozen dataclasses with a YAML round trip (``load`` -> ``dump`` gives the
same text) and validation with precise messages.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .yaml_io import load_yaml, read_text_file

STEM_KINDS = ("none", "conv3")  # none: the first patch embed reads the image (VAN)
HEAD_KINDS = ("linear", "conv_bn_act")  # VAN: pool -> fc; CMT: 1x1 conv -> BN -> swish -> pool -> fc
EMBED_NORMS = ("bn", "ln")
OUT_NORMS = ("none", "ln")


def channel_attentions() -> tuple[str, ...]:
    """Valid ``channel_attention`` values: the attention registry's names (search_space/attention/)."""
    from .attention import attention_names  # late import: the registry imports torch modules

    return attention_names()


@dataclass(frozen=True)
class StemConfig:
    kind: str = "conv3"
    channels: int = 32

    @property
    def stride(self) -> int:
        return 2 if self.kind == "conv3" else 1


@dataclass(frozen=True)
class StageConfig:
    """One stage: a patch embedding (downsampling) followed by ``depth`` identical blocks.

    Knobs that a block type does not use are kept but ignored (e.g. ``kv_reduction`` for VAN),
    so that one stage description can switch block type without losing its other choices.
    """

    block: str
    depth: int
    width: int
    embed_kernel: int = 2
    embed_stride: int = 2
    embed_norm: str = "ln"
    mlp_ratio: float = 4.0
    heads: int = 1
    kv_reduction: int = 1  # CMT: K/V shrunk by a k x k stride-k depthwise conv
    lka_kernel: int = 5  # VAN: depthwise kernel of LKA
    lka_dilated_kernel: int = 7  # VAN: dilated depthwise kernel of LKA
    lka_dilation: int = 3
    attn_kernel: int = 7  # ACmix: local self-attention window
    conv_kernel: int = 3  # ACmix: shift-convolution kernel
    channel_attention: str = "none"
    out_norm: str = "none"  # VAN puts a LayerNorm at the end of every stage

    @property
    def hidden(self) -> int:
        """FFN hidden width, ``int(width * mlp_ratio)`` as the reference code computes it."""
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"
    fc_dim: int = 0  # conv_bn_act: channels of the 1x1 conv before the classifier
    dropout: float = 0.0


@dataclass(frozen=True)
class ArchConfig:
    stages: tuple[StageConfig, ...]
    name: str = "custom"
    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    stem: StemConfig = field(default_factory=StemConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    # Stochastic depth: the network's maximum rate. Block i of n drops its residual branches with
    # rate * i / (n - 1), linear over all blocks of the network as VAN's and CMT's code do. 0 = off.
    drop_path_rate: float = 0.0

    # -- derived geometry -------------------------------------------------------------
    def feature_sizes(self, resolution: int | None = None) -> list[int]:
        """Side length of each stage's feature map (square inputs)."""
        size = (resolution or self.resolution) // self.stem.stride
        sizes = []
        for stage in self.stages:
            size = _embed_out(size, stage.embed_kernel, stage.embed_stride)
            sizes.append(size)
        return sizes

    @property
    def total_stride(self) -> int:
        return self.stem.stride * math.prod(s.embed_stride for s in self.stages)

    # -- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "stem": dataclasses.asdict(self.stem),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "head": dataclasses.asdict(self.head),
            "drop_path_rate": self.drop_path_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "ArchConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        top = _check_keys(data, cls, source, required=("stages",))
        stages_raw = data["stages"]
        if not isinstance(stages_raw, (list, tuple)) or not stages_raw:
            raise ConfigError(f"{source}: 'stages' must be a non-empty list")
        stages = []
        for i, raw in enumerate(stages_raw):
            where = f"{source}: stages[{i}]"
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
            stages.append(StageConfig(**_check_keys(raw, StageConfig, where, required=("block", "depth", "width"))))
        top["stages"] = tuple(stages)
        for key, sub in (("stem", StemConfig), ("head", HeadConfig)):
            if key in data:
                if not isinstance(data[key], Mapping):
                    raise ConfigError(f"{source}: '{key}' must be a mapping")
                top[key] = sub(**_check_keys(data[key], sub, f"{source}: {key}"))
        cfg = cls(**top)
        cfg.validate(source)
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "config") -> "ArchConfig":
        data = load_yaml(text, source)
        if data is None:
            raise ConfigError(f"{source}: empty config")
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> "ArchConfig":
        return cls.from_yaml(read_text_file(path, "file"), source=str(path))

    def save(self, path: str | Path) -> None:
        from .files import write_atomic

        write_atomic(path, self.to_yaml())

    def replace(self, **changes: Any) -> "ArchConfig":
        return dataclasses.replace(self, **changes)

    # -- validation -------------------------------------------------------------------
    def validate(self, source: str = "config") -> None:
        from .blocks.registry import block_names, get_block  # late import: blocks import this module

        def fail(msg: str) -> None:
            raise ConfigError(f"{source}: {msg}")

        _check_types(self, source)
        if not isinstance(self.name, str) or not self.name:
            fail("name must be a non-empty string")
        if self.resolution < 32 or self.resolution % 32:
            fail(f"resolution {self.resolution} is not a positive multiple of 32")
        if self.num_classes < 1:
            fail(f"num_classes must be >= 1, got {self.num_classes}")
        if self.in_channels < 1:
            fail(f"in_channels must be >= 1, got {self.in_channels}")
        if self.stem.kind not in STEM_KINDS:
            fail(f"unknown stem kind '{self.stem.kind}' (choose from {', '.join(STEM_KINDS)})")
        if self.stem.kind == "conv3" and self.stem.channels < 1:
            fail(f"stem channels must be >= 1, got {self.stem.channels}")
        if self.head.kind not in HEAD_KINDS:
            fail(f"unknown head kind '{self.head.kind}' (choose from {', '.join(HEAD_KINDS)})")
        if self.head.kind == "conv_bn_act" and self.head.fc_dim < 1:
            fail(f"head kind conv_bn_act needs fc_dim >= 1, got {self.head.fc_dim}")
        if not 0.0 <= self.head.dropout < 1.0:
            fail(f"head dropout must be in [0, 1), got {self.head.dropout}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if 32 % self.total_stride:
            fail(f"total downsampling {self.total_stride} must divide 32 (strides are powers of 2)")
        sizes = self.feature_sizes()
        for i, (stage, size) in enumerate(zip(self.stages, sizes)):
            at = f"stages[{i}]"
            if stage.block not in block_names():
                fail(f"{at}: unknown block type '{stage.block}' (choose from {', '.join(block_names())})")
            if stage.depth < 1:
                fail(f"{at}: depth must be >= 1, got {stage.depth}")
            if stage.width < 1:
                fail(f"{at}: width must be >= 1, got {stage.width}")
            if stage.embed_stride < 1 or stage.embed_stride & (stage.embed_stride - 1):
                fail(f"{at}: embed_stride must be a power of 2, got {stage.embed_stride}")
            if stage.embed_kernel < stage.embed_stride:
                fail(f"{at}: embed_kernel {stage.embed_kernel} is smaller than embed_stride {stage.embed_stride}")
            if stage.embed_norm not in EMBED_NORMS:
                fail(f"{at}: unknown embed_norm '{stage.embed_norm}' (choose from {', '.join(EMBED_NORMS)})")
            if stage.out_norm not in OUT_NORMS:
                fail(f"{at}: unknown out_norm '{stage.out_norm}' (choose from {', '.join(OUT_NORMS)})")
            if stage.channel_attention not in channel_attentions():
                fail(
                    f"{at}: unknown channel_attention '{stage.channel_attention}' "
                    f"(choose from {', '.join(channel_attentions())})"
                )
            if not 0 < stage.mlp_ratio <= 16 or stage.hidden < 1:
                fail(f"{at}: mlp_ratio must be in (0, 16] and give a hidden width >= 1, got {stage.mlp_ratio}")
            if stage.heads < 1:
                fail(f"{at}: heads must be >= 1, got {stage.heads}")
            for knob in ("lka_kernel", "lka_dilated_kernel", "attn_kernel", "conv_kernel"):
                k = getattr(stage, knob)
                if k < 1 or k % 2 == 0:
                    fail(f"{at}: {knob} must be a positive odd number, got {k}")
            if stage.lka_dilation < 1:
                fail(f"{at}: lka_dilation must be >= 1, got {stage.lka_dilation}")
            if stage.kv_reduction < 1:
                fail(f"{at}: kv_reduction must be >= 1, got {stage.kv_reduction}")
            if size < 1:
                fail(f"{at}: feature map vanishes at resolution {self.resolution}")
            problem = get_block(stage.block).problem(stage, size, self.resolution)  # the block's own rules
            if problem:
                fail(f"{at}: {problem}")


def _embed_out(size: int, kernel: int, stride: int) -> int:
    padding = kernel // 2 if kernel > stride else 0
    return (size + 2 * padding - kernel) // stride + 1


def _check_keys(data: Mapping[str, Any], cls: type, where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key '{missing[0]}'")
    return {k: v for k, v in data.items() if k not in ("stages",) or cls is not ArchConfig}


_NUMERIC = {int: (int,), float: (int, float)}


def _check_types(cfg: ArchConfig, source: str) -> None:
    """Reject wrong scalar types (e.g. ``depth: three``) with the field's name."""

    def check(obj: Any, where: str) -> None:
        hints = {f.name: f.type for f in fields(obj)}
        for name, hint in hints.items():
            value = getattr(obj, name)
            expected = {"int": int, "float": float, "str": str}.get(str(hint))
            if expected is None:
                continue
            ok = isinstance(value, _NUMERIC.get(expected, (expected,))) and not isinstance(value, bool)
            if not ok:
                raise ConfigError(
                    f"{source}: {where}{name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
                )

    check(cfg, "")
    check(cfg.stem, "stem.")
    check(cfg.head, "head.")
    for i, stage in enumerate(cfg.stages):
        check(stage, f"stages[{i}].")

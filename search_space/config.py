"""`ArchConfig`: the one architecture description that flows through the whole engine.

Sampling, building, counting, training, export and scaling all read this object and nothing
else. It is a tree of frozen dataclasses with a YAML round trip (``load`` -> ``dump`` gives the
same text) and validation with precise messages.

Bounds. Every size knob has an upper bound (`LIMITS`), checked by `ArchConfig.validate` and
`SearchSpace.validate` before anything is built, counted or walked, so an absurd value costs
milliseconds and one line instead of gigabytes (``depth: 1000000000`` used to walk a billion
blocks before running out of memory). The bounds sit orders of magnitude above the published
models this engine describes, so they never get in a real model's way:

=====================  =============  ====================================================
field                  allowed        why this bound (published models)
=====================  =============  ====================================================
resolution             32..2048       VAN/CMT: 224-384 px; a batch of 64 at 4096 px is 12 GiB
num_classes            1..100,000     ImageNet-1k 1,000; ImageNet-21k 21,841
in_channels            1..1,024       images: 1-4 channels; hyperspectral: a few hundred
stem.channels          0..16,384      CMT-B's stem: 38 (0: no conv stem)
head.fc_dim            0..16,384      CMT's head: 1,280 (0: pool -> linear)
depth (per stage)      1..1,024       VAN-B3's deepest stage: 27 blocks; CMT-B's: 20
width                  1..16,384      CMT-B's widest stage: 608; VAN-B3's: 512
mlp_ratio              (0, 16]        VAN: 8, CMT: 4 (finite: .nan and .inf are refused)
embed_kernel           1..63          VAN's first patch embedding: 7x7
embed_stride           1..32          powers of 2; the network's total stride is 32
heads                  1..1,024       CMT-B: 8; ACmix-T: 16
kv_reduction           1..512         CMT: 8; a divisor of a feature side (<= 2048 / 4)
lka_kernel, lka_dilated_kernel, attn_kernel, conv_kernel
                       1..63          VAN: 5 and 7; ACmix: 7 and 3; the largest published
                                      dense kernels are 31 (RepLKNet) and 51 (SLaK)
lka_dilation           1..64          VAN: 3
head.dropout, drop_path_rate  [0, 1)  rates
=====================  =============  ====================================================

These are backstops that hold for every stage, whatever its block reads. A block family may
narrow the bound of a knob it reads, in its own file, where it declares the knob
(``BlockType.limits``: ACmix keeps ``attn_kernel`` <= 31, as its window attention loops over
k x k shifted views, and ``conv_kernel`` <= 15, as its shift convolution holds width x k^4
weights); the effective bound of a stage's field is `BlockType.limit`. Every other rule of a knob's
value is the block family's too, declared in its file (``BlockType.odd``: VAN's and ACmix's kernels
are centred, so odd; ``divides_width``, ``divides_feature_map``, ``check``): this module knows no
block type. ``channel_attention`` is a name of the attention registry, not a size: the modules'
sizes follow from the stage width.

Stage fields. `COMMON_STAGE_FIELDS` (what every block reads, and what the network's downsampling
style sets, `DOWNSAMPLING_FIELDS`) is the one list of them; every other `StageConfig` field is a
block knob (`KNOB_FIELDS`), read only by the block types that declare it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from .errors import ConfigError
from .yaml_io import load_yaml, read_text_file

if TYPE_CHECKING:
    from .blocks.registry import BlockType

MAX_RESOLUTION = 2048  # also the bound of every --resolution flag (nas/cli_utils.py)


@dataclass(frozen=True)
class Limit:
    """The inclusive range of a numeric field and why it stops there (shown in the refusal).
    ``open_low``: the low end itself is excluded (mlp_ratio > 0)."""

    low: float
    high: float
    why: str
    open_low: bool = False

    def problem(self, name: str, value: Any, who: str = "") -> str | None:
        """What is wrong with ``value`` for field ``name`` (one phrase), or None. ``who``: whose
        bound this is, for a block family's own (e.g. "acmix's ")."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # a type problem: the type checks name it
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
        if self.open_low:
            if not self.low < value <= self.high:
                return f"{name} must be in ({self.low:g}, {self.high:g}], got {_shown(value)}"
            return None
        if value < self.low:
            return f"{name} must be >= {self.low:g}, got {_shown(value)}"
        if value > self.high:
            return f"{name} {_shown(value)} is above {who or 'the '}limit of {self.high:,g} ({self.why})"
        return None


def _shown(value: Any) -> str:
    """A number for a message: a 4,000-digit integer is not printed in full."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"{'-' if value < 0 else ''}~10^{math.floor(math.log10(abs(value)))}"  # log10 takes any int
    return str(value)


_KERNEL_WHY = "published dense kernels reach 31 (RepLKNet) and 51 (SLaK)"
# Every numeric field's backstop (see the table above). Top-level keys are named as in messages.
LIMITS: dict[str, Limit] = {
    "resolution": Limit(32, MAX_RESOLUTION, "VAN and CMT run at 224-384 px; a batch of 64 at 4096 px is 12 GiB"),
    "num_classes": Limit(1, 100_000, "ImageNet-21k has 21,841 classes"),
    "in_channels": Limit(1, 1024, "images have 1-4 channels, hyperspectral ones a few hundred"),
    "stem.channels": Limit(0, 16_384, "CMT-B's stem has 38"),
    "head.fc_dim": Limit(0, 16_384, "CMT's head has 1,280"),
    "depth": Limit(1, 1024, "VAN-B3's deepest stage has 27 blocks, CMT-B's 20"),
    "width": Limit(1, 16_384, "CMT-B's widest stage has 608 channels, VAN-B3's 512"),
    "mlp_ratio": Limit(0, 16, "VAN uses 8, CMT 4", open_low=True),
    "embed_kernel": Limit(1, 63, "VAN's first patch embedding is 7x7"),
    "embed_stride": Limit(1, 32, "the network's total stride is 32"),
    "heads": Limit(1, 1024, "CMT-B uses 8 heads, ACmix-T 16"),
    "kv_reduction": Limit(1, 512, f"CMT uses 8; it divides a feature side, at most {MAX_RESOLUTION // 4}"),
    "lka_kernel": Limit(1, 63, "VAN uses 5; " + _KERNEL_WHY),
    "lka_dilated_kernel": Limit(1, 63, "VAN uses 7; " + _KERNEL_WHY),
    "lka_dilation": Limit(1, 64, "VAN uses 3"),
    "attn_kernel": Limit(1, 63, "ACmix uses 7; " + _KERNEL_WHY),
    "conv_kernel": Limit(1, 63, "ACmix uses 3; " + _KERNEL_WHY),
}

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
    """The stem before the first stage: ``kind`` is one of `STEM_KINDS`.

    ``conv3`` is CMT's stem, a 3x3 stride-2 conv then two 3x3 convs (each with GELU and BN) of
    ``channels`` channels; ``none`` lets the first patch embedding read the image (VAN).
    """

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


# The one list of the stage fields that are not block knobs: what every block reads, and what the
# network's downsampling style sets (the patch embedding and the stage-end norm: `SearchSpace`
# sets them for the whole network). Every other StageConfig field is a block knob, read only by the
# block types that declare it in `BlockType.knobs` (search_space/blocks/registry.py).
DOWNSAMPLING_FIELDS = ("embed_kernel", "embed_stride", "embed_norm", "out_norm")
COMMON_STAGE_FIELDS = ("block", "depth", "width", "mlp_ratio", "channel_attention", *DOWNSAMPLING_FIELDS)
STAGE_FIELDS = tuple(f.name for f in fields(StageConfig))  # declaration order
# names for people where the field's own name does not read well (tables, notes)
_FIELD_LABELS = {"kv_reduction": "K/V reduction", "mlp_ratio": "MLP ratio", "channel_attention": "channel attn."}


def field_label(name: str) -> str:
    """A StageConfig field's name for people: ``kv_reduction`` -> ``K/V reduction``."""
    return _FIELD_LABELS.get(name, name)


KNOB_FIELDS = tuple(name for name in STAGE_FIELDS if name not in COMMON_STAGE_FIELDS)
if set(COMMON_STAGE_FIELDS) - set(STAGE_FIELDS):
    raise RuntimeError("search_space.config.COMMON_STAGE_FIELDS names a field StageConfig does not have")


@dataclass(frozen=True)
class HeadConfig:
    """The classifier after the last stage: ``kind`` is one of `HEAD_KINDS`.

    ``linear`` pools then classifies (VAN); ``conv_bn_act`` first maps to ``fc_dim`` channels with
    a 1x1 conv, BN and swish (CMT's 1280); ``dropout`` is applied before the classifier.
    """

    kind: str = "linear"
    fc_dim: int = 0  # conv_bn_act: channels of the 1x1 conv before the classifier
    dropout: float = 0.0


@dataclass(frozen=True)
class ArchConfig:
    """One architecture: resolution, stem, stages, head, classes and stochastic depth.

    Frozen and hashable; everything downstream (building, counting, training, latency, export,
    scaling) reads only this object. `from_dict`, `from_yaml` and `load` validate what they
    read and raise `ConfigError` naming the first problem; `to_yaml` and `save` write a file
    those read back to an equal config.

    Example:
        ```python
        from search_space import load_zoo
        cfg = load_zoo("cmt_ti")
        bigger = cfg.replace(resolution=192)   # a new, unvalidated config: call validate()
        bigger.validate()
        ```
    """

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
        """How much the stem and the patch embeddings shrink the input, together."""
        return self.stem.stride * math.prod(s.embed_stride for s in self.stages)

    # -- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists and dicts), as the YAML file holds it."""
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
        """A validated config from plain data; unknown keys and wrong types are a `ConfigError`.

        Args:
            data: the mapping a YAML file holds.
            source: where it came from, the head of any error message.
        """
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
        """The config as YAML text (`from_yaml` reads it back to an equal config)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "config") -> "ArchConfig":
        """A validated config from YAML text, read with a safe loader only."""
        data = load_yaml(text, source)
        if data is None:
            raise ConfigError(f"{source}: empty config")
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> "ArchConfig":
        """A validated config from a YAML file (a regular file within the YAML size cap)."""
        return cls.from_yaml(read_text_file(path, "file"), source=str(path))

    def save(self, path: str | Path) -> None:
        """Write the YAML file atomically (a new file renamed into place, never through a link)."""
        from .files import write_atomic

        write_atomic(path, self.to_yaml())

    def replace(self, **changes: Any) -> "ArchConfig":
        """A copy with some fields changed (not validated: call `validate`)."""
        return dataclasses.replace(self, **changes)

    # -- validation -------------------------------------------------------------------
    def validate(self, source: str = "config") -> None:
        """Every rule, bounds first: nothing is built, counted or walked until every size is
        within `LIMITS` (and the stage's block family's own bounds). Raises `ConfigError`
        ``"<source>: <problem>"`` naming the first problem found.

        Args:
            source: where the config came from (a file name), the head of the message.
        """
        _check_types(self, source)
        problem = (
            self._network_problem()
            or self._stem_and_head_problem()
            or self._stages_problem()
            or self._geometry_problem()
        )
        if problem:
            raise ConfigError(f"{source}: {problem}")

    def _network_problem(self) -> str | None:
        """The network's own scalars: name, resolution, classes, input channels, stochastic depth."""
        if not isinstance(self.name, str) or not self.name:
            return "name must be a non-empty string"
        if self.resolution < 32 or self.resolution % 32:
            return f"resolution {_shown(self.resolution)} is not a positive multiple of 32"
        for name in ("resolution", "num_classes", "in_channels"):
            problem = LIMITS[name].problem(name, getattr(self, name))
            if problem:
                return problem
        if not 0.0 <= self.drop_path_rate < 1.0:  # also refuses nan
            return f"drop_path_rate must be in [0, 1), got {_shown(self.drop_path_rate)}"
        return None

    def _stem_and_head_problem(self) -> str | None:
        """The stem's and the head's kinds and sizes."""
        stem, head = self.stem, self.head
        if stem.kind not in STEM_KINDS:
            return f"unknown stem kind '{stem.kind}' (choose from {', '.join(STEM_KINDS)})"
        if stem.kind == "conv3" and stem.channels < 1:
            return f"stem channels must be >= 1, got {_shown(stem.channels)}"
        if head.kind not in HEAD_KINDS:
            return f"unknown head kind '{head.kind}' (choose from {', '.join(HEAD_KINDS)})"
        if head.kind == "conv_bn_act" and head.fc_dim < 1:
            return f"head kind conv_bn_act needs fc_dim >= 1, got {_shown(head.fc_dim)}"
        if not 0.0 <= head.dropout < 1.0:  # also refuses nan
            return f"head dropout must be in [0, 1), got {_shown(head.dropout)}"
        return LIMITS["stem.channels"].problem("stem.channels", stem.channels) or LIMITS["head.fc_dim"].problem(
            "head.fc_dim", head.fc_dim
        )

    def _stages_problem(self) -> str | None:
        """Each stage on its own, in order (`_stage_problem`)."""
        for i, stage in enumerate(self.stages):
            problem = _stage_problem(stage, f"stages[{i}]")
            if problem:
                return problem
        return None

    def _geometry_problem(self) -> str | None:
        """What needs the feature maps (every size is within bounds by now): the total stride, the
        maps themselves, and each block type's own rules on its stage (`BlockType.problem`)."""
        from .blocks.registry import get_block  # late import: blocks import this module

        if 32 % self.total_stride:
            return f"total downsampling {self.total_stride} must divide 32 (strides are powers of 2)"
        for i, (stage, size) in enumerate(zip(self.stages, self.feature_sizes())):
            if size < 1:
                return f"stages[{i}]: feature map vanishes at resolution {self.resolution}"
            problem = get_block(stage.block).problem(stage, size, self.resolution)
            if problem:
                return f"stages[{i}]: {problem}"
        return None


def _stage_problem(stage: StageConfig, at: str) -> str | None:
    """The first problem of one stage on its own (no geometry): its names, then its sizes against
    the bounds (`LIMITS`, or its block family's own), then its block family's knob rules."""
    from .blocks.registry import block_names, get_block  # late import: blocks import this module

    if stage.block not in block_names():
        return f"{at}: unknown block type '{stage.block}' (choose from {', '.join(block_names())})"
    block_type = get_block(stage.block)
    problem = _stage_names_problem(stage) or _stage_sizes_problem(stage, block_type) or block_type.knob_problem(stage)
    return f"{at}: {problem}" if problem else None


def _stage_names_problem(stage: StageConfig) -> str | None:
    """The stage's categorical fields (the block type is checked first, by `_stage_problem`)."""
    if stage.embed_norm not in EMBED_NORMS:
        return f"unknown embed_norm '{stage.embed_norm}' (choose from {', '.join(EMBED_NORMS)})"
    if stage.out_norm not in OUT_NORMS:
        return f"unknown out_norm '{stage.out_norm}' (choose from {', '.join(OUT_NORMS)})"
    if stage.channel_attention not in channel_attentions():
        return f"unknown channel_attention '{stage.channel_attention}' (choose from {', '.join(channel_attentions())})"
    return None


def _stage_sizes_problem(stage: StageConfig, block_type: "BlockType") -> str | None:
    """Every numeric field against its bound (the backstop, or ``block_type``'s own for a knob it
    reads: `BlockType.limit`), and the rules that tie the stage's sizes together."""
    if stage.embed_stride < 1 or stage.embed_stride & (stage.embed_stride - 1):
        return f"embed_stride must be a power of 2, got {_shown(stage.embed_stride)}"
    for name in _STAGE_BOUNDED:
        limit, who = block_type.limit(name)
        problem = limit.problem(name, getattr(stage, name), who)
        if problem:
            return problem
    if stage.embed_kernel < stage.embed_stride:
        return f"embed_kernel {stage.embed_kernel} is smaller than embed_stride {stage.embed_stride}"
    if stage.hidden < 1:
        return (f"mlp_ratio {stage.mlp_ratio} gives a hidden width of 0 at width {stage.width}; "
                "it must give a hidden width >= 1")  # fmt: skip
    return None


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
# The numeric StageConfig fields, in declaration order. Each must have a bound: a family that adds
# a knob (a field) adds its line to LIMITS too, or this module refuses to load.
_STAGE_BOUNDED = tuple(f.name for f in fields(StageConfig) if str(f.type) in ("int", "float"))
_unbounded = [name for name in _STAGE_BOUNDED if name not in LIMITS]
if _unbounded:
    raise RuntimeError(f"StageConfig field(s) {', '.join(_unbounded)} have no bound in search_space.config.LIMITS")


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

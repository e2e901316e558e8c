"""`build_model(cfg)`: the network an `ArchConfig` describes, with timm's model interface.

timm's contract, as its own hierarchical models (ConvNeXt, PVT v2) define it, so a found network
is a backbone other code builds on (`train_proxy/timm_models.py` registers it with timm):

- ``forward_features`` / ``forward_head(pre_logits=...)`` / ``reset_classifier``;
- ``feature_info``: one entry per stage (channels, reduction against the input, module name), the
  maps a detector's feature pyramid takes; ``forward_intermediates`` and
  ``prune_intermediate_layers`` (what timm's ``features_only=True`` wrapper calls);
- ``set_grad_checkpointing``: each block recomputed in the backward pass (gradients and the
  BatchNorm running statistics as in a plain run);
- ``group_matcher`` (stem, then per stage its patch embedding and each block: timm's layer-wise
  learning-rate decay) and ``no_weight_decay`` (relative position biases, layer scales, mixing rates).
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ArchConfig
from .walk import NetworkPart, drop_path_schedule, network_parts  # noqa: F401  (re-exported)


# Parameters timm's optimiser factory keeps out of weight decay (``no_weight_decay``), by name:
# CMT's relative position bias (the stage's shared module), VAN's layer scales, ACmix's mixing
# rates. (timm leaves every 1-D parameter, norms and biases, undecayed on its own.)
NO_WEIGHT_DECAY = ("stages.*.shared.bias", "*.layer_scale_*", "*.rate_attn", "*.rate_conv")


class Stage(nn.Module):
    """A patch embedding, the stage's shared module (if its block type has one), blocks, end norm."""

    def __init__(
        self, embed: nn.Module, shared: nn.Module | None, blocks: list[nn.Module], out_norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.embed = embed
        self.shared = shared
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = out_norm if out_norm is not None else nn.Identity()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = _checkpointed(block, x, self.shared)
            else:
                x = block(x, self.shared)
        return self.out_norm(x)


def _checkpointed(block: nn.Module, x: torch.Tensor, shared: nn.Module | None) -> torch.Tensor:
    """``block(x, shared)`` keeping none of its activations: the backward pass runs it again.

    PyTorch's checkpoint restores the random state (DropPath draws the same masks), so the
    gradients are those of a plain run. It does not know BatchNorm: the second run would update
    the running statistics a second time, so they are put back as the first run left them."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.training and m.track_running_stats and m.running_mean is not None]  # fmt: skip
    runs = [0]

    def run(t: torch.Tensor) -> torch.Tensor:
        runs[0] += 1
        if runs[0] == 1 or not norms:
            return block(t, shared)
        kept = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]  # type: ignore[union-attr]
        try:
            return block(t, shared)
        finally:  # also when PyTorch stops the recomputation early, once it has what it needs
            with torch.no_grad():
                for m, (mean, var, count) in zip(norms, kept):
                    m.running_mean.copy_(mean)  # type: ignore[union-attr]
                    m.running_var.copy_(var)  # type: ignore[union-attr]
                    m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]

    return checkpoint(run, x, use_reentrant=False)  # type: ignore[no-any-return]


class HybridNet(nn.Module):
    """Stem -> stages -> head. Accepts any input whose side is a multiple of 32."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # modules are built in forward order (the order the parameter init draws random numbers)
        built: dict[str, list[tuple[NetworkPart, nn.Module | None]]] = {}
        for part in network_parts(cfg):
            built.setdefault(part.group, []).append((part, part.build()))
        self.stem = built.pop("stem")[0][1]
        head = built.pop("head")[0][1]
        # a Sequential (timm's feature wrappers flatten it into stages_0 ... stages_3)
        self.stages = nn.Sequential(*(_assemble_stage(members) for members in built.values()))
        self.head = head
        self.num_features: int = head.fc.in_features  # what forward_head(pre_logits=True) returns
        self.head_hidden_size: int = self.num_features
        self.feature_info: list[dict[str, Any]] = feature_info(cfg)
        self.grad_checkpointing = False
        self.apply(_init_weights)
        for module in self.modules():  # a block family's own rule replaces the default (CMT)
            if module is not self and callable(getattr(module, "init_weights", None)):
                module.init_weights()
        for module in self.modules():  # blocks with a structured init (ACmix's shift kernels)
            if hasattr(module, "_init_shift_kernels"):
                module._init_shift_kernels()

    # timm's model interface: num_classes, num_features, forward_features/forward_head,
    # get_classifier/reset_classifier (train_proxy/timm_models.py registers the models with timm)
    @property
    def num_classes(self) -> int:
        return getattr(self.head.fc, "out_features", 0)  # 0 once reset_classifier(0) removed it

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        """A new, freshly initialised classifier for ``num_classes`` (0: none, features out).
        ``global_pool`` "avg" (the only pooling) or "" (none: ``forward_head`` returns the map, which
        needs ``num_classes=0``); ``reset_other`` also drops the head's own layers before the pooling
        (CMT's 1x1 conv, BN, swish), as timm does."""
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"only average pooling ('avg') or none ('') is supported, got global_pool={global_pool!r}")
        if global_pool == "" and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0")
        if reset_other:
            self.head.pre = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[len(self.stages) - 1]["num_chs"]
        if global_pool is not None:
            self.head.pool = global_pool == "avg"
        features = self.num_features
        self.head.fc = nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            _init_weights(self.head.fc)
        self.cfg = self.cfg.replace(num_classes=max(num_classes, 1))

    # -- intermediate features (timm's features_only wrapper, detection backbones) ----------------
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of the stages ``indices`` picks (timm's rule: None all, an int the last n, a
        sequence those, negative from the end), each after its stage's end norm, as ``output_fmt``
        (NCHW or NHWC). ``norm``: every stage already ends in its own norm and the network has no
        final norm besides them, so it changes nothing (as timm's PVT v2). ``stop_early`` runs no
        stage past the last one asked for. Returns the intermediates, or (final features, them)."""
        fmt = str(getattr(output_fmt, "value", output_fmt))
        if fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be NCHW or NHWC, got {output_fmt!r}")
        take, last = _take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: last + 1]
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x.permute(0, 2, 3, 1) if fmt == "NHWC" else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` and (``prune_head``) the classifier;
        returns the indices, made absolute. Stage end norms are part of their stages: kept."""
        take, last = _take_indices(len(self.stages), indices)
        self.stages = self.stages[: last + 1]
        if prune_head or last < len(self.feature_info) - 1:
            self.reset_classifier(0, "", reset_other=True)
        return take

    # -- training: gradient checkpointing, layer decay groups, weight decay exclusions -------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups, in forward order: the stem, then per stage (coarse: one group
        each) its patch embedding with the shared position bias, each block (the stage's end norm
        with its last block); the head, matched by nothing, comes last."""
        if coarse:
            return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}
        return {
            "stem": r"^stem",
            "blocks": [
                (r"^stages\.(\d+)\.(?:embed|shared)\.", (0,)),  # (stage, 0): before the stage's blocks
                (r"^stages\.(\d+)\.blocks\.(\d+)\.", (1,)),  # (stage, block, 1)
                (r"^stages\.(\d+)\.out_norm\.", (99999,)),  # timm's MATCH_PREV_GROUP: with the last block
            ],
        }

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay (`NO_WEIGHT_DECAY`)."""
        return {name for name, _ in self.named_parameters() if any(fnmatch(name, p) for p in NO_WEIGHT_DECAY)}


def feature_info(cfg: ArchConfig) -> list[dict[str, Any]]:
    """timm's feature_info: per stage its channels, its reduction (input side / map side at any
    multiple of 32) and the module whose output it is."""
    info, reduction = [], cfg.stem.stride
    for i, stage in enumerate(cfg.stages):
        reduction *= stage.embed_stride
        info.append({"num_chs": stage.width, "reduction": reduction, "module": f"stages.{i}", "stage": i})
    return info


def _take_indices(count: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's `feature_take_indices` rule (None: all; n: the last n; a sequence: those, negative
    from the end), with a one-line error for an index out of range."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"last-n indices must be in 1..{count}, got {indices}")
        take = list(range(count - indices, count))
    else:
        take = []
        for i in indices:
            j = count + i if i < 0 else i
            if not 0 <= j < count:
                raise ValueError(f"feature index {i} is out of range for {count} stages")
            take.append(j)
    return take, max(take)


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


def _assemble_stage(members: list[tuple[NetworkPart, nn.Module | None]]) -> Stage:
    by_kind: dict[str, list[nn.Module | None]] = {}
    for part, module in members:
        by_kind.setdefault(part.kind, []).append(module)
    return Stage(
        by_kind["embed"][0],
        by_kind.get("shared", [None])[0],
        by_kind["block"],  # type: ignore[arg-type]
        by_kind.get("out_norm", [None])[0],
    )


def build_model(cfg: ArchConfig) -> HybridNet:
    """The PyTorch network a config describes (freshly initialised, as the official code does).

    It runs at any input side that is a multiple of 32, not only ``cfg.resolution`` (CMT's
    relative position bias is interpolated); under ``torch.device("meta")`` it allocates nothing.
    """
    return HybridNet(cfg)

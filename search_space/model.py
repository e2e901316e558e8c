"""`build_model(cfg)`: the network an `ArchConfig` describes."""

from __future__ import annotations

import torch
from torch import nn

from .config import ArchConfig
from .walk import NetworkPart, drop_path_schedule, network_parts  # noqa: F401  (re-exported)


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
        # modules are built in forward order (the order the parameter init draws random numbers)
        built: dict[str, list[tuple[NetworkPart, nn.Module | None]]] = {}
        for part in network_parts(cfg):
            built.setdefault(part.group, []).append((part, part.build()))
        self.stem = built.pop("stem")[0][1]
        head = built.pop("head")[0][1]
        self.stages = nn.ModuleList(_assemble_stage(members) for members in built.values())
        self.head = head
        self.num_features: int = head.fc.in_features  # what forward_head(pre_logits=True) returns
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
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for ``num_classes`` (0: none, features out)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only average pooling is supported, got global_pool={global_pool!r}")
        features = self.num_features
        self.head.fc = nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            _init_weights(self.head.fc)
        self.cfg = self.cfg.replace(num_classes=max(num_classes, 1))


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
    return HybridNet(cfg)

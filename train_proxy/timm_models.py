"""Our networks as timm models: ``import train_proxy.timm_models`` registers them with timm.

- ``timm.create_model("hybrid_nas", arch="found.yaml", num_classes=10)``: any `ArchConfig`; ``arch`` is
  a config YAML, a directory written by ``nas train --save`` (its ``config.yaml``; its
  ``model.safetensors`` is the default pretrained file and its data's mean/std the input
  normalisation), a zoo name or an `ArchConfig`.
- ``timm.create_model("hybrid_nas_cmt_s")``, one name per zoo model (``hybrid_nas_van_b0`` ...).

Weights load through timm's own mechanism: ``pretrained=True`` with
``pretrained_cfg_overlay=dict(file=".../model.safetensors")`` (or a training directory as ``arch``).
A ``num_classes`` other than the weights' drops their classifier (timm's rule), an ``in_chans``
other than 3 adapts the first convolution. Every model carries a ``pretrained_cfg`` (input size,
mean/std, interpolation, crop, classifier and first-conv names), so ``timm.data.resolve_data_config``
and timm's ``train.py`` (``--model hybrid_nas --model-kwargs arch=found.yaml``) work with it.
Training kwargs timm passes are honoured: ``drop_path_rate`` (stochastic depth maximum),
``drop_rate`` (dropout before the classifier), ``in_chans``, ``num_classes`` (0: no classifier,
pooled features out).

The rest of timm's model contract comes with the network (`search_space.model.HybridNet`):
``features_only=True`` (with ``out_indices``; ``feature_cls`` "getter" by default, or timm's
"list", "dict", "hook" wrappers), ``forward_intermediates``, ``set_grad_checkpointing``,
``group_matcher`` (``--layer-decay``) and ``no_weight_decay``; docs/backbones.md shows them in use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.models import build_model_with_cfg, register_model
from torch import nn

from search_space.config import ArchConfig
from search_space.errors import UserError
from search_space.model import HybridNet, build_model
from search_space.zoo import load_zoo, resolve_config, zoo_names

from .checkpoint import CONFIG, SETTINGS, WEIGHTS, TrainingDir
from .data import IMAGENET_MEAN, IMAGENET_STD

PREFIX = "hybrid_nas"
# features_only=True: every stage's output (out_indices picks), through timm's FeatureGetterNet,
# which calls the network's forward_intermediates and prunes the stages and head it does not need;
# feature_cls="list", "dict" or "hook" pick timm's other wrappers (the stages flattened).
FEATURE_CFG = {"out_indices": (0, 1, 2, 3), "feature_cls": "getter", "flatten_sequential": True}


def _from_config(cfg: ArchConfig, **_: Any) -> HybridNet:
    return build_model(cfg)


def _first_conv(cfg: ArchConfig) -> str:
    """Name of the first convolution (timm adapts it to another ``in_chans``)."""
    with torch.device("meta"):  # no memory, no init cost: only the module names are wanted
        model = build_model(cfg)
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def _resolve_arch(arch: str | Path | ArchConfig) -> tuple[ArchConfig, dict[str, Any]]:
    """The config, and what a training directory tells about its weights and input."""
    if isinstance(arch, ArchConfig):
        return arch, {}
    path = Path(arch)
    if path.is_dir():
        path = path / CONFIG
    if not path.exists() and str(arch) in zoo_names():
        return load_zoo(str(arch)), {}
    cfg = resolve_config(str(path))
    known: dict[str, Any] = {}
    if path.name == CONFIG and (path.parent / WEIGHTS).exists():
        known["file"] = str(path.parent / WEIGHTS)
    if path.name == CONFIG and (path.parent / SETTINGS).exists():
        try:  # what `nas train --save` recorded of the data the weights were trained on
            given = TrainingDir(path.parent).settings().get("input") or {}
        except UserError:
            given = {}  # an unreadable train.json: the weights still load, with timm's defaults
        if isinstance(given, dict):
            for key in ("mean", "std"):
                if isinstance(given.get(key), list) and len(given[key]) == 3:
                    known[key] = tuple(float(v) for v in given[key])
            if given.get("interpolation") in ("bilinear", "bicubic"):
                known["interpolation"] = given["interpolation"]
    return cfg, known


def pretrained_cfg_for(cfg: ArchConfig, **known: Any) -> dict[str, Any]:
    """timm's pretrained_cfg of ``cfg`` as built (its classes, channels and resolution)."""
    return {
        "url": "",
        "file": known.get("file"),
        "num_classes": cfg.num_classes,
        "input_size": (cfg.in_channels, cfg.resolution, cfg.resolution),
        "pool_size": (cfg.feature_sizes()[-1],) * 2,
        "crop_pct": 1.0 if cfg.resolution < 224 else 0.875,
        "interpolation": known.get("interpolation", "bicubic"),
        "mean": known.get("mean", IMAGENET_MEAN),
        "std": known.get("std", IMAGENET_STD),
        "first_conv": _first_conv(cfg),
        "classifier": "head.fc",
        "license": "apache-2.0",
    }


def create(
    variant: str,
    arch: str | Path | ArchConfig,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    drop_rate: float | None = None,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HybridNet:
    features = {k: kwargs.pop(k) for k in ("features_only", "out_indices", "feature_cls") if k in kwargs}
    if kwargs.pop("global_pool", None) not in (None, "avg"):
        raise ValueError(f"{variant}: only global_pool='avg' is supported")
    kwargs.pop("img_size", None)  # any side that is a multiple of 32 works
    builder = {k: kwargs.pop(k) for k in ("cache_dir", "pretrained_strict") if k in kwargs}  # timm's own
    if kwargs:
        raise TypeError(f"{variant}: unexpected arguments {', '.join(sorted(kwargs))}")
    try:
        cfg, known = _resolve_arch(arch)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    if pretrained_cfg is None:
        pretrained_cfg = pretrained_cfg_for(cfg, **known)
    # the weights fit `cfg` as it is; the model is built for what the caller asks
    built = cfg
    headless = num_classes == 0  # timm's "no classifier": built with one, then reset to none (pooled features out)
    if num_classes is not None and num_classes != cfg.num_classes and not headless:
        built = built.replace(num_classes=num_classes)
    if in_chans is not None and in_chans != cfg.in_channels:
        built = built.replace(in_channels=in_chans)
    if drop_path_rate is not None:
        built = built.replace(drop_path_rate=drop_path_rate)
    if drop_rate is not None:
        built = built.replace(head=built.head.__class__(built.head.kind, built.head.fc_dim, drop_rate))
    built.validate()
    model = build_model_with_cfg(
        _from_config,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        cfg=built,
        num_classes=built.num_classes,
        in_chans=built.in_channels,
        feature_cfg=dict(FEATURE_CFG),
        **features,
        **builder,
    )
    if headless and isinstance(model, HybridNet):  # (a features_only wrapper has dropped the head already)
        model.reset_classifier(0)
    return model


@register_model
def hybrid_nas(pretrained: bool = False, arch: str | Path | ArchConfig | None = None, **kwargs: Any) -> HybridNet:
    """Any architecture of the space: ``arch`` = config YAML, training directory, zoo name or ArchConfig."""
    if arch is None:
        raise ValueError("hybrid_nas needs arch=<config YAML, nas train --save directory or zoo name>")
    return create(PREFIX, arch, pretrained, **kwargs)


def _register_zoo(name: str) -> None:
    def entry(pretrained: bool = False, **kwargs: Any) -> HybridNet:
        return create(f"{PREFIX}_{name}", name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = f"{PREFIX}_{name}"
    entry.__module__ = __name__
    entry.__doc__ = f"The zoo's {name} (paper's ImageNet configuration; no published weights ship with it)."
    globals()[entry.__name__] = register_model(entry)


for _name in zoo_names():
    _register_zoo(_name)


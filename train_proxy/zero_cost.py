"""Zero-cost scores: rank an untrained architecture from one batch, as a cheap pre-filter.

Three scores, each a float where larger is predicted better; each is deterministic for a seed
(the seed draws the initial weights and the batch):

* ``synflow`` (Tanaka et al., 2020; used for NAS by Abdelfattah et al., 2021): every parameter is
  replaced by its absolute value (the network is "linearised by sign"), an all-ones input is
  passed through, and the score is ``sum |theta * dR/dtheta|`` with ``R`` the sum of the logits.
  Computed in float64 (all-positive weights make activations grow geometrically). BatchNorm is
  replaced by a per-channel division by its input's root mean square (no centring), with BN's own
  affine parameters. Why: in eval mode with fresh statistics BN is the identity, and then the
  multiplicative gates of VAN (LKA: ``x * attn(x)``) and ACmix square the all-positive signal block
  after block, so a 10-block VAN stage overflows even float64 (measured: 1e4, 1e12, 1e27, 1e54,
  1e112, 1e227, inf); BN with batch statistics would instead subtract the mean of a near-constant
  map and cancel the signal. Scale normalisation keeps BN's role (inputs to each block at unit
  scale, as LayerNorm does in CMT blocks) and leaves the flow finite. LayerNorm is kept as is.
  Dropout is off. Needs no data.
* ``naswot`` (Mellor et al., 2021): for a batch of N images, each image's binary code is the
  concatenation over all activation units of ``1[pre-activation > 0]``; the kernel
  ``K[i, j] = #units where codes i and j agree`` and the score is ``log|det K|``. The activations
  hooked are the modules ReLU, ReLU6, LeakyReLU, GELU, SiLU, Hardswish, Mish and ELU. For the smooth
  ones (GELU, SiLU, ...), which have no exact on/off region, the unit counts as "on" where its
  pre-activation is positive: that is where these functions are close to the identity (the linear
  region of a ReLU), and it reduces to the original definition for ReLU. BatchNorm uses the batch's
  statistics (train mode, as at the start of training), dropout is off, no gradients.
* ``gradnorm`` (Abdelfattah et al., 2021): the sum over parameter tensors of the L2 norm of the
  gradient of the cross-entropy loss after one forward/backward pass on a real labelled batch
  (train-mode BatchNorm, dropout off).

The batch comes from the proxy data (`train_proxy.data.load_data`, ``digits`` by default) at the
proxy resolution, and the network scored is the one the proxy trainer trains
(`train_proxy.trainer.proxy_config`: the data's classes and channels, built at the proxy
resolution where the config allows it), so scores and proxy accuracies describe the same model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_space import ArchConfig, build_model
from search_space.errors import UserError

from .data import load_data
from .latency import pinned_threads
from .proxy_defaults import FULL_WIDTH, RESOLUTION, SCORE_BATCH_SIZE
from .trainer import ProxySpec, proxy_config

PROXIES = ("synflow", "naswot", "gradnorm")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU)


# -- data -----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def score_batch(data: str, resolution: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images, labels, num_classes): ``batch_size`` training images drawn with ``seed``."""
    if batch_size < 2:
        raise UserError(f"zero-cost batch size must be >= 2, got {batch_size}")
    bundle = load_data(data, resolution)
    images, labels = bundle.train.tensors[:2]
    if len(images) < batch_size:
        raise UserError(f"data '{data}' has {len(images)} training images, fewer than the batch size {batch_size}")
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:batch_size]
    return images[pick].float().contiguous(), labels[pick].long(), bundle.num_classes


def _fresh_model(cfg: ArchConfig, seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # scoring must not move the caller's RNG
        torch.manual_seed(seed)
        model = build_model(cfg)
    return model.to(dtype)


def _train_bn_no_dropout(model: nn.Module) -> nn.Module:
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return model


# -- the scores -----------------------------------------------------------------------------


class _ScaleNorm(nn.Module):
    """Synflow's BatchNorm: per-channel division by the input's root mean square, no centring."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + self.eps)
        if self.weight is not None:
            x = x * self.weight.view(shape) + self.bias.view(shape)
        return x


def _scale_normalise_batchnorms(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, _ScaleNorm(child))


def synflow(cfg: ArchConfig, resolution: int, seed: int) -> float:
    model = _fresh_model(cfg, seed, torch.float64).eval()
    _scale_normalise_batchnorms(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.abs_()
    x = torch.ones(1, cfg.in_channels, resolution, resolution, dtype=torch.float64)
    model(x).sum().backward()
    with torch.no_grad():
        total = sum((p * p.grad).abs().sum() for p in params if p.grad is not None)
    return float(total)


def naswot(cfg: ArchConfig, images: torch.Tensor, seed: int) -> float:
    model = _train_bn_no_dropout(_fresh_model(cfg, seed))
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal kernel
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel += codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T  # agreements, on and off

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if not handles:
        raise UserError(f"naswot: '{cfg.name}' has no activation modules to read activation patterns from")
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")  # identical codes: a singular kernel


def gradnorm(cfg: ArchConfig, images: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    model = _train_bn_no_dropout(_fresh_model(cfg, seed))
    F.cross_entropy(model(images), labels).backward()
    with torch.no_grad():
        return float(sum(p.grad.norm() for p in model.parameters() if p.grad is not None))


def zero_cost_scores(
    cfg: ArchConfig,
    proxies: Sequence[str] = PROXIES,
    *,
    data: str = "digits",
    resolution: int = RESOLUTION,
    batch_size: int = SCORE_BATCH_SIZE,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, float]:
    """Several scores of one architecture, sharing one batch.

    ``threads``: pin torch's CPU threads for the call (restored afterwards); None leaves them.
    """
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown:
        raise UserError(f"unknown zero-cost proxy '{unknown[0]}' (choose from {', '.join(PROXIES)})")
    if resolution < 32 or resolution % 32:
        raise UserError(f"resolution {resolution} is not a positive multiple of 32")
    images, labels, num_classes = score_batch(data, resolution, batch_size, seed)
    # the network the proxy trainer would train: the data's classes, built at the proxy resolution
    # (the network's own widths: ProxySpec() alone would be the default proxy's half width)
    cfg = proxy_config(cfg, ProxySpec(resolution=resolution, width_multiplier=FULL_WIDTH), num_classes,
                       in_channels=images.shape[1])  # fmt: skip
    scorers: dict[str, Callable[[], float]] = {
        "synflow": lambda: synflow(cfg, resolution, seed),
        "naswot": lambda: naswot(cfg, images, seed),
        "gradnorm": lambda: gradnorm(cfg, images, labels, seed),
    }
    if threads is None:
        return {p: scorers[p]() for p in proxies}
    with pinned_threads(threads):
        return {p: scorers[p]() for p in proxies}


def zero_cost_score(
    cfg: ArchConfig,
    proxy: str,
    *,
    data: str = "digits",
    resolution: int = RESOLUTION,
    batch_size: int = SCORE_BATCH_SIZE,
    seed: int = 0,
    threads: int | None = None,
) -> float:
    """One zero-cost score of ``cfg`` (see the module docstring for the definitions)."""
    scores = zero_cost_scores(
        cfg, (proxy,), data=data, resolution=resolution, batch_size=batch_size, seed=seed, threads=threads
    )
    return scores[proxy]

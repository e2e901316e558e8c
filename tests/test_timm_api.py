"""timm's model contract on every network the space builds, tested through timm's own functions:
``timm.create_model(..., features_only=True)`` and its feature wrappers, ``timm.optim.create_optimizer_v2``
(weight decay and layer decay groups, as timm's train.py builds them), ``model.set_grad_checkpointing()``.

The expected values come from elsewhere: channels and strides from the VAN and CMT papers, feature
maps from forward hooks on a plain model, index rules from timm's ``feature_take_indices``,
gradients and BatchNorm statistics from a run without checkpointing, and the checkpointing itself
from PyTorch's saved-tensor hooks.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
from timm.models._features import feature_take_indices
from timm.optim import create_optimizer_v2

import train_proxy.timm_models  # noqa: F401  (registers the models)
from search_space import SearchSpace, analytic_cost

# Stage widths and strides of the papers: VAN-B0 (VAN, Table 1: C = 32, 64, 160, 256) and CMT-Ti
# (CMT, Table 1: C = 46, 92, 184, 368), both at strides 4, 8, 16, 32.
PAPERS = {"hybrid_nas_van_b0": [32, 64, 160, 256], "hybrid_nas_cmt_ti": [46, 92, 184, 368]}
STRIDES = [4, 8, 16, 32]


def found_cfg():
    """A network the default space produces (as a search finds one): the fewest MACs of 20 samples, at 64 px."""
    space = SearchSpace.default()
    samples = [space.sample(seed, num_classes=10).replace(resolution=64) for seed in range(20)]
    return min(samples, key=lambda cfg: analytic_cost(cfg).macs)


def images(side: int = 64, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))


def hooked_stage_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each stage's output, caught by forward hooks (PyTorch's, not our forward_intermediates)."""
    caught: list[torch.Tensor] = []
    handles = [model.get_submodule(f"stages.{i}").register_forward_hook(lambda m, a, out: caught.append(out))
               for i in range(4)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return caught


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_features_only_zoo_has_the_papers_channels_and_strides(name):
    torch.manual_seed(0)
    feats = timm.create_model(name, features_only=True).eval()
    assert feats.feature_info.channels() == PAPERS[name]
    assert feats.feature_info.reduction() == STRIDES
    assert feats.feature_info.module_name() == [f"stages.{i}" for i in range(4)]
    x = images(96)
    with torch.no_grad():
        out = feats(x)
    assert [tuple(t.shape) for t in out] == [(2, c, 96 // r, 96 // r) for c, r in zip(PAPERS[name], STRIDES)]
    torch.manual_seed(0)  # the same weights in the plain classifier: its stage outputs, caught by hooks
    plain = timm.create_model(name).eval()
    for got, want in zip(out, hooked_stage_outputs(plain, x)):
        torch.testing.assert_close(got, want)


def test_features_only_out_indices_prunes_what_is_not_needed():
    cfg = found_cfg()
    full = timm.create_model("hybrid_nas", arch=cfg)
    feats = timm.create_model("hybrid_nas", arch=cfg, features_only=True, out_indices=(0, 1))
    assert feats.feature_info.out_indices == (0, 1)
    assert feats.feature_info.channels() == [cfg.stages[0].width, cfg.stages[1].width]
    # stages 2 and 3 and the classifier are gone (timm's FeatureGetterNet prunes through the model)
    kept = {n for n, _ in feats.named_parameters()}
    assert not any(".stages.2." in n or ".stages.3." in n or ".head.fc." in n for n in kept)
    assert sum(p.numel() for p in feats.parameters()) < sum(p.numel() for p in full.parameters())
    with torch.no_grad():
        out = feats(images())
    assert [t.shape[1] for t in out] == feats.feature_info.channels()
    # negative indices count from the end, as timm's feature_take_indices does
    last = timm.create_model("hybrid_nas", arch=cfg, features_only=True, out_indices=(-1,))
    assert last.feature_info.channels() == [cfg.stages[3].width] and last.feature_info.reduction() == [32]


@pytest.mark.parametrize("feature_cls", ["getter", "list", "dict", "hook"])
def test_every_timm_feature_wrapper_gives_the_same_maps(feature_cls):
    cfg = found_cfg()
    torch.manual_seed(0)
    feats = timm.create_model("hybrid_nas", arch=cfg, features_only=True, feature_cls=feature_cls).eval()
    torch.manual_seed(0)
    plain = timm.create_model("hybrid_nas", arch=cfg).eval()
    x = images()
    with torch.no_grad():
        out = feats(x)
    out = list(out.values()) if isinstance(out, dict) else out
    for got, want in zip(out, hooked_stage_outputs(plain, x), strict=True):
        torch.testing.assert_close(got, want)


def test_forward_intermediates_follows_timms_index_rules():
    cfg = found_cfg()
    model = timm.create_model("hybrid_nas", arch=cfg).eval()
    x = images()
    stages = hooked_stage_outputs(model, x)
    with torch.no_grad():
        for indices in (None, 2, [0, 3], (-1, -3)):
            take, _ = feature_take_indices(4, indices)  # timm's own rule; maps come in forward order
            final, inter = model.forward_intermediates(x, indices=indices)
            assert len(inter) == len(take)
            for got, i in zip(inter, sorted(take)):
                torch.testing.assert_close(got, stages[i])
            torch.testing.assert_close(final, stages[3])
            torch.testing.assert_close(model.forward_head(final), model(x))
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)
        torch.testing.assert_close(nhwc[0], stages[1].permute(0, 2, 3, 1))
        early = model.forward_intermediates(x, indices=[0], stop_early=True, norm=True, intermediates_only=True)
        torch.testing.assert_close(early[0], stages[0])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


def test_forward_head_pre_logits_and_reset_classifier():
    cfg = found_cfg()
    model = timm.create_model("hybrid_nas", arch=cfg).eval()
    x = images()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.get_classifier()(pooled), model(x))
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.num_classes == 5
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, global_pool="")  # timm's "no pooling": the map itself
        assert model(x).shape[:2] == (2, model.num_features) and model(x).ndim == 4
    # timm.create_model(num_classes=0) is the same: pooled features out
    features = timm.create_model("hybrid_nas", arch=cfg, num_classes=0).eval()
    with torch.no_grad():
        assert features(x).shape == (2, features.num_features)


def _groups(model: torch.nn.Module, **kwargs) -> list[dict]:
    """timm's optimiser param groups as names: what train.py's --layer-decay / --weight-decay build."""
    names = {id(p): n for n, p in model.named_parameters()}
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, **kwargs)
    return [{**{k: v for k, v in g.items() if k != "params"}, "names": {names[id(p)] for p in g["params"]}}
            for g in opt.param_groups]  # fmt: skip


def test_layer_decay_groups_by_stage_and_block():
    from tiny_config import make_tiny_cfg

    cfg = make_tiny_cfg()  # one block per stage, a CMT stem, a linear head
    model = timm.create_model("hybrid_nas", arch=cfg)
    groups = _groups(model, layer_decay=0.5)
    scale_of = {n: g["lr_scale"] for g in groups for n in g["names"]}
    # layers: stem; per stage its embedding (+ shared position bias) and its one block (+ end norm); head:
    # 1 + 4 x 2 + 1 = 10 layers, scaled 0.5^(9 - layer)
    expected = {"stem.layers.0.weight": 0.5**9, "stages.0.embed.proj.weight": 0.5**8,
                "stages.0.blocks.0.ffn.fc1.weight": 0.5**7, "stages.1.embed.proj.weight": 0.5**6,
                "stages.1.shared.bias": 0.5**6, "stages.1.blocks.0.attn.q.weight": 0.5**5,
                "stages.2.embed.norm.weight": 0.5**4, "stages.2.blocks.0.mixer.qkv.weight": 0.5**3,
                "stages.3.embed.proj.weight": 0.5**2, "stages.3.blocks.0.ffn.project.0.weight": 0.5**1,
                "head.fc.weight": 1.0}  # fmt: skip
    for name, scale in expected.items():
        assert scale_of[name] == pytest.approx(scale), name
    assert len({g["lr_scale"] for g in groups}) == 10
    # a block's parameters share one layer; deeper blocks of a stage get larger scales
    deep = found_cfg()
    deep = deep.replace(stages=(dataclasses.replace(deep.stages[0], depth=3), *deep.stages[1:]))
    scales = {n: g["lr_scale"] for g in _groups(timm.create_model("hybrid_nas", arch=deep), layer_decay=0.9)
              for n in g["names"]}  # fmt: skip
    per_block = [{s for n, s in scales.items() if n.startswith(f"stages.0.blocks.{b}.")} for b in range(3)]
    assert all(len(s) == 1 for s in per_block)
    assert per_block[0].pop() < per_block[1].pop() < per_block[2].pop() < scales["stages.1.embed.proj.weight"]


def test_no_weight_decay_for_position_biases_layer_scales_and_mixing_rates():
    from tiny_config import make_tiny_cfg

    model = timm.create_model("hybrid_nas", arch=make_tiny_cfg())
    for kwargs in ({}, {"layer_decay": 0.75}):
        groups = _groups(model, **kwargs)
        undecayed = set().union(*(g["names"] for g in groups if g["weight_decay"] == 0.0))
        decayed = set().union(*(g["names"] for g in groups if g["weight_decay"] > 0.0))
        # CMT's relative position bias (3-D), VAN's layer scales (C x 1 x 1), ACmix's rates: no decay
        for name in ("stages.1.shared.bias", "stages.3.shared.bias", "stages.0.blocks.0.layer_scale_1",
                     "stages.0.blocks.0.layer_scale_2", "stages.2.blocks.0.mixer.rate_attn"):  # fmt: skip
            assert name in undecayed, name
        # weights of convolutions and linear layers keep it
        for name in ("stages.1.blocks.0.attn.q.weight", "stages.0.blocks.0.attn.lka.depthwise.weight", "head.fc.weight"):
            assert name in decayed, name


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, int]:
    """Gradients after one loss.backward(), and how many tensors autograd saved for the backward."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += 1
        return t

    torch.manual_seed(5)  # the same DropPath masks in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, saved[0]


@pytest.mark.parametrize("arch", ["tiny", pytest.param("hybrid_nas_cmt_ti", marks=pytest.mark.slow)])
def test_grad_checkpointing_gives_the_plain_gradients_and_statistics(arch):
    from tiny_config import make_tiny_cfg

    torch.manual_seed(0)
    if arch == "tiny":
        plain = timm.create_model("hybrid_nas", arch=make_tiny_cfg(), drop_path_rate=0.2).train()
    else:
        plain = timm.create_model(arch, drop_path_rate=0.1, num_classes=10).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()  # as timm's train.py --grad-checkpointing calls it
    x, y = images(64, 4), torch.tensor([1, 2, 3, 4])
    want, saved_plain = _train_step(plain, x, y)
    got, saved_ckpt = _train_step(ckpt, x, y)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    # the BatchNorm running statistics moved once, as in the plain run (not again in the recomputation)
    for (name, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers()):
        assert torch.equal(a, b), name
    # and the blocks really were recomputed: far fewer tensors kept for the backward pass
    assert saved_ckpt < saved_plain / 3
    ckpt.set_grad_checkpointing(False)
    assert _train_step(ckpt, x, y)[1] == saved_plain

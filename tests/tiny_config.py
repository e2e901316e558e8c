"""The small architecture the tests share (``tiny_cfg`` fixture in conftest.py)."""

from __future__ import annotations


def make_tiny_cfg():
    """A small four-stage hybrid (CMT stem, one block of each family) for fast tests."""
    from search_space import ArchConfig, HeadConfig, StageConfig, StemConfig

    return ArchConfig(
        name="tiny",
        resolution=64,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("linear", 0, 0.0),
        stages=(
            StageConfig("van", 1, 16, mlp_ratio=2.0),
            StageConfig("cmt", 1, 16, heads=2, kv_reduction=2, mlp_ratio=2.0),
            StageConfig("acmix", 1, 32, heads=2, mlp_ratio=2.0, attn_kernel=3, channel_attention="se"),
            StageConfig("cmt", 1, 32, heads=4, kv_reduction=1, mlp_ratio=2.0, channel_attention="eca"),
        ),
    )

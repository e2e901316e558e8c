"""Shared test setup: keep torch to few threads (CI has 2 cores) and small helpers."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def tiny_cfg():
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


@pytest.fixture
def cli(capsys):
    """Run the `nas` CLI in-process: returns (exit code, stdout, stderr). Usage errors exit via SystemExit."""

    def run(*argv: str, main=None):
        from nas.cli import main as nas_main

        try:
            code = (main or nas_main)([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run

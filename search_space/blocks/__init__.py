"""Block implementations (one file per block family) and the block registry."""

from .registry import BlockType, block_names, get_block, register

__all__ = ["BlockType", "block_names", "get_block", "register"]

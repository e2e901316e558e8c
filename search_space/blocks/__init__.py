"""Block implementations (one file per block family) and the block registry."""

from .registry import BlockType, block_knobs, block_names, block_types, get_block, register

__all__ = ["BlockType", "block_knobs", "block_names", "block_types", "get_block", "register"]

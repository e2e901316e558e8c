"""Block implementations (one file per block family) and the block registry."""

from .registry import BlockType, block_knobs, block_names, block_types, blocks_phrase, get_block, readers_of, register

__all__ = ["BlockType", "block_knobs", "block_names", "block_types", "blocks_phrase", "get_block", "readers_of",
           "register"]  # fmt: skip

"""Lets a block report MACs that FlopCounterMode cannot see (elementwise attention products).

Blocks call ``record`` with a count computed from the tensor shapes they actually ran on; the
traced counter sums the records made while it is active. Outside a count, ``record`` is a no-op.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

_active: list[list[int]] = []


@contextmanager
def recording() -> Iterator[list[int]]:
    box = [0]
    _active.append(box)
    try:
        yield box
    finally:
        _active.pop()


def counting() -> bool:
    """Whether a traced count is running: a block with a faster formulation than the one its MACs
    describe (ACmix's dense window attention) then runs the described one, whose products it records."""
    return bool(_active)


def record(macs: int) -> None:
    for box in _active:
        box[0] += int(macs)

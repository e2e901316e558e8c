"""Fill the latency table before a search starts its trials.

A search with a latency constraint or objective predicts the latency of every candidate it
samples (feasible or not). Entries measured lazily would be timed on the driver while trials
train on the same cores (or GPU), which both slows the trials and skews the timings. So the
search first enumerates networks that together contain every part its space can produce at the
deploy resolution and has `LatencyPredictor.prefill` time whatever the table lacks.

The enumeration asks the space itself (`SearchSpace.suggest` with a replaying chooser), so it
builds stages exactly as the sampler does. For stage i it varies every choice that shapes stage
i's parts (the family, the stem's channels for the first stage, the previous stage's width that
feeds stage i's patch embedding, every knob of stage i, the head's width for the last stage) and
takes the first value of every other choice; depths take their largest value, so that the
predictor follows a block over as many repeats as any candidate has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from search_space import ArchConfig, SearchSpace
from search_space.errors import UserError


class _Odometer:
    """A chooser that replays ``indices`` for the names ``free`` accepts and fixes every other one."""

    def __init__(self, free: Callable[[str], bool], indices: Sequence[int]) -> None:
        self.free, self.indices = free, indices
        self.taken: list[int] = []
        self.sizes: list[int] = []

    def _pick(self, name: str, values: Sequence[Any], fixed: Any) -> Any:
        if not self.free(name):
            return fixed
        k = self.indices[len(self.taken)] if len(self.taken) < len(self.indices) else 0
        self.taken.append(k)
        self.sizes.append(len(values))
        return values[k]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, list(choices), choices[0])

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        values = list(range(low, high + 1, step))
        return self._pick(name, values, values[-1])  # the deepest stage: the most repeats


def _enumerate(space: SearchSpace, free: Callable[[str], bool]) -> Iterator[ArchConfig]:
    """Every architecture over the free choices (conditional choices included), depth first."""
    indices: list[int] = []
    while True:
        chooser = _Odometer(free, indices)
        try:
            yield space.suggest(chooser)
        except UserError:
            pass  # a combination the space allows but the builder rejects: never a candidate either
        taken, sizes = chooser.taken, chooser.sizes
        j = len(taken) - 1
        while j >= 0 and taken[j] + 1 >= sizes[j]:
            j -= 1
        if j < 0:
            return
        indices = [*taken[:j], taken[j] + 1]


def covering_networks(space: SearchSpace) -> Iterator[ArchConfig]:
    """Architectures of ``space`` that together hold every part (entry) its candidates can have."""
    last = len(space.stages)
    for i in range(1, last + 1):
        shaping = {"downsampling", f"s{i - 1}.width"}
        if i == 1:
            shaping.add("stem_channels")
        if i == last:
            shaping.add("head_fc_dim")

        def free(name: str, i: int = i, shaping: set[str] = shaping) -> bool:
            return name in shaping or (name.startswith(f"s{i}.") and name != f"s{i}.depth")

        yield from _enumerate(space, free)


def warm_up(predictor: Any, space: SearchSpace, say: Callable[[str], None]) -> int:
    """Measure the entries the search can need; returns how many were measured now."""
    networks = list(covering_networks(space))
    missing = {key for cfg in networks for key in predictor.missing(cfg)}
    if not missing and predictor.overhead is not None:
        say(f"latency table: all {len(networks)} covering architectures' blocks already timed")
        return 0
    say(f"latency table: timing the blocks of the space before the trials start (at least {len(missing)} "
        f"entries, once per device; {len(predictor)} cached in {predictor.path})")  # fmt: skip
    from tqdm import tqdm

    with tqdm(total=len(missing), desc="latency table", unit="entry", leave=False, disable=None) as bar:

        def tick(n: int) -> None:
            if n > bar.total:
                bar.total = n
            bar.update(n - bar.n)

        measured = predictor.prefill(networks, on_measure=tick)
    say(f"latency table: {measured} entries measured; no block is timed during the search")
    return measured

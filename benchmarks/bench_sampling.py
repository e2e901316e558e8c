"""Sampling speed of a search space and the analytic count per sampled network.

    python benchmarks/bench_sampling.py [--space FILE] [--n 3000] [--repeats 5]

Prints the median (and best: the figure least disturbed by other load) over ``repeats`` rounds of: samples per second (``SearchSpace.sample(seed)``,
validation included) and microseconds of ``analytic_cost`` per fresh sample (cache cleared),
plus how often each ``channel_attention`` choice came up. Times are CPU time of this process
(``time.process_time``), so other load on a shared machine disturbs them less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

from search_space import SearchSpace, analytic_cost
from search_space.counting import _analytic_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", help="space YAML (default: the built-in default space)")
    parser.add_argument("--n", type=int, default=3000, help="samples per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (the median is reported)")
    args = parser.parse_args()
    space = SearchSpace.load(args.space) if args.space else SearchSpace.default()
    space.sample(0)  # warm imports and registries

    rates, costs = [], []
    for _ in range(args.repeats):
        start = time.process_time()
        configs = [space.sample(seed) for seed in range(args.n)]
        rates.append(args.n / (time.process_time() - start))
        _analytic_report.cache_clear()
        start = time.process_time()
        for cfg in configs:
            analytic_cost(cfg)
        costs.append(1e6 * (time.process_time() - start) / args.n)
    kinds = Counter(s.channel_attention for cfg in configs for s in cfg.stages)
    print(
        f"samples/s {statistics.median(rates):.0f} (best {max(rates):.0f})  "
        f"analytic cost {statistics.median(costs):.1f} us/sample (best {min(costs):.1f})"
    )
    print("channel_attention:", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()

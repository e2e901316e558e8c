"""Analytic vs traced counting: speed (median per network, ratio) and agreement.

    python benchmarks/bench_counting.py [--n 10] [--thop]

The analytic model is what sampling uses; the traced count (meta device + FlopCounterMode) is the
check. With --thop, ultralytics-thop's figures are printed alongside for reference: it also counts
norms and misses ACmix's elementwise window products, so it is a cross-check, not the convention.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from search_space import SearchSpace, analytic_cost, load_zoo, traced_cost, zoo_names
from search_space.counting import _analytic_report


def time_call(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10, help="random architectures from the default space")
    parser.add_argument("--thop", action="store_true", help="also print ultralytics-thop's counts")
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = SearchSpace.default()
    configs = [load_zoo(n) for n in zoo_names()] + [space.sample(s).replace(name=f"sample{s}") for s in range(args.n)]
    analytic_times, traced_times, ratios = [], [], []
    print(f"{'model':<10} {'MACs analytic':>14} {'MACs traced':>14} {'agree':>6} {'analytic':>10} {'traced':>9} {'ratio':>7}"
          + ("   thop MACs" if args.thop else ""))
    for cfg in configs:

        def analytic() -> None:
            _analytic_report.cache_clear()  # time the arithmetic, not the cache
            analytic_cost(cfg)

        t_a = time_call(analytic, 200)
        t_t = time_call(lambda: traced_cost(cfg), 3)
        a, t = analytic_cost(cfg), traced_cost(cfg)
        analytic_times.append(t_a)
        traced_times.append(t_t)
        ratios.append(t_t / t_a)
        line = (f"{cfg.name:<10} {a.macs / 1e9:>12.4f} G {t.macs / 1e9:>12.4f} G {str(a == t):>6} "
                f"{t_a * 1e3:>8.3f}ms {t_t:>8.3f}s {t_t / t_a:>7.0f}x")
        if args.thop:
            import thop

            model = __import__("search_space").build_model(cfg).eval()
            x = torch.randn(1, 3, cfg.resolution, cfg.resolution)
            macs, _ = thop.profile(model, inputs=(x,), verbose=False)
            line += f"   {macs / 1e9:.4f} G"
        print(line)
    print(f"\nmedian analytic {statistics.median(analytic_times) * 1e3:.3f} ms, "
          f"median traced {statistics.median(traced_times):.3f} s, "
          f"median speed ratio traced/analytic {statistics.median(ratios):.0f}x over {len(configs)} networks")


if __name__ == "__main__":
    main()

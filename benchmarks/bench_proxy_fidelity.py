"""Proxy fidelity on Fashion-MNIST: which cheap signal ranks architectures like a real training does.

    PYTHONPATH=$PWD python3 benchmarks/bench_proxy_fidelity.py --cache /tmp/fidelity-cache \
        --json docs/fidelity.json --markdown docs/fidelity-table.md

Twelve architectures of the default space, spread over the MAC range a 4 GFLOPs search ranks
(one per twelfth of the MAC quantiles of 4,000 seeded draws that fit the budget), are scored by

* the reference: one training at full width on the whole train split (48,000 images; the
  validation part of 12,000 is held out, the official test split is never read),
* training proxies (`CANDIDATES`): the search's current default and cheaper variants along the
  four knobs a proxy has (epochs, width multiplier, data fraction, resolution),
* the zero-cost scores synflow, naswot and gradnorm, and the MACs and params baselines.

Every (architecture, signal) evaluation is one task in one of two single-threaded worker
processes; its CPU-seconds are the worker's process time around the task (data decoding
excluded: each worker decodes the data once). Results go to ``--cache`` one file per task, so
an interrupted study continues where it stopped; ``--only`` limits a call to some signals.
The report gives, per signal, Kendall tau, Spearman rho and the top-3 overlap against the
reference, each with a bootstrap 90 % interval over architectures, and the mean CPU-seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from search_space import ArchConfig, SearchSpace, analytic_cost
from search_space.files import write_json_atomic
from train_proxy import proxy_defaults
from train_proxy.fidelity import bootstrap_agreement, bootstrap_tau_difference, format_with_interval, rank_agreement

DATA = "fashion-mnist"
BUDGET_MACS = 4_000_000_000
N_ARCHS = 12
DRAWS = 4000
SEED = 0
TOP_K = 3

# name (e<epochs>-w<width multiplier>-f<data fraction>[-r<resolution>]) -> (epochs, width, fraction,
# resolution). All at batch 64, the trainer's
# AdamW recipe, warm-up a fifth of the run (at most an epoch), stochastic depth off, seed 0.
REFERENCE = (1, 1.0, 1.0, 32)
# the reference trained again with other seeds (initialisation, data order, augmentation): how well
# the reference agrees with itself is the ceiling no proxy can beat (the noise ceiling)
REFERENCE_SEEDS = {"reference": SEED, "reference-seed1": 1}
CANDIDATES: dict[str, tuple[int, float, float, int]] = {
    "e3-w0.5-f0.5 (old default)": (3, 0.5, 0.5, 32),
    # a cheap base and one knob turned at a time
    "e1-w0.25-f0.1": (1, 0.25, 0.1, 32),
    "e2-w0.25-f0.1": (2, 0.25, 0.1, 32),
    "e1-w0.5-f0.1": (1, 0.5, 0.1, 32),
    "e1-w0.25-f0.25": (1, 0.25, 0.25, 32),
    "e1-w0.25-f0.1-r64": (1, 0.25, 0.1, 64),
    # candidates for the search's lowest rung (multi-fidelity): fewer images at either width
    "e1-w0.5-f0.03": (1, 0.5, 0.03, 32),
    "e1-w0.25-f0.05": (1, 0.25, 0.05, 32),
    "e1-w0.5-f0.05": (1, 0.5, 0.05, 32),
    # a candidate for a rung above the default: three times the images
    "e1-w0.5-f0.3": (1, 0.5, 0.3, 32),
}
ZERO_COST = ("synflow", "naswot", "gradnorm")
# read from a training proxy's own task at no extra training (`derived_signals`): the training
# speed estimate (TSE, Ru et al. 2021: minus the sum of the training losses; "tse-last" sums the
# last epoch only) and the accuracy on a fixed stratified share of the validation split (what a
# search rung that scores fewer validation images would have read)
VAL_SUBSETS = {"val6000": 1 / 2, "val4000": 1 / 3, "val2000": 1 / 6, "val1000": 1 / 12}
COUNTS = ("macs", "params")


# pure-family architectures, so that tau can be read within a block family as well as across:
# FAMILY_QUANTILES of the MAC distribution of the default space restricted to one block type
FAMILIES = ("van", "cmt", "acmix")
FAMILY_QUANTILES = (1 / 6, 3 / 6, 5 / 6)
FAMILY_DRAWS = 2000


def _feasible_by_macs(space: SearchSpace, draws: int) -> list[tuple[ArchConfig, int]]:
    """Distinct seeded draws of ``space`` within the budget, sorted by MACs."""
    rng = random.Random(SEED)
    feasible: dict[ArchConfig, int] = {}
    for _ in range(draws):
        cfg = space.sample(rng)
        macs = analytic_cost(cfg).macs
        if macs <= BUDGET_MACS:
            feasible.setdefault(cfg, macs)
    return sorted(feasible.items(), key=lambda item: item[1])


def choose_mixed_architectures() -> list[ArchConfig]:
    """N_ARCHS distinct architectures at evenly spaced MAC quantiles of the budget-feasible draws
    (a00-a11; the default space mixes block types, so most of them are mixed)."""
    ranked = _feasible_by_macs(SearchSpace.default(), DRAWS)
    picks = [ranked[int((i + 0.5) / N_ARCHS * len(ranked))][0] for i in range(N_ARCHS)]
    return [cfg.replace(name=f"a{i:02d}") for i, cfg in enumerate(picks)]


def choose_family_architectures() -> list[ArchConfig]:
    """Three architectures per block family (van0-2, cmt0-2, acmix0-2): the default space with every
    stage's block fixed to the family, at FAMILY_QUANTILES of its budget-feasible MACs."""
    import yaml
    from importlib import resources

    base = yaml.safe_load(resources.files("search_space").joinpath("spaces/default.yaml").read_text())
    picks = []
    for family in FAMILIES:
        data = {**base, "stages": [{**stage, "block": family} for stage in base["stages"]]}
        ranked = _feasible_by_macs(SearchSpace.from_dict(data, f"default space, {family} only"), FAMILY_DRAWS)
        picks += [ranked[int(q * len(ranked))][0].replace(name=f"{family}{i}") for i, q in enumerate(FAMILY_QUANTILES)]
    return picks


def choose_architectures() -> list[ArchConfig]:
    return [*choose_mixed_architectures(), *choose_family_architectures()]


def family(cfg_or_blocks: Any) -> str:
    """The block family of an architecture ("van", "cmt", "acmix") or "mixed"."""
    blocks = {s.block for s in cfg_or_blocks.stages} if hasattr(cfg_or_blocks, "stages") else set(cfg_or_blocks)
    return next(iter(blocks)) if len(blocks) == 1 else "mixed"


# -- one task, in a worker process ------------------------------------------------------------

_BUNDLES: dict[int, Any] = {}


def _bundle(resolution: int):
    from train_proxy.data import load_data

    if resolution not in _BUNDLES:
        _BUNDLES[resolution] = load_data(DATA, resolution)
    return _BUNDLES[resolution]


def run_task(cfg_dict: dict[str, Any], signal: str) -> dict[str, Any]:
    import torch

    from train_proxy.trainer import ProxySpec, train_proxy, warmup_epochs
    from train_proxy.zero_cost import zero_cost_scores

    torch.set_num_threads(1)
    cfg = ArchConfig.from_dict(cfg_dict)
    if signal in REFERENCE_SEEDS or signal in CANDIDATES:
        epochs, width, fraction, resolution = REFERENCE if signal in REFERENCE_SEEDS else CANDIDATES[signal]
        seed = REFERENCE_SEEDS.get(signal, SEED)
        bundle = _bundle(resolution)
        spec = ProxySpec(resolution=resolution, epochs=epochs, width_multiplier=width, data_fraction=fraction,
                         warmup_epochs=warmup_epochs(epochs), seed=seed, threads=1, device="cpu")  # fmt: skip
        start = time.process_time()
        # which validation images it got right: a validation subset is scored after the fact
        result = train_proxy(cfg, spec, bundle, keep_val_correct=True)
        cpu = time.process_time() - start
        value = result.val_acc if result.status == "ok" else None
        extra = {"status": result.status, "history": result.history, "n_train": result.n_train,
                 "n_val": result.n_val, "val_correct": result.val_correct}  # fmt: skip
    else:
        _bundle(32)  # the score batch comes from the same decoded data
        start = time.process_time()
        value = zero_cost_scores(cfg, (signal,), data=DATA, resolution=32, batch_size=32, seed=SEED, threads=1)[signal]
        cpu = time.process_time() - start
        extra = {}
    return {"arch": cfg.name, "signal": signal, "value": value, "cpu_seconds": cpu, **extra}


# -- the study --------------------------------------------------------------------------------


def cache_file(cache: Path, arch: str, signal: str) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in signal)
    return cache / f"{arch}__{safe}.json"


def run_study(cfgs: list[ArchConfig], signals: list[str], cache: Path, workers: int) -> None:
    macs = {c.name: analytic_cost(c).macs for c in cfgs}
    todo = [(c, s) for s in signals for c in cfgs if not cache_file(cache, c.name, s).exists()]
    # in the order asked; big architectures first, so the workers end together
    todo.sort(key=lambda cs: (signals.index(cs[1]), -macs[cs[0].name]))
    if not todo:
        return
    print(f"{len(todo)} tasks, {workers} workers", file=sys.stderr, flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_task, c.to_dict(), s): (c.name, s) for c, s in todo}
        for future in as_completed(futures):
            row = future.result()
            write_json_atomic(cache_file(cache, row["arch"], row["signal"]), row)
            print(f"{row['arch']} {row['signal']}: {row['value']} ({row['cpu_seconds']:.0f} CPU-s)",
                  file=sys.stderr, flush=True)  # fmt: skip


def gather(cfgs: list[ArchConfig], cache: Path) -> dict[str, Any]:
    archs = []
    for cfg in cfgs:
        cost = analytic_cost(cfg)
        row: dict[str, Any] = {"name": cfg.name, "blocks": [f"{s.block}x{s.depth}" for s in cfg.stages],
                               "widths": [s.width for s in cfg.stages], "macs": cost.macs, "params": cost.params,
                               "values": {"macs": cost.macs, "params": cost.params}, "cpu_seconds": {},
                               "config": cfg.to_dict()}  # fmt: skip
        row["family"] = family(cfg)
        for signal in [*REFERENCE_SEEDS, *CANDIDATES, *ZERO_COST]:
            path = cache_file(cache, cfg.name, signal)
            if path.exists():
                task = json.loads(path.read_text())
                row["values"][signal] = task["value"]
                row["cpu_seconds"][signal] = task["cpu_seconds"]
                for name, value in derived_signals(signal, task).items():
                    row["values"][name] = value
                    row["cpu_seconds"][name] = task["cpu_seconds"]
                if signal == "reference":
                    row["reference_history"] = task.get("history")
        archs.append(row)
    reference = [a["values"].get("reference") for a in archs]
    signals = {}
    derived = sorted({k for a in archs for k in a["values"] if " " in k})
    seeds = [s for s in REFERENCE_SEEDS if s != "reference"]
    for signal in [*seeds, *CANDIDATES, *derived, *ZERO_COST, *COUNTS]:
        rows = [(a["values"].get(signal), r, a["family"]) for a, r in zip(archs, reference)]
        rows = [(s, r, f) for s, r, f in rows if s is not None and r is not None]
        if len(rows) < 3:
            continue
        xs, ys, fams = [p[0] for p in rows], [p[1] for p in rows], [p[2] for p in rows]
        cpu = [a["cpu_seconds"][signal] for a in archs if signal in a["cpu_seconds"]]
        signals[signal] = {
            **rank_agreement(xs, ys, TOP_K),
            **bootstrap_agreement(xs, ys, TOP_K, seed=SEED),
            **family_pair_taus(xs, ys, fams),
            "cpu_seconds_mean": sum(cpu) / len(cpu) if cpu else 0.0,
        }
    ref_cpu = [a["cpu_seconds"]["reference"] for a in archs if "reference" in a["cpu_seconds"]]
    return {
        "default_proxy": default_proxy_name(),
        "paired": paired_differences(archs, [c for c in CANDIDATES if c in signals]),
        "data": DATA,
        "budget_macs": BUDGET_MACS,
        "reference": {"epochs": REFERENCE[0], "width": REFERENCE[1], "fraction": REFERENCE[2],
                      "resolution": REFERENCE[3], "cpu_seconds_mean": sum(ref_cpu) / max(1, len(ref_cpu)),
                      "cpu_seconds_total": sum(ref_cpu)},  # fmt: skip
        "candidates": {k: dict(zip(("epochs", "width", "fraction", "resolution"), v)) for k, v in CANDIDATES.items()},
        "top_k": TOP_K,
        "signals": signals,
        "architectures": archs,
    }


def pair_tau(xs: list[float], ys: list[float], pairs: list[tuple[int, int]]) -> float | None:
    """Kendall's tau-a over the given index pairs: (concordant - discordant) / pairs."""
    if not pairs:
        return None
    score = 0
    for i, j in pairs:
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        score += (dx * dy > 0) - (dx * dy < 0)
    return score / len(pairs)


def family_pair_taus(xs: list[float], ys: list[float], fams: list[str], *, resamples: int = 2000,
                     level: float = 0.9) -> dict[str, Any]:  # fmt: skip
    """Tau over the pairs of architectures of the same block family ("within": pure-VAN with
    pure-VAN, ..., mixed with mixed) and over pairs of different families ("across"), with
    percentile bootstrap intervals (architectures resampled with replacement; a pair of one
    architecture with itself is skipped). Within-family pairs ask whether a signal orders
    networks of one kind; across-family pairs whether it orders the kinds."""
    import numpy as np

    def split(index: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        within, across = [], []
        for a in range(len(index)):
            for b in range(a + 1, len(index)):
                i, j = index[a], index[b]
                if i != j:
                    (within if fams[i] == fams[j] else across).append((i, j))
        return within, across

    everyone = list(range(len(xs)))
    within, across = split(everyone)
    out: dict[str, Any] = {"tau_within": pair_tau(xs, ys, within), "tau_across": pair_tau(xs, ys, across),
                           "pairs_within": len(within), "pairs_across": len(across)}  # fmt: skip
    rng = np.random.default_rng(SEED)
    draws: dict[str, list[float]] = {"tau_within": [], "tau_across": []}
    for _ in range(resamples):
        pick = [int(k) for k in rng.integers(0, len(xs), len(xs))]
        w, c = split(pick)
        for name, pairs in (("tau_within", w), ("tau_across", c)):
            value = pair_tau(xs, ys, pairs)
            if value is not None:
                draws[name].append(value)
    tail = (1.0 - level) / 2 * 100
    for name, values in draws.items():
        low, high = np.percentile(values, [tail, 100 - tail]) if values else (None, None)
        out[f"{name}_low"], out[f"{name}_high"] = (None if low is None else float(low)), (None if high is None else float(high))
    return out


def derived_signals(signal: str, task: dict[str, Any]) -> dict[str, float]:
    """Signals read off a training task (``"<candidate> tse"``, ``"<candidate> val2000"``, ...)."""
    if signal not in CANDIDATES or task.get("status") != "ok" or not task.get("history"):
        return {}
    out: dict[str, float] = {}
    history = task["history"]
    steps = max(1, task["n_train"] // 64)  # tasks run before the trainer kept the sum: mean x steps
    sums = [h.get("train_loss_sum", h["train_loss"] * steps) for h in history]
    out[f"{signal} tse"] = -sum(sums)  # lower loss, better: minus, so that higher ranks higher
    if len(history) > 1:
        out[f"{signal} tse-last"] = -sums[-1]
    if task.get("val_correct"):
        from train_proxy.data import stratified_subset
        from train_proxy.trainer import DATA_SEED, unpack_correct

        labels = _bundle(CANDIDATES[signal][3]).val.tensors[1].numpy()
        correct = unpack_correct(task["val_correct"], task["n_val"])
        for name, share in VAL_SUBSETS.items():
            keep = stratified_subset(labels, share, DATA_SEED)  # the trainer's own val_fraction subset
            out[f"{signal} {name}"] = float(correct[keep].mean())
    return out


def default_proxy_name() -> str | None:
    """The candidate that is `nas search`'s default proxy, if it is one of them."""
    d = proxy_defaults
    wanted = (d.EPOCHS, d.WIDTH, d.DATA_FRACTION, d.RESOLUTION)
    return next((name for name, recipe in CANDIDATES.items() if recipe == wanted), None)


def paired_differences(archs: list[dict[str, Any]], proxies: list[str]) -> dict[str, dict[str, Any]]:
    """Each training proxy's tau minus the MACs, params and default proxy's taus, paired bootstrap."""
    rows = [a for a in archs if a["values"].get("reference") is not None]
    reference = [a["values"]["reference"] for a in rows]
    out: dict[str, dict[str, Any]] = {}
    baselines = [*COUNTS, default_proxy_name()]
    for proxy in proxies:
        for baseline in baselines:
            if baseline is None or baseline == proxy or any(a["values"].get(s) is None for a in rows for s in (proxy, baseline)):
                continue
            out.setdefault(proxy, {})[baseline] = bootstrap_tau_difference(
                [a["values"][proxy] for a in rows], [a["values"][baseline] for a in rows], reference, seed=SEED
            )
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| signal | n | Kendall tau [90 % CI] | tau within families | tau across families | Spearman rho [90 % CI] | "
        "top-3 overlap [90 % CI] | CPU-s / arch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sig in report["signals"].items():
        overlap = sig.get("top_k_overlap")
        ov = "-" if overlap is None else (
            f"{round(overlap * TOP_K)}/{TOP_K} [{round(sig['top_k_overlap_low'] * TOP_K)}, "
            f"{round(sig['top_k_overlap_high'] * TOP_K)}]"
        )
        lines.append(f"| {name} | {sig['n']} | {format_with_interval(sig, 'kendall_tau')} | "
                     f"{format_with_interval(sig, 'tau_within')} | {format_with_interval(sig, 'tau_across')} | "
                     f"{format_with_interval(sig, 'spearman_rho')} | {ov} | {sig['cpu_seconds_mean']:.1f} |")  # fmt: skip
    n_ref = sum(a["values"].get("reference") is not None for a in report["architectures"])
    lines.append(f"| reference (1 ep, full width, all 48k) | {n_ref} | | | | | | {report['reference']['cpu_seconds_mean']:.0f} |")
    measured = [c for c in CANDIDATES if any(a["values"].get(c) is not None for a in report["architectures"])]
    lines += ["", "| arch | blocks | widths | MACs (224 px) | params | " + " | ".join(
        ["reference", *measured]) + " |", "|---" * (5 + 1 + len(measured)) + "|"]  # fmt: skip
    for a in report["architectures"]:
        vals = [a["values"].get(s) for s in ["reference", *measured]]
        lines.append(
            f"| {a['name']} | {' '.join(a['blocks'])} | {'/'.join(map(str, a['widths']))} | {a['macs'] / 1e9:.2f} G | "
            f"{a['params'] / 1e6:.1f} M | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |"
        )
    baselines = sorted({b for diffs in report["paired"].values() for b in diffs}, key=lambda b: (b not in COUNTS, b))
    lines += ["", "| proxy | " + " | ".join(f"tau - tau({b}) [90 % CI], ahead in" for b in baselines) + " |",
              "|---" * (1 + len(baselines)) + "|"]  # fmt: skip
    for proxy, diffs in report["paired"].items():
        cells = []
        for b in baselines:
            d = diffs.get(b)
            cells.append("-" if d is None or d["difference"] is None else f"{format_with_interval(d, 'difference')}, {d['ahead']:.0%}")
        lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="folder of per-task results (created; reused to continue)")
    ap.add_argument("--only", help="comma-separated signals to run now (reference, candidate names, zero-cost)")
    ap.add_argument("--archs", help="comma-separated architecture names to run now (default: all); with "
                    "--report-only, the architectures the tables are computed over")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables from the tasks in --cache")
    ap.add_argument("--json", help="write the report's raw JSON here")
    ap.add_argument("--markdown", help="write the tables here")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    cfgs = choose_architectures()
    run_cfgs = cfgs
    if args.archs:
        wanted_archs = [a.strip() for a in args.archs.split(",")]
        run_cfgs = [c for c in cfgs if c.name in wanted_archs]
    signals = [*REFERENCE_SEEDS, *CANDIDATES, *ZERO_COST]
    if args.only:
        wanted = [s.strip() for s in args.only.split(",")]
        unknown = [s for s in wanted if s not in signals]
        if unknown:
            sys.exit(f"unknown signals {unknown}; known: {signals}")
        signals = wanted
    print(f"load average {os.getloadavg()[0]:.2f}; architectures: " + ", ".join(
        f"{c.name} {analytic_cost(c).macs / 1e9:.2f}G" for c in cfgs), file=sys.stderr, flush=True)  # fmt: skip
    if not args.report_only:
        run_study(run_cfgs, signals, cache, args.workers)
    report = gather(run_cfgs if args.report_only else cfgs, cache)
    if args.json:
        write_json_atomic(Path(args.json), report, indent=1)
    table = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)


if __name__ == "__main__":
    main()

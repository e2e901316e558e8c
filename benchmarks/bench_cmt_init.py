"""CMT's official initialisation against the one this project used before, by proxy training.

new (the product): every conv in a CMT block Kaiming-normal on fan-out = out_channels x k x k, NOT
divided by groups, and the relative position bias a standard normal, as CMT's released code.
old (patched in here, for this comparison only): the model's default rule on every conv (He on
fan-out divided by groups, so depthwise convs start ~sqrt(C) larger) and the relative position
bias truncated normal with std 0.02.

Both train the same architecture with the same proxy spec and seeds; the tables give the final
validation accuracy of each seed and the mean. Stochastic depth is off (proxy default).

    PYTHONPATH=$PWD python3 benchmarks/bench_cmt_init.py                  # cmt_ti, digits, 3 seeds
    PYTHONPATH=$PWD python3 benchmarks/bench_cmt_init.py --epochs 1 --seeds 1   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator

from torch import nn

from nas.cli_utils import old_spellings
from search_space import resolve_config
from search_space.blocks import cmt
from train_proxy import ProxySpec, load_data, train_proxy


@contextlib.contextmanager
def old_cmt_init() -> Iterator[None]:
    """The previous rule: no CMT-specific conv init, bias trunc_normal(std=0.02)."""
    block_init = cmt.CMTBlock.init_weights
    bias_init = cmt.RelativePositionBias.__init__

    def old_bias_init(self: cmt.RelativePositionBias, heads: int, size: int, reduction: int) -> None:
        bias_init(self, heads, size, reduction)
        nn.init.trunc_normal_(self.bias, std=0.02)

    cmt.CMTBlock.init_weights = lambda self: None  # type: ignore[method-assign]
    cmt.RelativePositionBias.__init__ = old_bias_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        cmt.CMTBlock.init_weights = block_init  # type: ignore[method-assign]
        cmt.RelativePositionBias.__init__ = bias_init  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cmt_ti")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--proxy-resolution", type=int, default=32)
    ap.add_argument("--proxy-width", type=float, default=0.5)
    ap.add_argument("--data-fraction", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    old_spellings(ap, {"--resolution": "--proxy-resolution", "--width-mult": "--proxy-width",
                       "--fraction": "--data-fraction"})  # the CLIs' vocabulary (docs/vocabulary.md)
    args = ap.parse_args()

    cfg = resolve_config(args.model)
    bundle = load_data(args.data, args.proxy_resolution, fraction=args.data_fraction)
    accs: dict[str, list[float]] = {"old": [], "new": []}
    for seed in range(args.seeds):
        spec = ProxySpec(resolution=args.proxy_resolution, epochs=args.epochs, width_multiplier=args.proxy_width,
                         data_fraction=args.data_fraction, seed=seed, threads=args.threads, device="cpu")  # fmt: skip
        for variant in ("old", "new"):
            with old_cmt_init() if variant == "old" else contextlib.nullcontext():
                result = train_proxy(cfg, spec, bundle)
            accs[variant].append(result.val_acc)
            print(f"seed {seed} {variant}: val_acc {result.val_acc:.4f} ({result.train_seconds:.0f} s)", flush=True)

    print(f"\n{args.model} on {bundle.summary()}, {args.epochs} epochs, width x{args.proxy_width}, "
          f"data fraction {args.data_fraction}, drop path 0")  # fmt: skip
    print("| init | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean |")
    print("|---" * (args.seeds + 2) + "|")
    for variant, label in (("old", "old (He per group, bias std 0.02)"), ("new", "new (CMT's code)")):
        row = accs[variant]
        print(f"| {label} | " + " | ".join(f"{a:.4f}" for a in row) + f" | {statistics.mean(row):.4f} |")


if __name__ == "__main__":
    main()

"""Launch timm's own ``train.py`` on our networks: ``python -m train_proxy.timm_train train.py ARGS``.

timm's ``train.py`` lives in timm's repository (github.com/huggingface/pytorch-image-models), not in
the pip package. It builds its model with ``timm.create_model``, so our networks must be registered
first (``import train_proxy.timm_models``); this launcher does that and runs the script as
``__main__`` with its arguments. ``--device auto`` is ours: cuda where PyTorch sees a GPU, else cpu
(train.py's own default, cuda, fails on a CPU machine), so one command line runs on both.
"""

from __future__ import annotations

from pathlib import Path

USAGE = "usage: python -m train_proxy.timm_train PATH/TO/train.py [train.py's arguments] (--device auto|cpu|cuda[:N])"


def resolve_device_arg(argv: list[str]) -> list[str]:
    """``--device auto`` (ours; timm's train.py knows only devices) becomes cuda where PyTorch sees a
    GPU, else cpu; train.py's own default is cuda, which fails on a CPU machine."""
    import torch

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    out = []
    for i, arg in enumerate(argv):
        if arg == "--device=auto":
            arg = f"--device={auto}"
        elif arg == "auto" and i > 0 and argv[i - 1] == "--device":
            arg = auto
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run timm's ``train.py`` (from timm's repository: it is not in the pip package) with these
    networks registered, as its ``--model hybrid_nas --model-kwargs arch=...`` needs them."""
    import runpy
    import sys

    import train_proxy.timm_models  # noqa: F401  (registers hybrid_nas and hybrid_nas_<zoo name>)

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    script = Path(args[0])
    if script.suffix != ".py" or not script.is_file():
        print(f"error: {args[0]!r} is not a Python file (timm's train.py, from github.com/huggingface/"
              f"pytorch-image-models); {USAGE}", file=sys.stderr)  # fmt: skip
        return 2
    sys.argv = [str(script), *resolve_device_arg(args[1:])]
    sys.path.insert(0, str(script.resolve().parent))  # train.py imports its neighbours as timm's scripts do
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

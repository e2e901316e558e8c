"""One training step of torchvision's FasterRCNN on our backbones, timed on the CPU.

The detector of docs/backbones.md and tests/test_detection.py: timm's ``features_only`` model under
torchvision's FeaturePyramidNetwork (64 channels), FasterRCNN with 3 classes, two synthetic
128 x 128 images with boxes. Per backbone: the median of ``--steps`` training steps (forward with
losses, backward, SGD step) after one warm-up step, wall-clock and CPU seconds of the process
(all threads: the steadier figure on a machine shared with other jobs), and the backbone's share
of the parameters.

    PYTHONPATH=$PWD python3 benchmarks/bench_detection_step.py                 # found, van_b0, cmt_ti
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import OrderedDict

import timm
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import train_proxy.timm_models  # noqa: F401  (registers the models)
from search_space import SearchSpace, analytic_cost

SIDE = 128


class Backbone(torch.nn.Module):
    def __init__(self, name: str, out_channels: int = 64, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.body = timm.create_model(name, features_only=True, **kwargs)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels, LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def found() -> dict:
    """The smallest (MACs) of 20 samples of the default space, as tests/test_timm_api.py's found_cfg."""
    space = SearchSpace.default()
    samples = [space.sample(seed, num_classes=10).replace(resolution=64) for seed in range(20)]
    return {"arch": min(samples, key=lambda cfg: analytic_cost(cfg).macs)}


def scenes() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0]]), torch.tensor([[30.0, 30.0, 100.0, 110.0], [5.0, 5.0, 40.0, 50.0]])]
    labels = [torch.tensor([1]), torch.tensor([2, 1])]
    images = [0.1 * torch.rand(3, SIDE, SIDE, generator=gen) for _ in boxes]
    return images, [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="found,van_b0,cmt_ti")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"FasterRCNN + FPN(64), 2 images of {SIDE} px, {args.threads} thread(s), median of {args.steps} steps; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        model_name, kwargs = ("hybrid_nas", found()) if name == "found" else (f"hybrid_nas_{name}", {})
        detector = FasterRCNN(Backbone(model_name, **kwargs), num_classes=3, min_size=SIDE, max_size=SIDE,
                              rpn_batch_size_per_image=64, box_batch_size_per_image=32).train()  # fmt: skip
        optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
        images, targets = scenes()
        seconds, cpu = [], []
        for i in range(args.steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            losses = detector(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            if i:  # the first is a warm-up
                seconds.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        body = sum(q.numel() for q in detector.backbone.body.parameters())
        total = sum(q.numel() for q in detector.parameters())
        print(f"{name:<8} backbone {body / 1e6:5.2f} M of {total / 1e6:5.2f} M params: "
              f"{statistics.median(seconds):.2f} s per training step ({statistics.median(cpu):.2f} CPU s); losses "
              + ", ".join(f"{k} {v.item():.3f}" for k, v in losses.items()), flush=True)


if __name__ == "__main__":
    main()

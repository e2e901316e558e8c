"""Found and zoo networks as the backbone of torchvision's detectors, on the CPU: timm's
``features_only`` model under torchvision's FeaturePyramidNetwork, in a FasterRCNN. One training
step (the four losses, finite, and gradients reaching the backbone) and one eval forward (boxes
inside the image) on a few synthetic images with boxes. ``Backbone`` is the snippet of
docs/backbones.md.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
from test_timm_api import found_cfg
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import train_proxy.timm_models  # noqa: F401  (registers the models)

SIDE = 128  # the detector resizes and pads its images to this (a multiple of 32)
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


class Backbone(torch.nn.Module):
    """A network's four stages (timm's features_only) under a feature pyramid, as torchvision's detectors take it."""

    def __init__(self, name: str, out_channels: int = 64, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.body = timm.create_model(name, features_only=True, **kwargs)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels, LastLevelMaxPool())
        self.out_channels = out_channels  # what FasterRCNN / RetinaNet read

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def scenes() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two synthetic images, each with bright rectangles where its boxes are (classes 1 and 2)."""
    gen = torch.Generator().manual_seed(0)
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0]]), torch.tensor([[30.0, 30.0, 100.0, 110.0], [5.0, 5.0, 40.0, 50.0]])]
    labels = [torch.tensor([1]), torch.tensor([2, 1])]
    images = []
    for bs in boxes:
        image = 0.1 * torch.rand(3, SIDE, SIDE, generator=gen)
        for x1, y1, x2, y2 in bs.int().tolist():
            image[:, y1:y2, x1:x2] += 0.8
        images.append(image)
    return images, [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]


@pytest.mark.parametrize("name, kwargs", [
    ("hybrid_nas", {"arch": "found"}),
    ("hybrid_nas_van_b0", {}),
    pytest.param("hybrid_nas_cmt_ti", {}, marks=pytest.mark.slow),
], ids=["found", "van_b0", "cmt_ti"])  # fmt: skip
def test_faster_rcnn_trains_and_detects_on_the_backbone(name, kwargs):
    if kwargs.get("arch") == "found":
        kwargs = {"arch": found_cfg()}
    torch.manual_seed(0)
    detector = FasterRCNN(Backbone(name, **kwargs), num_classes=3, min_size=SIDE, max_size=SIDE,
                          rpn_batch_size_per_image=64, box_batch_size_per_image=32, box_detections_per_img=20)  # fmt: skip
    images, targets = scenes()

    detector.train()
    losses = detector(images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    first_conv = detector.backbone.body.model.get_submodule(detector.backbone.body.pretrained_cfg["first_conv"])
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0  # into the backbone
    before = first_conv.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, first_conv.weight)

    detector.eval()
    with torch.no_grad():
        found = detector(images)
    assert len(found) == 2
    for out in found:
        assert set(out) == {"boxes", "labels", "scores"}
        boxes = out["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(out["scores"]) <= 20
        assert bool((boxes >= 0).all() and (boxes <= SIDE).all() and (boxes[:, 2:] >= boxes[:, :2]).all())
        assert set(out["labels"].tolist()) <= {1, 2}


def test_backbone_maps_have_the_feature_info_strides():
    """The pyramid's inputs: each stage at 1/4 ... 1/32 of the image, with the advertised channels."""
    backbone = Backbone("hybrid_nas", arch=found_cfg()).eval()
    with torch.no_grad():
        maps = backbone.body(torch.zeros(1, 3, 96, 160))  # not square: the detector pads to multiples of 32
    info = backbone.body.feature_info
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 96 // r, 160 // r) for c, r in zip(info.channels(), info.reduction())]
    with torch.no_grad():
        levels = backbone(torch.zeros(1, 3, 96, 160))
    assert list(levels) == ["0", "1", "2", "3", "pool"] and all(v.shape[1] == 64 for v in levels.values())

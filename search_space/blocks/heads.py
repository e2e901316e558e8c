"""Classifier heads: VAN's pool -> linear, CMT's 1x1 conv -> BN -> swish -> pool -> linear."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..config import HeadConfig
from ..cost import Cost


class ClassifierHead(nn.Module):
    def __init__(self, head: HeadConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if head.kind == "conv_bn_act":
            self.pre = nn.Sequential(nn.Conv2d(in_channels, head.fc_dim, 1), nn.BatchNorm2d(head.fc_dim), nn.SiLU())
            features = head.fc_dim
        else:
            self.pre = nn.Identity()
            features = in_channels
        self.dropout = nn.Dropout(head.dropout)
        self.fc = nn.Linear(features, num_classes)
        self.pool = True  # global average pooling; off (timm's global_pool="") only without a classifier

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre(x)
        x = self.dropout(x.mean((2, 3)) if self.pool else x)
        return x if pre_logits else self.fc(x)


def head_cost(head: HeadConfig, in_channels: int, last_size: int, num_classes: int) -> Cost:
    if head.kind == "conv_bn_act":
        pre = C.conv(in_channels, head.fc_dim, 1, last_size * last_size) + C.norm(head.fc_dim)
        return pre + C.linear(head.fc_dim, num_classes, 1)
    return C.linear(in_channels, num_classes, 1)

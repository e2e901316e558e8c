"""Proxy training, data loaders, latency measurement and prediction, zero-cost scores."""

from .data import DataBundle, load_data
from .trainer import ProxySpec, TrainResult, train_proxy

__all__ = ["DataBundle", "ProxySpec", "TrainResult", "load_data", "train_proxy"]

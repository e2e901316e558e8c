"""Where a model is timed: PyTorch eager, TorchScript, or ONNX Runtime.

A runtime turns an ``nn.Module`` and an example input into a zero-argument callable that runs one
forward pass the way the deployed model will run; `train_proxy.latency` times that callable with
its one protocol (warm-up, pinned threads, median and p90 of timed repeats). Nothing else differs
between runtimes, so their figures compare.

- ``torch``: eager, eval mode, ``torch.inference_mode()`` (what `nas latency` has always timed);
- ``torchscript``: ``torch.jit.trace`` in eval mode, then ``torch.jit.freeze`` (weights folded in,
  as a C++ / mobile deployment loads it);
- ``onnxruntime``: the module exported to ONNX in memory (opset 17, the exporter `nas export`
  uses) and run by an ``InferenceSession`` with all graph optimisations, ``intra_op_num_threads``
  = the thread count, one inter-op thread, sequential execution; the CPU provider, or the CUDA
  provider for a CUDA device where onnxruntime has it. Inputs are fed as NumPy arrays (on CUDA
  that includes the host-to-device copy, as a deployed service pays it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from search_space.errors import UserError

RUNTIMES = ("torch", "torchscript", "onnxruntime")
ONNX_OPSET = 17


@dataclass(frozen=True)
class Prepared:
    run: Callable[[], Any]  # one forward pass
    output: Callable[[], Any]  # one forward pass whose output is returned (for layouts and checks)


def check_runtime(runtime: str, device: torch.device | str = "cpu") -> None:
    """Refuse an unknown runtime, or one that is not installed, with one line."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if runtime == "onnxruntime":
        for package in ("onnx", "onnxruntime"):
            if importlib.util.find_spec(package) is None:
                raise UserError(f"--runtime onnxruntime needs the '{package}' package: pip install 'hybrid-nas[onnx]'")
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" not in _ort_providers():
            raise UserError("--runtime onnxruntime on CUDA needs onnxruntime-gpu (its CUDA provider is missing)")


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def prepare(runtime: str, module: nn.Module, example: torch.Tensor, device: torch.device, threads: int) -> Prepared:
    """``module`` (eval mode, on ``device``) ready to run ``example`` in ``runtime``."""
    check_runtime(runtime, device)
    module = module.to(device).eval()
    x = example.to(device)
    if runtime == "torch":
        return Prepared(lambda: module(x), lambda: module(x))
    if runtime == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: shapes are fixed per measurement
            scripted = torch.jit.freeze(torch.jit.trace(module, (x,), check_trace=False))
        return Prepared(lambda: scripted(x), lambda: scripted(x))
    session = onnx_session(module, example, device, threads)
    feed = {session.get_inputs()[0].name: example.detach().cpu().contiguous().numpy()}
    return Prepared(lambda: session.run(None, feed), lambda: torch.from_numpy(session.run(None, feed)[0]))


def onnx_session(module: nn.Module, example: torch.Tensor, device: torch.device, threads: int) -> Any:
    import onnxruntime as ort

    buffer = io.BytesIO()
    cpu_module = module.to("cpu").eval()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(cpu_module, (example.cpu().contiguous(),), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["out"])  # fmt: skip
    module.to(device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    return ort.InferenceSession(buffer.getvalue(), options, providers=[*providers, "CPUExecutionProvider"])


def _ort_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())

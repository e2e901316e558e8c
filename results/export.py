"""Exporting architectures from a run: YAML config, markdown model card, ONNX, TorchScript.

Which trials: one or more by number, the top K by proxy accuracy among complete feasible trials
(ties: fewer MACs, then the lower trial number), or by default the run's Pareto front
(`results.pareto.run_front`: the objectives the run used, as `nas search` chose its front). Only complete trials can be exported: a pruned trial's accuracy is from partial training,
an infeasible one was never trained, a duplicate points at the trial to export instead.

File names are ``trial_NNNNN[_NAME]`` with NAME the config's name reduced to ``[A-Za-z0-9_-]``
(generic names such as "sample" are dropped), and every path is checked to stay inside the
output directory, so a config named ``../../evil`` cannot write elsewhere.

ONNX goes through `torch.onnx.export` with the TorchScript-based exporter (``dynamo=False``:
the dynamo exporter needs onnxscript, which is not a dependency) at opset 17, input ``images``
(N x C x H x W, dynamic batch, height and width) and output ``logits``; TorchScript is traced.
Both follow the input size: traced, CMT's relative position bias is always resized to the map it
meets and ACmix's border reflection is an index gather valid at any size (and its coordinate
grid uses no Python branch on the size), so the graph computes what eager PyTorch computes at
any side that is a multiple of 32. (ACmix builds its coordinate grid with ``arange``, not
``linspace``, whose ONNX symbolic ignores the dtype.)

Each graph is run (onnxruntime; the reloaded TorchScript) on a random batch of 2 at three sides
(`check_resolutions`: the config's, about half of it, 64 px more) and compared with PyTorch; the
max absolute difference is reported and must stay within 1e-4, or, for deep networks whose
float32 rounding alone exceeds that, be no further from a float64 PyTorch run than twice
PyTorch's own float32 error (both figures are then reported). A graph that does not follow the
input size (a module whose work depends on the size through Python control flow, e.g. the
wavelet attention's number of levels) is exported at the config's size only, and its check line
and the card say so: ONNX declares the fixed input, TorchScript refuses other sizes with one line.
"""

from __future__ import annotations

import importlib.util
import io
import re
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from search_space import ArchConfig, analytic_cost, build_model
from search_space.errors import UserError
from search_space.files import make_output_dir, read_bytes, write_atomic

from .cards import ArtifactInfo, model_card
from .pareto import run_front
from .run import Run, TrialRecord, load_run, rank_trials
from .run_dir import refuse_run_records

FORMATS = ("yaml", "onnx", "torchscript")
ONNX_OPSET = 17
TOLERANCE = 1e-4
FLOAT64_TOLERANCE = 1e-9  # the trace in float64 against float64 PyTorch: the same function
WEIGHTS_SEED = 0
GENERIC_NAMES = {"sample", "custom", "smallest", "fewest", ""}


@dataclass
class Exported:
    trial: int
    stem: str
    config_path: Path
    card_path: Path
    params: int
    macs: int
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    onnx_max_abs_diff: float | None = None
    torchscript_max_abs_diff: float | None = None

    @property
    def checks_passed(self) -> bool:
        return all(a.details.get("ok", True) for a in self.artifacts)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    parts = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    for p in parts:
        if p not in FORMATS:
            raise UserError(f"unknown export format '{p}' (choose from {', '.join(FORMATS)})")
    if "onnx" in parts and importlib.util.find_spec("onnx") is None:
        raise UserError("--format onnx needs the 'onnx' package: pip install 'hybrid-nas[onnx]' (or onnx onnxruntime)")
    return tuple(dict.fromkeys(["yaml", *parts]))  # the config always comes along


def select_trials(run: Run, trials: Sequence[int] | None = None, top: int | None = None) -> list[TrialRecord]:
    if trials and top is not None:
        raise UserError("give either --trial or --top, not both")
    if top is not None:
        if top < 1:
            raise UserError(f"--top must be >= 1, got {top}")
        ranked = rank_trials(run.eligible(), "acc")
        if not ranked:
            raise UserError(f"{run.path}: no complete feasible trial to export yet")
        return ranked[:top]
    if trials:
        chosen = []
        for number in dict.fromkeys(trials):
            t = run.trial(number)
            _check_exportable(t)
            chosen.append(t)
        return chosen
    front = run_front(run)
    if not front:
        raise UserError(f"{run.path}: no complete feasible trial to export yet")
    return front


def _check_exportable(t: TrialRecord) -> None:
    why = {
        "pruned": "it was stopped early (pruned), so its accuracy is from partial training",
        "failed": f"its training failed ({t.failure_reason or 'no reason recorded'})",
        "infeasible": f"it violates a constraint and was never trained ({t.failure_reason or 'infeasible'})",
        "duplicate": f"it duplicates trial {t.duplicate_of}: export that one",
        "running": "it is still running",
        "waiting": "it has not started",
    }.get(t.status)
    if t.status == "pruned" and t.eligible:  # measured at a lower rung (`rung_front` may keep it)
        why = None
    if why is None and not t.eligible:
        why = f"it is not a complete feasible trial (state {t.state}, status {t.status})"
    if why:
        raise UserError(f"trial {t.number} cannot be exported: {why}")
    if t.config is None:
        raise UserError(f"trial {t.number} cannot be exported: no architecture config was recorded for it")


def safe_stem(number: int, name: str) -> str:
    cleaned = _clean_name(name)
    stem = f"trial_{number:05d}"
    if cleaned.lower() in GENERIC_NAMES or cleaned == stem:  # nas search names trial configs trial_NNNNN
        return stem
    return f"{stem}_{cleaned}"


def _inside(out: Path, filename: str) -> Path:
    path = (out / filename).resolve()
    if path.parent != out.resolve():
        raise UserError(f"refusing to write {filename!r} outside {out}")
    return path


def export_run(
    run: Run | str | Path,
    out: str | Path,
    *,
    trials: Sequence[int] | None = None,
    top: int | None = None,
    formats: str | Sequence[str] = ("yaml",),
) -> list[Exported]:
    run = run if isinstance(run, Run) else load_run(run)
    formats = parse_formats(formats)
    chosen = select_trials(run, trials, top)
    out_dir = _output_dir(out)
    return [export_trial(run, t, out_dir, formats) for t in chosen]


def export_trial(run: Run, trial: TrialRecord, out_dir: Path, formats: Sequence[str]) -> Exported:
    assert trial.config is not None
    stem = safe_stem(trial.number, trial.config.name)
    cfg = trial.config.replace(name=stem)
    cost = analytic_cost(cfg)
    config_path = _inside(out_dir, f"{stem}.yaml")
    write_atomic(config_path, cfg.to_yaml(), root=out_dir)
    card_path = _inside(out_dir, f"{stem}.md")
    result = Exported(trial.number, stem, config_path, card_path, cost.params, cost.macs)
    result.artifacts.append(ArtifactInfo("yaml", config_path))
    if "onnx" in formats or "torchscript" in formats:
        import torch

        torch.manual_seed(WEIGHTS_SEED)
        _graphs(build_model(cfg).eval(), cfg, out_dir, stem, formats, result)
    write_atomic(card_path, model_card(run, trial, cfg, result.artifacts, weights_seed=WEIGHTS_SEED), root=out_dir)
    return result


def export_trained(
    source: str | Path,
    out: str | Path,
    formats: str | Sequence[str] = ("yaml",),
    *,
    run: Run | None = None,
    trial: TrialRecord | None = None,
) -> Exported:
    """Export a network trained by ``nas train --save`` (``source``) with its weights: config,
    safetensors, card with the measured accuracies, and ONNX / TorchScript when asked. With a
    ``trial`` the trained network must be that trial's architecture (checked, names and training-only
    fields aside); the files are named after the trial."""
    import torch

    from train_proxy.checkpoint import WEIGHTS, TrainingDir, load_weights

    from .cards import trained_card

    formats = parse_formats(formats)
    trained = TrainingDir.open(source, flag="--weights" if trial is not None else "export")
    result = trained.result()
    if result is None:
        raise UserError(f"{trained.path}: the training has not finished (no result.json); "
                        f"finish it with nas train --resume {trained.path}")  # fmt: skip
    cfg = trained.built_config()
    if trial is not None:
        assert trial.config is not None
        if _architecture(trial.config) != _architecture(trained.source_config()):
            raise UserError(f"--weights {trained.path}: trained a different architecture than trial {trial.number}")
        stem = safe_stem(trial.number, trial.config.name)
    else:
        stem = _clean_name(cfg.name) or "model"
    cfg = cfg.replace(name=stem)
    out_dir = _output_dir(out)
    cost = analytic_cost(cfg)
    model = build_model(cfg)
    model.load_state_dict(load_weights(trained.path))
    model.eval()
    config_path, card_path = _inside(out_dir, f"{stem}.yaml"), _inside(out_dir, f"{stem}.md")
    write_atomic(config_path, cfg.to_yaml(), root=out_dir)
    weights_path = _inside(out_dir, f"{stem}.safetensors")
    write_atomic(weights_path, read_bytes(trained.path / WEIGHTS, "weights"), root=out_dir)
    exported = Exported(trial.number if trial is not None else -1, stem, config_path, card_path, cost.params, cost.macs)
    exported.artifacts += [ArtifactInfo("yaml", config_path), ArtifactInfo("safetensors", weights_path)]
    with torch.no_grad():
        _graphs(model, cfg, out_dir, stem, formats, exported)
    origin = f"Architecture of trial {trial.number} of run `{run.path if run else '?'}`." if trial is not None else ""
    summary = result.get("data_summary") or str(result.get("data", "-"))
    write_atomic(card_path, trained_card(cfg, result, trained.settings(), summary, exported.artifacts, origin),
                 root=out_dir)
    return exported


def _architecture(cfg: ArchConfig) -> dict:
    """What makes two configs the same network to train (name and drop-path rate aside)."""
    data = cfg.to_dict()
    data.pop("name", None)
    data.pop("drop_path_rate", None)
    return data


def _clean_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name or "")
    return re.sub(r"_+", "_", cleaned).strip("_-")[:48]


def _output_dir(out: str | Path) -> Path:
    refuse_run_records(out, "--out")  # never over a run's own cards, trials or run.json
    return make_output_dir(out, "output directory")


def _graphs(model, cfg: ArchConfig, out_dir: Path, stem: str, formats: Sequence[str], result: Exported) -> None:  # type: ignore[no-untyped-def]
    if "onnx" in formats:
        info = export_onnx(model, cfg, _inside(out_dir, f"{stem}.onnx"))
        result.onnx_max_abs_diff = info.details.get("max_abs_diff")
        result.artifacts.append(info)
    if "torchscript" in formats:
        info = export_torchscript(model, cfg, _inside(out_dir, f"{stem}.torchscript.pt"))
        result.torchscript_max_abs_diff = info.details.get("max_abs_diff")
        result.artifacts.append(info)


# -- checks at several input sizes -----------------------------------------------------------------


def check_resolutions(resolution: int) -> tuple[int, ...]:
    """The input sides an export is checked at: the config's own, about half of it and 64 px more
    (multiples of 32, at least 32; at 32 px: 32, 64 and 96)."""
    half = max(32, resolution // 2 // 32 * 32)
    return tuple(dict.fromkeys([resolution, half if half != resolution else resolution + 32, resolution + 64]))


def _example(cfg: ArchConfig, batch: int, seed: int, side: int | None = None):  # type: ignore[no-untyped-def]
    import torch

    gen = torch.Generator().manual_seed(seed)
    side = side or cfg.resolution
    return torch.randn(batch, cfg.in_channels, side, side, generator=gen)


@dataclass
class _SizeCheck:
    """One comparison of an exported graph with eager PyTorch at one input side."""

    side: int
    diff: float | None = None  # max abs difference of the logits (None: the runtime failed)
    ok: bool = False
    note: str = ""  # the runtime's error, or the float32 rounding verdict above the tolerance


def _compare(model, batch, got, side: int, exact) -> _SizeCheck:  # type: ignore[no-untyped-def]
    """``got`` (the exported graph's logits on ``batch``) against eager PyTorch: within TOLERANCE;
    or (deep float32 networks) no further from a float64 run than PyTorch's own float32; or, where a
    randomly initialised network is so ill-conditioned that any other order of float32 operations
    moves its logits by more (a change of 1e-6 in the input can move them by 1e-3), the same trace
    run in float64 agrees with float64 PyTorch (``exact(batch)``: its max abs difference)."""
    import numpy as np
    import torch

    with torch.no_grad():
        want = model(batch).numpy()
    got = np.asarray(got)
    if got.shape != want.shape:
        return _SizeCheck(side, None, False, f"output shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}")
    diff = float(np.abs(got - want).max())
    if diff <= TOLERANCE:
        return _SizeCheck(side, diff, True)
    noise, error = _float32_noise(model, batch, got)
    if error <= max(TOLERANCE, 2 * noise):
        return _SizeCheck(side, diff, True, f"against float64 PyTorch off by {error:.2e}, PyTorch float32 itself by "
                                            f"{noise:.2e}: float32 rounding, accepted")  # fmt: skip
    in64 = exact(batch)
    ok = in64 is not None and in64 <= FLOAT64_TOLERANCE
    note = (f"against float64 PyTorch off by {error:.2e}, PyTorch float32 itself by {noise:.2e}; the same trace in "
            f"float64 " + (f"agrees with float64 PyTorch to {in64:.1e}: float32 rounding of an ill-conditioned "
                           "network, accepted" if ok else
                           (f"is off by {in64:.1e}" if in64 is not None else "fails") + ": the export is wrong"))
    return _SizeCheck(side, diff, ok, note)


_FLOAT64_TRACES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> [(float64 copy, its trace)]


def _float64_trace(model, cfg: ArchConfig):  # type: ignore[no-untyped-def]
    """``batch -> max abs difference`` between the network traced in float64 (as the export traces it,
    at the config's size) and float64 eager PyTorch; None when the trace fails there. Traced once per
    model (the ONNX and TorchScript checks share it), when first asked."""
    import copy

    import torch

    traced: list = _FLOAT64_TRACES.setdefault(model, [])

    def exact(batch) -> float | None:  # type: ignore[no-untyped-def]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not traced:
                double = copy.deepcopy(model).double()
                traced.append((double, torch.jit.trace(double, _example(cfg, 1, seed=0).double(), check_trace=False)))
            double, graph = traced[0]
            try:
                return float((graph(batch.double()) - double(batch.double())).abs().max())
            except Exception:
                return None

    return exact


def _run_at_sizes(run, model, cfg: ArchConfig, sides: Sequence[int]) -> list[_SizeCheck]:  # type: ignore[no-untyped-def]
    """``run(batch) -> logits`` of an exported graph against PyTorch on a random batch of 2 per side."""
    checks, exact = [], _float64_trace(model, cfg)
    for side in sides:
        batch = _example(cfg, 2, seed=1, side=side)
        try:
            got = run(batch)
        except Exception as exc:  # the runtime refuses the size (a graph fixed at trace time)
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            checks.append(_SizeCheck(side, None, False, f"fails ({type(exc).__name__}: {lines[-1][:160] if lines else ''})"))
            continue
        checks.append(_compare(model, batch, got, side, exact))
    return checks


def _size_verdict(kind: str, checks: Sequence[_SizeCheck], dynamic: bool, why_fixed: str, cfg: ArchConfig) -> dict:
    """The details an artifact records: input shape, the sides checked, the worst difference, ok,
    and the one-line ``check`` `nas export` prints and the card shows."""
    side = cfg.resolution
    diffs = [c.diff for c in checks if c.diff is not None]
    sides = ", ".join(str(c.side) for c in checks)
    details: dict = {
        "dynamic_size": dynamic,
        "checked_sides": [c.side for c in checks],
        "max_abs_diff": max(diffs) if diffs else None,
        "max_abs_diff_by_side": {str(c.side): c.diff for c in checks},
        "ok": all(c.ok for c in checks),
    }
    if dynamic:
        details["input_shape"] = f"N x {cfg.in_channels} x H x W (H, W any multiple of 32; checked at {sides} px)"
    else:
        details["fixed_size"] = side
        details["input_shape"] = f"N x {cfg.in_channels} x {side} x {side} only"
    worst = f"{details['max_abs_diff']:.2e}" if diffs else "-"
    if diffs and max(diffs) <= TOLERANCE:
        within = f"within the {TOLERANCE:g} tolerance"
    else:
        within = f"above the {TOLERANCE:g} tolerance: " + ("float32 rounding, as below" if details["ok"] else "WRONG")
    line = f"{kind} vs PyTorch on random batches of 2 at {sides} px: max abs difference {worst} ({within})"
    notes = "; ".join(f"at {c.side} px {c.note}" for c in checks if c.note)
    if not details["ok"]:
        prefix = "does NOT match PyTorch"
    else:
        prefix = "follows the input size" if dynamic else f"fixed at {side} x {side} px ({why_fixed})"
    details["check"] = f"{prefix}; {line}" + (f"; {notes}" if notes else "")
    return details


def _follows(checks: Sequence[_SizeCheck]) -> tuple[bool, str]:
    """Whether a graph follows the input size: right at every side checked, or, right at the
    config's own side (the first) and wrong at another, why it is to be fixed. A graph wrong at its
    own side is kept as it is: its checks say it is wrong."""
    bad = next((c for c in checks if not c.ok), None)
    if bad is None or not checks[0].ok:
        return True, ""
    what = bad.note if bad.diff is None else f"differs from PyTorch by {bad.diff:.2e}"
    return False, f"the graph traced at one size does not follow another: at {bad.side} px it {what}"


# -- ONNX ------------------------------------------------------------------------------------------


def _onnx_graph(model, cfg: ArchConfig, opset: int, dynamic: bool) -> bytes:  # type: ignore[no-untyped-def]
    import onnx
    import torch

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the size checks judge the graph
        torch.onnx.export(model, (_example(cfg, 1, seed=0),), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": axes, "logits": {0: "batch"}})  # fmt: skip
    graph = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(graph))
    return graph


def export_onnx(model, cfg: ArchConfig, path: Path, opset: int = ONNX_OPSET) -> ArtifactInfo:  # type: ignore[no-untyped-def]
    """ONNX with dynamic batch, height and width, checked by onnxruntime against PyTorch at
    `check_resolutions`. A graph that does not follow the input size there is exported again at
    the config's size only (the input declares it, so onnxruntime refuses others), and says so."""
    details: dict = {"opset": opset, "input": "images", "output": "logits"}
    if importlib.util.find_spec("onnxruntime") is None:
        write_atomic(path, _onnx_graph(model, cfg, opset, dynamic=False))
        details.update(fixed_size=cfg.resolution, dynamic_size=False,
                       input_shape=f"N x {cfg.in_channels} x {cfg.resolution} x {cfg.resolution} only",
                       check=f"fixed at {cfg.resolution} x {cfg.resolution} px (onnxruntime is not installed to check "
                             "other sizes); not checked against PyTorch")  # fmt: skip
        return ArtifactInfo("onnx", path, details)
    import onnxruntime as ort

    def runner(graph: bytes):  # type: ignore[no-untyped-def]
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a size the graph refuses is a finding of the check, not a log line
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(["logits"], {"images": batch.numpy()})[0]

    kind = f"onnxruntime {ort.__version__}"
    graph = _onnx_graph(model, cfg, opset, dynamic=True)
    checks = _run_at_sizes(runner(graph), model, cfg, check_resolutions(cfg.resolution))
    dynamic, why = _follows(checks)
    if not dynamic:
        graph = _onnx_graph(model, cfg, opset, dynamic=False)
        checks = _run_at_sizes(runner(graph), model, cfg, [cfg.resolution])
    write_atomic(path, graph)  # through the guarded writer, whole or not at all
    details.update(_size_verdict(kind, checks, dynamic, why, cfg))
    return ArtifactInfo("onnx", path, details)


def _float32_noise(model, batch, onnx_out) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(|PyTorch float32 - float64|, |ONNX - PyTorch float64|), max over the outputs."""
    import copy

    import torch

    with torch.no_grad():
        want32 = model(batch).double()
        want64 = copy.deepcopy(model).double()(batch.double())
    noise = float((want32 - want64).abs().max())
    onnx_error = float((torch.as_tensor(onnx_out).double() - want64).abs().max())
    return noise, onnx_error


# -- TorchScript -----------------------------------------------------------------------------------


def export_torchscript(model, cfg: ArchConfig, path: Path) -> ArtifactInfo:  # type: ignore[no-untyped-def]
    """Traced TorchScript (torch.jit is deprecated in recent PyTorch but still the format that
    loads in C++ / LibTorch without Python), checked against PyTorch at `check_resolutions` after
    reloading. A trace that does not follow the input size there is saved behind a scripted guard
    that refuses other sizes with one line, and says so."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(cfg, 1, seed=0), check_trace=False)
        graph = _torchscript_bytes(traced)
        checks = _run_at_sizes(_torchscript_runner(graph), model, cfg, check_resolutions(cfg.resolution))
        dynamic, why = _follows(checks)
        if not dynamic:
            graph = _torchscript_bytes(_fixed_size(traced, cfg.resolution))
            checks = _run_at_sizes(_torchscript_runner(graph), model, cfg, [cfg.resolution])
    write_atomic(path, graph)  # through the guarded writer, whole or not at all
    details = _size_verdict("reloaded", checks, dynamic, why, cfg)
    return ArtifactInfo("torchscript", path, details)


def _torchscript_bytes(module) -> bytes:  # type: ignore[no-untyped-def]
    import torch

    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def _torchscript_runner(graph: bytes):  # type: ignore[no-untyped-def]
    import torch

    loaded = torch.jit.load(io.BytesIO(graph))
    return lambda batch: loaded(batch).numpy()


def _fixed_size(traced, side: int):  # type: ignore[no-untyped-def]
    """The trace behind a check of the input side (a trace run at another size would be wrong or fail deep inside)."""
    import torch
    from torch import nn

    class FixedSize(nn.Module):
        def __init__(self, model: nn.Module, side: int, message: str) -> None:
            super().__init__()
            self.model = model
            self.side = side
            self.message = message

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2] != self.side or x.shape[-1] != self.side:
                raise RuntimeError(self.message)
            return self.model(x)

    message = f"this TorchScript export takes {side} x {side} inputs only (its graph does not follow the input size)"
    return torch.jit.script(FixedSize(traced, side, message))

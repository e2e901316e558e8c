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
(N x C x H x W at the deploy resolution, dynamic batch) and output ``logits``. (ACmix builds its
coordinate grid with ``arange``, not ``linspace``, whose ONNX symbolic ignores the dtype.) With onnxruntime installed the file is run on a batch of 2 and compared with
PyTorch; the max absolute difference is reported and must stay within 1e-4, or, for deep networks
whose float32 rounding alone exceeds that, be no further from a float64 PyTorch run than twice
PyTorch's own float32 error (both figures are then reported).
"""

from __future__ import annotations

import importlib.util
import io
import re
import warnings
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


# -- ONNX ------------------------------------------------------------------------------------------


def _example(cfg: ArchConfig, batch: int, seed: int):  # type: ignore[no-untyped-def]
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_channels, cfg.resolution, cfg.resolution, generator=gen)


def export_onnx(model, cfg: ArchConfig, path: Path, opset: int = ONNX_OPSET) -> ArtifactInfo:  # type: ignore[no-untyped-def]
    import torch

    example = _example(cfg, 1, seed=0)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: shapes are fixed per export
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    details: dict = {"opset": opset, "input": "images", "output": "logits",
                     "input_shape": f"N x {cfg.in_channels} x {cfg.resolution} x {cfg.resolution}"}  # fmt: skip
    import onnx

    graph = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(graph))
    write_atomic(path, graph)  # through the guarded writer, whole or not at all
    if importlib.util.find_spec("onnxruntime") is None:
        details["check"] = "not checked against PyTorch (onnxruntime is not installed)"
        return ArtifactInfo("onnx", path, details)
    import onnxruntime as ort

    batch = _example(cfg, 2, seed=1)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": batch.numpy()})[0]
    with torch.no_grad():
        want = model(batch).numpy()
    diff = float(abs(got - want).max())
    details["max_abs_diff"] = diff
    details["check"] = f"onnxruntime {ort.__version__} vs PyTorch on a random batch of 2: max abs difference {diff:.2e}"
    if diff <= TOLERANCE:
        details["ok"] = True
        details["check"] += f" (within the {TOLERANCE:g} tolerance)"
        return ArtifactInfo("onnx", path, details)
    # Deep float32 networks can differ by more than 1e-4 from rounding alone: measure PyTorch's own
    # float32 error against float64 and accept ONNX when it is no further from float64 than that.
    noise, onnx_error = _float32_noise(model, batch, got)
    details["ok"] = onnx_error <= max(TOLERANCE, 2 * noise)
    details["float32_noise"] = noise
    details["check"] += (
        f", above the {TOLERANCE:g} tolerance; against a float64 PyTorch run, ONNX is off by {onnx_error:.2e} and "
        f"PyTorch float32 itself by {noise:.2e}: "
        + ("float32 rounding, accepted" if details["ok"] else "EXCEEDS float32 rounding, the export is wrong")
    )
    return ArtifactInfo("onnx", path, details)


def _float32_noise(model, batch, onnx_out) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(|PyTorch float32 - float64|, |ONNX - PyTorch float64|), max over the outputs."""
    import copy

    import torch

    with torch.no_grad():
        want32 = model(batch).double()
        want64 = copy.deepcopy(model).double()(batch.double())
    noise = float((want32 - want64).abs().max())
    onnx_error = float((torch.from_numpy(onnx_out).double() - want64).abs().max())
    return noise, onnx_error


# -- TorchScript -----------------------------------------------------------------------------------


def export_torchscript(model, cfg: ArchConfig, path: Path) -> ArtifactInfo:  # type: ignore[no-untyped-def]
    """Traced TorchScript (torch.jit is deprecated in recent PyTorch but still the format that
    loads in C++ / LibTorch without Python)."""
    import torch

    example = _example(cfg, 1, seed=0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        write_atomic(path, buffer.getvalue())  # through the guarded writer, whole or not at all
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
        batch = _example(cfg, 2, seed=1)
        diff = float((loaded(batch) - model(batch)).abs().max())
    verdict = "within" if diff <= TOLERANCE else "EXCEEDS"
    return ArtifactInfo("torchscript", path, {
        "input_shape": f"N x {cfg.in_channels} x {cfg.resolution} x {cfg.resolution}",
        "max_abs_diff": diff,
        "ok": diff <= TOLERANCE,
        "check": f"reloaded and compared with PyTorch on a random batch of 2: max abs difference {diff:.2e} "
                 f"({verdict} the {TOLERANCE:g} tolerance)",
    })  # fmt: skip

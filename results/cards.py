"""Markdown model cards for architectures exported from a search run.

A card says what the architecture is (per-stage summary, params and MACs at the deploy
resolution, recounted analytically), how it was found (proxy accuracy and its settings, the
search settings and seed), what was measured (latency with device and batch when the run
recorded it), which files come with it, and how to rebuild it.

Names, paths, commands and recorded values are the user's: they go into a card through
`search_space.text` (`markdown`, `markdown_code`, `python_str` here), so a newline or a terminal
escape in a config name or a directory name cannot add a section, break a table or a code span.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from search_space import ArchConfig, Cost, analytic_report
from search_space.blocks import blocks_phrase, get_block
from search_space.errors import UserError
from search_space.text import markdown, markdown_code, printable
from search_space.units import format_count, format_macs, format_ms, format_seconds

from .run import Run, TrialRecord
from .run_dir import RunDir

# latency details a search may record next to latency_ms_measured (shown when present)
LATENCY_DETAIL_ATTRS = (
    ("latency_device", "device"),
    ("latency_batch_size", "batch size"),
    ("latency_threads", "threads"),
    ("latency_resolution", "resolution"),
    ("latency_p90_ms", "p90 (ms)"),
    ("latency_repeats", "repeats"),
    ("latency_runtime", "runtime"),
)


SEARCH_LATENCY_BATCH = 1  # how `nas search` re-measures its Pareto front (nas/search/pareto.py)
SEARCH_LATENCY_THREADS = 1


@dataclass
class ArtifactInfo:
    """One exported file and how it was checked."""

    kind: str  # "yaml", "card", "onnx", "torchscript"
    path: Path
    details: dict[str, Any] = field(default_factory=dict)


def stage_table(cfg: ArchConfig) -> str:
    """The per-stage table of every card: each part's shape, its block's own cells
    (`BlockType.summary`: heads, K/V reduction, kernels; "-" where the block has none), params, MACs."""
    parts = dict(analytic_report(cfg).parts)
    lines = [
        "| part | block | depth | width | feature map | heads | MLP ratio | K/V reduction | kernels | channel attn. "
        "| params | MACs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    stem_desc = "none (patch embed reads the image)"
    if cfg.stem.kind != "none":
        stem_desc = f"{markdown(cfg.stem.kind)}, {cfg.stem.channels} ch"
    lines.append(f"| stem | {stem_desc} | | | | | | | | | {_cost_cells(parts['stem'])} |")
    for i, (stage, size) in enumerate(zip(cfg.stages, cfg.feature_sizes())):
        summary = get_block(stage.block).summary(stage)
        heads, kv, kernels = (markdown(summary.get(column, "-")) for column in ("heads", "kv_reduction", "kernels"))
        lines.append(
            f"| stage {i + 1} | {markdown(stage.block)} | {stage.depth} | {stage.width} | {size}x{size} | {heads} | "
            f"{stage.mlp_ratio:g} | {kv} | {kernels} | {markdown(stage.channel_attention)} | "
            f"{_cost_cells(parts[f'stage{i + 1}'])} |"
        )
    head_desc = f"{markdown(cfg.head.kind)}" + (f", fc_dim {cfg.head.fc_dim}" if cfg.head.kind == "conv_bn_act" else "")
    lines.append(f"| head | {head_desc} -> {cfg.num_classes} classes | | | | | | | | | {_cost_cells(parts['head'])} |")
    return "\n".join(lines)


def _cost_cells(cost: Cost) -> str:
    return f"{format_count(cost.params)} | {format_macs(cost.macs)}"


def model_card(
    run: Run,
    trial: TrialRecord,
    cfg: ArchConfig,
    artifacts: Sequence[ArtifactInfo],
    *,
    weights_seed: int,
) -> str:
    """The markdown card of an architecture a search found.

    Args:
        run: the search run it comes from (its settings, command and versions are quoted).
        trial: the run's trial that sampled it (proxy accuracy, latency, sampler choices).
        cfg: the architecture as exported (the deploy resolution and classes); counts are redone on it.
        artifacts: the files exported with it, listed under "Files".
        weights_seed: the torch seed of the freshly initialised weights the graphs carry.
    """
    total = analytic_report(cfg).total
    yaml_file = next((a.path.name for a in artifacts if a.kind == "yaml"), "CONFIG.yaml")
    out = _card_intro(run, trial, cfg)
    out += _summary_section(cfg, total, trial)
    out += ["", "## Architecture", "", stage_table(cfg), ""]
    out += _latency_section(run, trial, cfg)
    out += _proxy_section(trial)
    out += _search_section(run, trial)
    out += files_section(artifacts, f"freshly initialised weights (torch seed {weights_seed}): train the model "
                         "before using them for predictions")  # fmt: skip
    out += _rebuild_section(yaml_file, total)
    return "\n".join(out)


def _card_intro(run: Run, trial: TrialRecord, cfg: ArchConfig) -> list[str]:
    """Title and where the architecture comes from, naming the block families it uses and those its
    search space offered (from the registry: their labels, not a fixed list)."""
    offered = space_blocks(run)
    space = f"a search space of {blocks_phrase(offered)} blocks" if offered else "the run's search space"
    return [
        f"# {markdown(cfg.name)}",
        "",
        f"Architecture found by `nas search` in run {markdown_code(run.path)} (trial {trial.number}, status "
        f"{markdown(trial.status)}). A point of {markdown(space)}; it uses {markdown(blocks_used(cfg))}. "
        "The config describes the network; no trained weights come with it.",
    ]


def blocks_used(cfg: ArchConfig) -> str:
    """Which block family each stage uses, in prose: ``"VAN in stages 1-2 and CMT in stages 3-4"``."""
    stages: dict[str, list[int]] = {}
    for i, stage in enumerate(cfg.stages):
        stages.setdefault(stage.block, []).append(i + 1)
    parts = [f"{blocks_phrase([block])} in {_stage_numbers(numbers)}" for block, numbers in stages.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _stage_numbers(numbers: Sequence[int]) -> str:
    if len(numbers) == 1:
        return f"stage {numbers[0]}"
    if list(numbers) == list(range(numbers[0], numbers[-1] + 1)):
        return f"stages {numbers[0]}-{numbers[-1]}"
    return "stages " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def space_blocks(run: Run) -> list[str]:
    """The block types the run's search space (its copy, RUN/space.yaml) offers; [] if unreadable."""
    from search_space import SearchSpace

    try:
        space = SearchSpace.load(RunDir(run.path).space_yaml)
    except (UserError, OSError, ValueError):
        return []
    return sorted({block for knobs in space.stages for block in knobs["block"].values()})


def _summary_section(cfg: ArchConfig, total: Cost, trial: TrialRecord | None = None) -> list[str]:
    """Input, classes, params and MACs recounted now (and what the search recorded, if different)."""
    out = ["", "## Summary", "", "| | |", "|---|---|"]
    out.append(f"| input | {cfg.in_channels} x {cfg.resolution} x {cfg.resolution} (deploy resolution) |")
    out.append(f"| classes | {cfg.num_classes} |")
    out.append(f"| params | {total.params:,} ({format_count(total.params)}) |")
    out.append(f"| MACs (\"FLOPs\") | {total.macs:,} ({format_macs(total.macs)}) at {cfg.resolution} px |")
    recorded = []
    if trial is not None and trial.macs is not None and trial.macs != total.macs:
        recorded.append(f"MACs {trial.macs:,}")
    if trial is not None and trial.params is not None and trial.params != total.params:
        recorded.append(f"params {trial.params:,}")
    if recorded:
        out.append(f"| note | the search recorded {', '.join(recorded)}; the counts above are recomputed now |")
    out += ["", "MACs are multiply-accumulates of convolutions, linear layers and attention products (the VAN/CMT "
            "papers' \"FLOPs\"), counted analytically by `search_space.analytic_cost`."]  # fmt: skip
    return out


def _latency_section(run: Run, trial: TrialRecord, cfg: ArchConfig) -> list[str]:
    """The measured latency with its conditions, and the predicted one with its table."""
    s = run.settings
    out = ["## Latency", ""]
    if trial.latency_ms_measured is not None:
        details = [f"{format_ms(trial.latency_ms_measured)} measured (median)"]
        attrs = trial.user_attrs
        details += [f"{label} {markdown(attrs[key])}" for key, label in LATENCY_DETAIL_ATTRS if key in attrs]
        if not any(key in attrs for key, _ in LATENCY_DETAIL_ATTRS):
            # `nas search` re-measures its front on its latency device at batch 1 with one thread
            # (nas/search/pareto.py) and records only the median
            details.append(f"runtime torch (eager), device {markdown(s.device)}, batch size {SEARCH_LATENCY_BATCH}, "
                           f"{SEARCH_LATENCY_THREADS} thread, {cfg.resolution} px (nas search's re-measurement of its "
                           "front)")  # fmt: skip
        out.append("- " + ", ".join(details))
    else:
        out.append("- measured: not recorded (the search re-measures latency only for its final Pareto front "
                   "when latency is constrained or an objective)")  # fmt: skip
    predicted = format_ms(trial.latency_ms_predicted)
    if trial.latency_ms_predicted is not None and s.latency_table:
        out.append(f"- predicted by the target's lookup table {markdown_code(s.latency_table)} (built there with "
                   f"nas latency-table build; runtime, device, threads and batch are recorded in it): {predicted}")  # fmt: skip
    elif trial.latency_ms_predicted is not None:
        out.append(f"- predicted by the per-block lookup table: {predicted} on {markdown(s.device)} "
                   "(PyTorch eager, batch 1, one thread)")  # fmt: skip
    return out + [""]


def _proxy_section(trial: TrialRecord) -> list[str]:
    """The proxy accuracy and how the proxy was trained."""
    f = trial.fidelity
    width = f"width x{f.width:g} of the deploy widths" if f.width is not None else "width not recorded"
    return [
        "## Proxy accuracy",
        "",
        f"- validation accuracy: {_opt(trial.val_acc, '{:.4f}')}, measured at {f.describe()}"
        + ("" if f.full or f.rung is None else " (stopped there by ASHA: not comparable with top-rung accuracies)"),
        f"- proxy at that rung: {f.epochs_trained or '-'} of {f.epochs or '-'} epochs at {f.resolution or '-'} px, {width}, "
        f"batch {f.batch_size or '-'}, data {markdown_code(f.data)} (fraction {_opt(f.data_fraction, '{:.3g}')}, "
        f"validation share {_opt(f.val_fraction, '{:.3g}')}), training seed {f.seed}, "
        f"{format_seconds(trial.train_seconds)} of training over all its rungs",
        "- a proxy accuracy ranks architectures; it is not the accuracy of the deploy model after a full "
        "training run",
        "",
    ]  # fmt: skip


def _search_section(run: Run, trial: TrialRecord) -> list[str]:
    """The run, its command, constraints, objectives and versions, and the trial's sampler choices."""
    s = run.settings
    out = ["## Search", ""]
    out.append(f"- run: {markdown_code(run.path)} ({markdown(run.display_status)}), trial {trial.number}")
    out.append(f"- command: {markdown_code(' '.join(run.command) or '-')}")
    out.append(f"- budget: {format_macs(s.budget_macs) if s.budget_macs else '-'} MACs; params limit: "
               f"{format_count(s.max_params) if s.max_params else '-'}; latency limit: "
               f"{f'{format_ms(s.latency_ms)} on {markdown(s.device)}' if s.latency_ms else '-'}")  # fmt: skip
    out.append(markdown(f"- objectives: {', '.join(s.objectives)}; sampler: {s.sampler}; seed: {s.seed}; trials "
                        f"requested: {s.trials}; concurrency: {s.concurrency}; space: {s.space}"))  # fmt: skip
    if trial.choices:
        out.append(f"- sampler choices: {markdown_code(', '.join(f'{k}={v}' for k, v in sorted(trial.choices.items())))}")
    if run.versions:
        out.append(markdown(f"- versions: {', '.join(f'{k} {v}' for k, v in run.versions.items())}"))
    return out + [""]


def _rebuild_section(yaml_file: str, total: Cost) -> list[str]:
    """How to rebuild and recount the model from its config."""
    return ["## Rebuild", "", "```python", "from search_space import ArchConfig, analytic_cost, build_model", "",
            f"cfg = ArchConfig.load({python_str(yaml_file)})",
            "model = build_model(cfg)  # NCHW input, any side that is a multiple of 32; logits out",
            f"assert analytic_cost(cfg) == ({total.params}, {total.macs})  # (params, MACs)", "```", "",
            f"or from the command line: {markdown_code(f'nas profile {yaml_file}')} (params and MACs), "
            f"{markdown_code(f'nas train {yaml_file}')} (proxy training).", ""]  # fmt: skip


def files_section(artifacts: Sequence[ArtifactInfo], weights: str) -> list[str]:
    """The card's list of exported files and how each was checked; ``weights`` says what the graphs carry."""
    out = ["## Files", ""]
    for a in artifacts:
        if a.kind == "yaml":
            out.append(f"- {markdown_code(a.path.name)}: the model config (YAML, `ArchConfig`)")
        elif a.kind == "safetensors":
            out.append(f"- {markdown_code(a.path.name)}: the trained weights (safetensors; "
                       "`model.load_state_dict(load_file(...))`)")  # fmt: skip
        elif a.kind == "onnx":
            d = a.details
            check = markdown(d.get("check", "not checked"))
            out.append(f"- {markdown_code(a.path.name)}: ONNX, opset {markdown(d.get('opset'))}, input "
                       f"{markdown_code(d.get('input'))} {markdown(d.get('input_shape'))} (dynamic batch), output "
                       f"{markdown_code(d.get('output'))}; {check}")  # fmt: skip
        elif a.kind == "torchscript":
            d = a.details
            out.append(f"- {markdown_code(a.path.name)}: TorchScript (traced at {markdown(d.get('input_shape'))}, batch "
                       f"dynamic); {markdown(d.get('check', 'not checked'))}")  # fmt: skip
    if any(a.kind in ("onnx", "torchscript") for a in artifacts):
        out.append(f"- the ONNX / TorchScript graphs carry {markdown(weights)}")
    out.append("")
    return out


def trained_card(
    cfg: ArchConfig,
    result: dict[str, Any],
    settings: dict[str, Any],
    data_summary: str,
    artifacts: Sequence[ArtifactInfo] = (),
    origin: str = "",
) -> str:
    """Card of a network trained by `nas train --save`: what it is, how it was trained, what it scored.

    Args:
        cfg: the network as built (the data's classes and channels, the trained resolution).
        result: what `nas train --json` prints (accuracies, status, epochs, device).
        settings: the directory's ``train.json`` (the recipe ``spec``, command, versions).
        data_summary: one line saying which data it was trained on.
        artifacts: the files saved with it, listed under "Files".
        origin: an optional sentence on where the architecture came from.
    """
    spec = settings["spec"]
    total = analytic_report(cfg).total
    test = result.get("test_acc")
    yaml_file = next((a.path.name for a in artifacts if a.kind == "yaml"), "config.yaml")
    weights_file = next((a.path.name for a in artifacts if a.kind == "safetensors"), "model.safetensors")
    out: list[str] = [f"# {markdown(cfg.name)} (trained)", ""]
    out.append(f"Trained by `nas train` from {markdown_code(settings.get('model') or cfg.name)}; the weights are in "
               f"{markdown_code(weights_file)} (safetensors, no pickle), the network in {markdown_code(yaml_file)}."
               + (f" {markdown(origin)}" if origin else ""))  # fmt: skip
    out += ["", "## Accuracy", "", "| split | accuracy |", "|---|---|"]
    out.append(f"| validation, last epoch | {_opt(result.get('val_acc'), '{:.4f}')} |")
    out.append(f"| validation, best epoch | {_opt(result.get('best_val_acc'), '{:.4f}')} |")
    out.append(f"| official test split | {_opt(test, '{:.4f}') if test is not None else 'none (the data has no test split)'} |")
    out += ["", f"Data: {markdown(data_summary)}. The validation part is held out of the train split (seeded, stratified); "
            "the test split is scored once, at the end, and never steers training or search.",
            markdown(f"Status: {result.get('status')}"
                     + (f" ({result['failure_reason']})" if result.get("failure_reason") else "")
                     + f", {result.get('epochs')} of {result.get('epochs_requested')} epochs, "
                     f"{format_seconds(result.get('train_seconds'))} on {result.get('device')}.")]  # fmt: skip
    out += ["", "## Summary", "", "| | |", "|---|---|"]
    out.append(f"| input | {cfg.in_channels} x {cfg.resolution} x {cfg.resolution} |")
    out.append(f"| classes | {cfg.num_classes} |")
    out.append(f"| params | {total.params:,} ({format_count(total.params)}) |")
    out.append(f"| MACs (\"FLOPs\") | {total.macs:,} ({format_macs(total.macs)}) at {cfg.resolution} px |")
    out += ["", "## Architecture", "", stage_table(cfg), ""]
    out += ["## Recipe", ""]
    out.append(f"- AdamW, peak lr {spec['lr']:g}, weight decay {spec['weight_decay']:g} (conv/linear weights only), "
               f"betas (0.9, 0.999); linear warm-up {spec['warmup_epochs']:g} epoch(s) per step, then cosine to 0")  # fmt: skip
    out.append(f"- {spec['epochs']} epochs, batch {spec['batch_size']}, {spec['resolution']} px, data fraction "
               f"{spec['data_fraction']:g}, width x{spec['width_multiplier']:g}, label smoothing {spec['label_smoothing']:g}, "
               f"stochastic depth {result.get('drop_path_rate', 0):g} (linear over blocks)")  # fmt: skip
    out.append("- augmentation: random shift with reflect padding; horizontal flip where the data allows it")
    out.append(markdown(f"- seed {spec['seed']}, device {result.get('device')} ({result.get('precision', 'fp32')}), "
                        f"threads {spec.get('threads') or 'torch default'}"))  # fmt: skip
    out += ["", "## Reproduce", ""]
    out.append(f"- command: {markdown_code(settings.get('command', '-'))}")
    if settings.get("versions"):
        out.append(markdown(f"- versions: {', '.join(f'{k} {v}' for k, v in settings['versions'].items())}"))
    out.append("")
    if artifacts:
        out += files_section(artifacts, f"the trained weights (validation accuracy {_opt(result.get('val_acc'), '{:.4f}')}"
                             + (f", test accuracy {test:.4f}" if test is not None else "") + ")")  # fmt: skip
    out += ["## Use", "", "```python", "from safetensors.torch import load_file",
            "from search_space import ArchConfig, build_model", "",
            f"model = build_model(ArchConfig.load({python_str(yaml_file)}))",
            f"model.load_state_dict(load_file({python_str(weights_file)}))", "model.eval()", "```", ""]  # fmt: skip
    return "\n".join(out)


def python_str(text: str) -> str:
    """``text`` as a double-quoted Python string literal for a card's code block: quotes, backslashes
    and control characters escaped, on one line."""
    return printable(json.dumps(str(text), ensure_ascii=False))


def _opt(value: float | None, fmt: str) -> str:
    return fmt.format(value) if value is not None else "-"

"""`nas report`: one self-contained HTML page (and the same figures as PNG files) for a run.

The page embeds its figures as base64 PNG and loads nothing from the network: it can be mailed,
archived or opened from a file system. It shows

* the Pareto front of accuracy vs MACs (and vs measured latency when the run re-measured its
  front), every trial greyed, the front highlighted, with the zoo models (VAN, CMT, ACmix) on the
  same axes: at their proxy accuracy when ``RUN_DIR/zoo_proxy.json`` holds one
  (``{name: {"val_acc": float, "macs": int}}``), otherwise as lines at their MACs;
* the optimisation history (accuracy by trial, best so far; pruned, infeasible, failed marked);
* parameter importances for proxy accuracy (Optuna's fANOVA evaluator over the complete feasible
  trials; choices sampled only for some block types are left out and named);
* the block types along the front and a table of the front linking each config.

A tiny inline script marks ``<body data-images-ok="k/n">`` once the page has loaded, so a headless
browser can check that every figure decoded (scripts/check_report_chromium.sh).

The front shown is the run's own (`results.pareto.run_front`: the objectives the run used, as
`nas search` and `nas export` choose it); with latency among them, some of its members can look
dominated in the accuracy-vs-MACs projection.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from search_space import ArchConfig, analytic_cost, load_zoo, zoo_names
from search_space.attention import NO_ATTENTION, attention_style
from search_space.errors import ConfigError, UserError
from search_space.files import make_dirs, make_output_dir, read_json, write_atomic
from search_space.units import format_count, format_macs, format_ms

from .pareto import (
    front_hypervolume,
    front_objectives,
    normalized_hypervolume,
    pareto_front,
    reference_point,
    run_front,
)
from .plots import (
    ZooPoint,
    block_mix_figure,
    figure_png,
    history_figure,
    importance_figure,
    pareto_figure,
    proxy_final_figure,
)
from .run import LABELS, Run, TrialRecord, load_run
from .run_dir import RunDir, refuse_run_records

MIN_TRIALS_FOR_IMPORTANCE = 5
ZOO_PROXY_FILE = "zoo_proxy.json"


@dataclass
class Report:
    html_path: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- data the page needs ---------------------------------------------------------------------------


def zoo_points(run: Run) -> tuple[list[ZooPoint], list[str]]:
    """The zoo models at their own resolution, with proxy accuracies from zoo_proxy.json if any."""
    notes: list[str] = []
    proxy: dict[str, Any] = {}
    path = run.path / ZOO_PROXY_FILE
    if path.is_file():
        try:
            raw = read_json(path, "result")
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            proxy = raw
        except (OSError, UnicodeDecodeError, ValueError, UserError) as exc:
            notes.append(f"{ZOO_PROXY_FILE} ignored: {type(exc).__name__}: {str(exc)[:80]}")
    points = []
    for name in zoo_names():
        cfg = load_zoo(name)
        cost = analytic_cost(cfg)
        entry = proxy.get(name) if isinstance(proxy.get(name), dict) else {}
        acc = _finite(entry.get("val_acc"))
        macs = int(entry["macs"]) if isinstance(entry.get("macs"), (int, float)) else cost.macs
        points.append(ZooPoint(name, macs, cfg.resolution, cost.params, acc))
    for name, entry in proxy.items():  # extra reference models measured by the user
        if name not in zoo_names() and isinstance(entry, dict) and isinstance(entry.get("macs"), (int, float)):
            points.append(ZooPoint(str(name), int(entry["macs"]), 0, 0, _finite(entry.get("val_acc"))))
    return points, notes


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def param_importances(run: Run) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the sampled choices for proxy accuracy, or None and why not.

    Only complete feasible trials count (pruned ones carry a low-fidelity accuracy, infeasible
    and duplicate ones were not trained). fANOVA needs every trial to have every parameter, so
    choices that exist only for some block types (heads, K/V reduction, kernels) are left out.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    study = run.study()
    # one fidelity for all: the lowest rung, which every trained trial reached (a run from before
    # rungs: its one proxy)
    usable = {t.number: acc for t in run.eligible() if (acc := _lowest_rung_acc(t)) is not None}
    if study is None or len(usable) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete feasible trials; "
            f"this run has {len(usable)}."
        )
    frozen = [t for t in study.get_trials(deepcopy=False) if t.number in usable and t.params]
    if len(frozen) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, "Parameter importances: too few trials with recorded sampler choices."
    common = set.intersection(*(set(t.params) for t in frozen))
    conditional = sorted(set.union(*(set(t.params) for t in frozen)) - common)
    varied = sorted(p for p in common if len({repr(t.params[p]) for t in frozen}) > 1)
    if not varied:
        return None, "Parameter importances: no choice varies across every complete trial."
    mirror = optuna.create_study(direction="maximize")
    for t in frozen:
        mirror.add_trial(
            optuna.trial.create_trial(
                params={p: t.params[p] for p in varied},
                distributions={p: t.distributions[p] for p in varied},
                value=usable[t.number],
            )
        )
    try:
        importances = get_param_importances(mirror, evaluator=FanovaImportanceEvaluator(seed=0), params=varied)
    except (ValueError, RuntimeError) as exc:
        return None, f"Parameter importances could not be computed ({type(exc).__name__}: {str(exc)[:120]})."
    note = f"fANOVA (Optuna, seed 0) over {len(frozen)} measured feasible trials, target proxy accuracy at the lowest rung (the one fidelity every trained trial reached)."
    if conditional:
        shown = ", ".join(conditional[:12]) + (" ..." if len(conditional) > 12 else "")
        note += (
            f" Left out: {len(conditional)} conditional choices sampled only for some block types ({shown})."
        )
    return {k: float(v) for k, v in importances.items()}, note


def config_links(run: Run, front: Sequence[TrialRecord]) -> dict[int, tuple[Path, Path | None]]:
    """Trial number -> (config YAML, model card or None): the search's pareto/ export if one holds
    the same architecture, else the trial's own trials/NNNNN/config.yaml."""
    exported: list[tuple[ArchConfig, Path]] = []
    for path in run.pareto_files:
        try:
            exported.append((ArchConfig.load(path), path))
        except ConfigError:
            continue
    links: dict[int, tuple[Path, Path | None]] = {}
    for t in front:
        target: Path | None = None
        if t.config is not None:
            for cfg, path in exported:
                if cfg.replace(name="_") == t.config.replace(name="_"):
                    target = path
                    break
        if target is not None:
            card = target.with_suffix(".md")
            links[t.number] = (target, card if card.is_file() else None)
        else:
            own = RunDir(run.path).trial_config(t.number)
            if own.is_file():
                links[t.number] = (own, None)
    return links


# -- the page ------------------------------------------------------------------------------------------


def build_report(run: Run | str | Path, out: str | Path | None = None) -> Report:
    run = run if isinstance(run, Run) else load_run(run)
    if out is not None:
        refuse_run_records(out, "--out")
        out_dir = root = make_output_dir(out, "report directory")
    else:  # RUN/report: no link below the run directory is followed
        out_dir, root = make_dirs(run.path / "report", root=run.path), run.path
    report = Report(out_dir / "report.html")
    s = run.settings
    front = run_front(run)
    zoo, zoo_notes = zoo_points(run)
    report.notes.extend(zoo_notes)
    sections: list[str] = []

    def add_figure(key: str, fig: Any, caption: str) -> str:
        png = figure_png(fig)
        path = out_dir / f"{key}.png"
        write_atomic(path, png, root=root)
        report.pngs[key] = path
        b64 = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)} <span class=muted>({key}.png)</span></figcaption></figure>"
        )

    title = f"Search run {run.name}"
    sections.append(_summary(run, front))

    fig = pareto_figure(run.trials, front, "macs", limit=s.budget_macs, zoo=zoo,
                        title="Proxy accuracy vs MACs at deploy resolution")  # fmt: skip
    zoo_caption = (
        "zoo models at their proxy accuracy (zoo_proxy.json)"
        if any(z.val_acc is not None for z in zoo)
        else "zoo models (no proxy runs recorded) marked by their MACs at their own resolution"
    )
    sections.append("<h2>Pareto front: accuracy vs MACs</h2>" + add_figure(
        "pareto_macs", fig, f"Grey: all trials; red: Pareto front of complete feasible trials; dashed: budget; "
        f"{zoo_caption}.")  # fmt: skip
    )
    measured = [t for t in run.trials if t.latency_ms_measured is not None]
    if measured:
        lat_front = pareto_front(run.trials, ("acc", "latency_measured"))
        fig = pareto_figure(run.trials, lat_front, "latency_measured", limit=s.latency_ms,
                            title=f"Proxy accuracy vs measured latency ({s.device})")  # fmt: skip
        sections.append("<h2>Pareto front: accuracy vs measured latency</h2>" + add_figure(
            "pareto_latency", fig, f"Trials whose latency was measured on {s.device} (the search re-measures its "
            "front); red: front of those.")  # fmt: skip
        )
    fig = history_figure(run.trials, title="Optimisation history")
    sections.append("<h2>Optimisation history</h2>" + add_figure(
        "history", fig, "Proxy accuracy by trial number; red line: best complete feasible trial so far; ticks on "
        "the axis: infeasible (never trained) and failed trials.")  # fmt: skip
    )
    importances, note = param_importances(run)
    if importances:
        fig = importance_figure(importances)
        sections.append("<h2>Which choices mattered</h2>" + add_figure("importance", fig, note))
    else:
        sections.append(f"<h2>Which choices mattered</h2><p class=note>{html.escape(note)}</p>")
        report.notes.append(note)
    if front:
        fig = block_mix_figure(front)
        sections.append("<h2>Block types along the front</h2>" + add_figure(
            "block_mix", fig, "One bar per front member, stages stacked bottom to top, height = depth, colour = "
            "block type, hatching = channel attention.")  # fmt: skip
        )
    finals = [f for f in run.finals() if f.status == "ok" and f.val_acc is not None]
    proxy = {t.number: t.val_acc for t in run.trials}
    pairs = [(f.number, proxy[f.number], f.val_acc) for f in finals if proxy.get(f.number) is not None]
    if pairs:
        tau_text = proxy_final_agreement(pairs)
        fig = proxy_final_figure(pairs, title=f"Proxy vs full training ({tau_text})")
        from .compare import finals_notice  # one line when the finals mix data or settings

        mixed = finals_notice(run, finals)
        sections.append("<h2>Proxy accuracy vs full training</h2>" + add_figure(
            "proxy_vs_final", fig, f"Trials trained fully by nas finalize (RUN_DIR/final/): {tau_text}.")  # fmt: skip
            + (f"<p class=note>{html.escape(mixed)}</p>" if mixed else "") + _finals_table(run, finals))
    sections.append(_front_table(run, front, out_dir))
    sections.append(_zoo_table(zoo))
    sections.append(_methods(run, front))
    write_atomic(report.html_path, _page(title, sections), root=root)
    return report


def proxy_final_agreement(pairs: Sequence[tuple[int, float, float]]) -> str:
    """Kendall's tau between proxy and final accuracy, in words (it needs at least 3 trials)."""
    if len(pairs) < 3:
        return f"{len(pairs)} trial(s): too few for a rank correlation (Kendall tau needs 3 or more)"
    from scipy.stats import kendalltau

    tau = kendalltau([p[1] for p in pairs], [p[2] for p in pairs]).statistic
    if not math.isfinite(tau):
        return f"Kendall tau undefined over {len(pairs)} trials (all accuracies tied on one side)"
    return f"Kendall tau {tau:+.2f} over {len(pairs)} trials"


def _finals_table(run: Run, finals: Sequence[Any]) -> str:
    rows = []
    for f in finals:
        t = run.trial(f.number)
        test = f"{f.test_acc:.4f}" if f.test_acc is not None else "-"
        rows.append(f"<tr><td>{f.number}</td><td>{_opt(t.val_acc, '{:.4f}')}</td><td>{f.val_acc:.4f}</td>"
                    f"<td>{test}</td><td>{f.epochs}</td><td>{html.escape(f.data)}</td></tr>")  # fmt: skip
    return ("<table><tr><th>trial</th><th>proxy val_acc</th><th>final val_acc</th><th>final test_acc</th>"
            f"<th>epochs</th><th>data</th></tr>{''.join(rows)}</table>")  # fmt: skip


def _summary(run: Run, front: Sequence[TrialRecord]) -> str:
    s = run.settings
    counts = run.trial_counts()
    best = run.best()
    ref = reference_point([run], ("acc", "macs"))
    hv = front_hypervolume(run.trials, ("acc", "macs"), ref)
    rows = [
        ("run directory", str(run.path)),
        ("status", run.display_status),
        ("command", " ".join(run.command) or "-"),
        ("created / updated", f"{run.created or '-'} / {run.updated or '-'}"),
        ("MAC budget", format_macs(s.budget_macs) if s.budget_macs else "-"),
        ("params limit", format_count(s.max_params) if s.max_params else "-"),
        ("latency limit", f"{format_ms(s.latency_ms)} on {s.device}" if s.latency_ms else "-"),
        ("objectives / sampler", f"{', '.join(s.objectives)} / {s.sampler or '-'}"),
        ("trials trained / requested", f"{counts['trained']} / {s.trials if s.trials is not None else '?'}"),
        ("counts", ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("total", "trained"))),
        ("proxy (top rung)", f"{s.epochs} epochs at {s.proxy_resolution} px, width x{_opt(s.proxy_width, '{:g}')}, batch "
                  f"{s.batch_size}, data {s.data} "
                  f"(fraction {s.data_fraction}), seed {s.seed}, concurrency {s.concurrency}"),  # fmt: skip
        ("rungs", _rungs(s)),
        ("space", str(s.space)),
        ("resources", _resources(run.resources)),
        ("best complete trial", f"#{best.number}: accuracy {best.val_acc:.4f}, {format_macs(best.macs)}" if best else "-"),
        ("hypervolume (acc, MACs)", f"{normalized_hypervolume(hv, ref, ('acc', 'macs')):.4f} of the box accuracy "
                                    f"[0, 1] x MACs [0, {format_macs(ref[1])}]; {len(front)} trials on the front"),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table class=kv>{body}</table>"


def _rungs(s: Any) -> str:
    """The run's fidelity rungs, lowest first, as the fidelity study names them."""
    if not isinstance(s.rungs, int) or s.epochs is None or s.proxy_width is None or s.data_fraction is None:
        return "-"
    ladder = s.rung_ladder()
    text = ", ".join(r.label() for r in ladder)
    return text + (" (ASHA keeps the best third of each rung)" if len(ladder) > 1 else " (one proxy for every trial)")


def _lowest_rung_acc(t: TrialRecord) -> float | None:
    accs = t.user_attrs.get("rung_val_acc")
    if isinstance(accs, list) and accs and isinstance(accs[0], (int, float)):
        return float(accs[0])
    return t.val_acc  # trials that record no rungs (runs from before them): their one proxy


def _resources(res: Any) -> str:
    if not res:
        return "-"
    known = [("concurrency", "trials at a time"), ("threads", "threads per trial"), ("gpus_per_trial", "GPUs per trial"),
             ("nodes", "node(s)"), ("cluster_cpus", "CPUs"), ("cluster_gpus", "GPUs")]  # fmt: skip
    parts = [f"{res[k]:g} {label}" if isinstance(res[k], float) else f"{res[k]} {label}" for k, label in known if k in res]
    return ", ".join(parts) or "-"


def _rel(target: Path, out_dir: Path) -> str:
    return quote(os.path.relpath(target.resolve(), out_dir.resolve()).replace(os.sep, "/"))


def _front_table(run: Run, front: Sequence[TrialRecord], out_dir: Path) -> str:
    if not front:
        return "<h2>Pareto front</h2><p class=note>No complete feasible trial yet.</p>"
    links = config_links(run, front)
    head = ("trial", "accuracy", "measured at", "MACs", "params", "latency predicted", "latency measured", "epochs",
            "stages", "config")  # fmt: skip
    rows = []
    for t in front:
        stages = (
            " / ".join(_stage_label(st) for st in t.config.stages) if t.config is not None else "-"
        )
        link = "-"
        if t.number in links:
            cfg_path, card = links[t.number]
            link = f'<a href="{_rel(cfg_path, out_dir)}">{html.escape(cfg_path.name)}</a>'
            if card is not None:
                link += f' &middot; <a href="{_rel(card, out_dir)}">card</a>'
        cells = [
            f"#{t.number}", f"{t.val_acc:.4f}", html.escape(t.fidelity.describe()), format_macs(t.macs),
            format_count(t.params), format_ms(t.latency_ms_predicted), format_ms(t.latency_ms_measured),
            f"{t.fidelity.epochs_trained or '-'}", stages, link,
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        f"<h2>Pareto front</h2><p>Measured, feasible trials that no other such trial beats in every objective of "
        f"the run ({html.escape(', '.join(LABELS[o] for o in front_objectives(run.objectives, run.trials)))}), "
        "accuracy compared only within a rung: a trial measured at a lower rung is on the front only where no "
        "higher-rung member costs as little (the column 'measured at' says which); "
        "links go to the exported config (or the trial's own config when the search has not exported "
        f"it yet). {html.escape(latency_sources(run))}</p><table class=grid><tr>{header}</tr>{''.join(rows)}</table>"
    )


def latency_sources(run: Run) -> str:
    """Which runtime and device the front's latency figures belong to."""
    s = run.settings
    if not s.uses_latency:
        return "The run neither constrained nor optimised latency."
    if s.latency_table:
        try:
            from train_proxy.latency_table import LatencyPredictor

            target = LatencyPredictor.from_table(s.latency_table).describe()
        except UserError:
            target = "a table no longer readable here"
        return (f"Latency predicted with the target's table {s.latency_table} ({target}); not measured on the "
                "search's machine.")  # fmt: skip
    return (f"Latency predicted by the per-block table and measured (front only) with PyTorch eager on {s.device}, "
            "batch 1, one thread.")  # fmt: skip


def _stage_label(stage: Any) -> str:
    """``van&times;2 w64 SE``: block, depth, width and the channel attention's label (when any)."""
    none = stage.channel_attention == NO_ATTENTION
    attention = "" if none else f" {html.escape(attention_style(stage.channel_attention).label)}"
    return f"{html.escape(stage.block)}&times;{stage.depth} w{stage.width}{attention}"


def _zoo_table(zoo: Sequence[ZooPoint]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(z.name)}</td><td>{z.resolution or '-'}</td><td>{format_macs(z.macs)}</td>"
        f"<td>{format_count(z.params) if z.params else '-'}</td><td>{_opt(z.val_acc, '{:.4f}')}</td></tr>"
        for z in zoo
    )
    return (
        "<h2>Zoo models</h2><p>MACs at each model's own resolution (analytic count). Proxy accuracy comes from "
        f"<code>{ZOO_PROXY_FILE}</code> in the run directory when present.</p><table class=grid><tr><th>model</th>"
        f"<th>resolution</th><th>MACs</th><th>params</th><th>proxy accuracy</th></tr>{rows}</table>"
    )


def _methods(run: Run, front: Sequence[TrialRecord]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    made = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        "<h2>How to read this</h2><ul>"
        "<li>MACs (the papers' \"FLOPs\") are multiply-accumulates of convolutions, linear layers and attention "
        "products, counted analytically at the deploy resolution.</li>"
        "<li>Accuracy is the proxy's validation accuracy (short training at low resolution), a ranking signal, "
        "not a final ImageNet figure.</li>"
        "<li>Only complete, feasible, non-duplicate trials can be on the front; pruned trials were stopped early by "
        "ASHA and their accuracy is from partial training.</li>"
        "<li>Hypervolume reference point: accuracy 0 and the MAC budget; normalised by the box accuracy [0, 1] x "
        "MACs [0, budget].</li></ul>"
        f"<p class=muted>Made {html.escape(made)} from {html.escape(str(run.path))}; search versions: "
        f"{html.escape(versions or '-')}.</p>"
    )


def _page(title: str, sections: Sequence[str]) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1040px;
       color: #222; padding: 0 16px; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }} h2 {{ font-size: 1.2em; margin-top: 1.6em;
       border-bottom: 1px solid #ddd; padding-bottom: 3px; }}
figure {{ margin: 0.6em 0; }} img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ font-size: 0.85em; color: #555; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
table.kv th {{ text-align: left; padding: 2px 14px 2px 0; color: #555; font-weight: normal; vertical-align: top; }}
table.grid td, table.grid th {{ border: 1px solid #ddd; padding: 3px 7px; text-align: left; }}
table.grid th {{ background: #f4f4f4; }}
.note {{ background: #fff8e5; border-left: 3px solid #e0b000; padding: 6px 10px; }}
.muted {{ color: #888; font-size: 0.85em; }} code {{ background: #f4f4f4; padding: 0 3px; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{''.join(sections)}
<script>
// for headless checks only: how many figures decoded (the page itself needs no script)
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {{ if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }}
  document.body.setAttribute("data-images-ok", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""


def _opt(value: float | None, fmt: str) -> str:
    return fmt.format(value) if value is not None else "-"

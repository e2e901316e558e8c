"""`nas export` / `results.export`: configs that rebuild exactly, model cards, ONNX and TorchScript."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_results import make_run, small_config

from nas.cli import main
from results import load_run
from results.export import TOLERANCE, export_run, parse_formats, safe_stem
from search_space import ArchConfig, HeadConfig, StageConfig, StemConfig, analytic_cost, build_model
from search_space.errors import UserError


def tiny_hybrid() -> ArchConfig:
    """One block of each family (ACmix, CMT, VAN) at 64 px: exports in seconds."""
    return ArchConfig(
        name="tiny_hybrid",
        resolution=64,
        num_classes=10,
        stem=StemConfig("conv3", 8),
        head=HeadConfig("conv_bn_act", 64, 0.0),
        stages=(
            StageConfig("acmix", 1, 16, heads=2, mlp_ratio=2.0, attn_kernel=3, channel_attention="eca"),
            StageConfig("cmt", 1, 32, heads=2, kv_reduction=2, mlp_ratio=2.0, channel_attention="se"),
            StageConfig("van", 1, 32, mlp_ratio=2.0),
            StageConfig("acmix", 1, 64, heads=4, mlp_ratio=2.0, attn_kernel=3),
        ),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Six complete-ish trials of small configs; trial 2 is named ../../evil."""
    root = tmp_path_factory.mktemp("export_runs")
    cfgs = [small_config(i) for i in range(5)] + [tiny_hybrid()]
    cfgs[2] = cfgs[2].replace(name="../../evil")
    statuses = ["complete", "complete", "complete", "pruned", "infeasible", "complete"]
    accs = [0.70, 0.80, 0.80, 0.90, 0.95, 0.60]
    return make_run(root, "run", n=6, configs=cfgs, statuses=statuses, accuracies=accs, measured_latency=True)


def test_yaml_rebuilds_identical_architecture_in_fresh_process(run_dir, tmp_path):
    out = tmp_path / "out"
    exported = export_run(run_dir, out, trials=[1, 2, 5])
    run = load_run(run_dir)
    want = []
    for e in exported:
        original = run.trial(e.trial).config
        params = sum(p.numel() for p in build_model(original).parameters())
        macs = analytic_cost(original).macs
        assert (e.params, e.macs) == (params, macs)
        assert ArchConfig.load(e.config_path).replace(name="x") == original.replace(name="x")
        stages = [[s.block, s.depth, s.width, s.heads, s.mlp_ratio, s.kv_reduction, s.channel_attention]
                  for s in original.stages]  # fmt: skip
        want.append([params, macs, stages])
    code = (
        "import json, sys\n"
        "from search_space import ArchConfig, analytic_cost, build_model\n"
        "out = []\n"
        "for path in sys.argv[1:]:\n"
        "    cfg = ArchConfig.load(path)\n"
        "    model = build_model(cfg)\n"
        "    out.append([sum(p.numel() for p in model.parameters()), analytic_cost(cfg).macs,\n"
        "                [[s.block, s.depth, s.width, s.heads, s.mlp_ratio, s.kv_reduction, s.channel_attention]\n"
        "                 for s in cfg.stages]])\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *(str(e.config_path) for e in exported)],
                          capture_output=True, text=True, timeout=180, check=True)  # fmt: skip
    assert json.loads(done.stdout) == want


def test_names_never_escape_the_output_directory(run_dir, tmp_path):
    out = tmp_path / "deep" / "out"
    exported = export_run(run_dir, out, trials=[2])
    assert exported[0].stem == "trial_00002_evil"
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [Path("deep/out/trial_00002_evil.md"), Path("deep/out/trial_00002_evil.yaml")]
    assert ArchConfig.load(exported[0].config_path).name == "trial_00002_evil"
    assert safe_stem(7, "../../../etc/passwd") == "trial_00007_etc_passwd"
    assert safe_stem(7, "sample") == "trial_00007" and safe_stem(7, "/..") == "trial_00007"
    assert safe_stem(7, "trial_00007") == "trial_00007"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: TorchScript is deprecated
def test_onnx_and_torchscript_match_pytorch(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    argv = ["export", str(run_dir), "--trial", "5", "--out", str(out), "--format", "onnx,torchscript", "--json"]
    assert main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["onnx_max_abs_diff"] <= TOLERANCE and row["torchscript_max_abs_diff"] <= TOLERANCE
    assert set(row["files"]) == {"yaml", "onnx", "torchscript"}
    # an independent check of the file: onnxruntime against the model rebuilt from the exported YAML
    import numpy as np
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)  # the export's weight seed
    model = build_model(ArchConfig.load(out / "trial_00005_tiny_hybrid.yaml")).eval()
    x = torch.randn(3, 3, 64, 64)
    session = ort.InferenceSession(str(out / "trial_00005_tiny_hybrid.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (3, 10) and float(np.abs(got - want).max()) <= TOLERANCE
    scripted = torch.jit.load(str(out / "trial_00005_tiny_hybrid.torchscript.pt"))
    with torch.no_grad():
        assert float((scripted(x) - model(x)).abs().max()) <= TOLERANCE
    card = (out / "trial_00005_tiny_hybrid.md").read_text()
    assert "opset 17" in card and "max abs difference" in card and "freshly initialised" in card


def test_model_card_contents(run_dir, tmp_path):
    e = export_run(run_dir, tmp_path, trials=[1])[0]
    card = e.card_path.read_text()
    run = load_run(run_dir)
    t = run.trial(1)
    cost = analytic_cost(t.config)
    assert f"{cost.params:,}" in card and f"{cost.macs:,}" in card
    for stage in t.config.stages:
        assert f"| {stage.block} | {stage.depth} | {stage.width} |" in card
    assert f"{t.latency_ms_measured:.3g} ms measured (median)" in card  # three significant digits
    assert "device cpu, batch size 1, 1 thread, 64 px" in card  # latency with its device and batch
    assert f"{t.val_acc:.4f}" in card and "3 of 3 epochs at 32 px, width x0.5" in card and "data `digits`" in card
    assert "sampler: tpe; seed: 0" in card
    assert f'ArchConfig.load("{e.stem}.yaml")' in card and "build_model(cfg)" in card


def test_top_k_ranks_by_accuracy_ties_to_fewer_macs(run_dir, tmp_path, capsys):
    run = load_run(run_dir)
    # trials 1 and 2 tie at 0.80: the one with fewer MACs comes first; 3 (pruned), 4 (infeasible) never count
    tie = sorted([1, 2], key=lambda n: (run.trial(n).macs, n))
    assert main(["export", str(run_dir), "--top", "3", "--out", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in rows] == tie + [0]
    # default: the run's front (objectives acc, MACs). Complete trials (accuracy, MACs counted by hand from
    # small_config / tiny_hybrid): 0 (0.70, 4.73 M), 1 (0.80, 10.34 M), 2 (0.80, 13.50 M), 5 (0.60, 3.70 M);
    # 2 is dominated by 1 (same accuracy, more MACs): the front by MACs is 5, 0, 1
    assert [run.trial(n).macs for n in (5, 0, 1, 2)] == [3_697_456, 4_725_568, 10_342_992, 13_502_048]
    exported = export_run(run_dir, tmp_path / "front")
    assert [e.trial for e in exported] == [5, 0, 1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trial", "99"], "no trial 99"),
        (["--trial", "3"], "cannot be exported: it was stopped early (pruned)"),
        (["--trial", "4"], "cannot be exported: it violates a constraint"),
        (["--format", "yaml,pdf"], "unknown export format 'pdf'"),
    ],
)
def test_export_errors_are_one_line(run_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["export", str(run_dir), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_export_argument_errors(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run_dir), "--trial", "1", "--top", "2", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_duplicate_trial_points_at_the_original(tmp_path):
    path = make_run(tmp_path, n=10, seed=2)
    run = load_run(path)
    assert run.trial(9).status == "duplicate"
    with pytest.raises(UserError, match=f"duplicates trial {run.trial(9).duplicate_of}"):
        export_run(run, tmp_path / "o", trials=[9])


def test_onnx_requested_without_onnx_fails_clearly(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(UserError, match="needs the 'onnx' package"):
        parse_formats("yaml,onnx")
    assert parse_formats("torchscript") == ("yaml", "torchscript")


def test_float32_rounding_allowance_rejects_real_errors():
    """Above 1e-4, ONNX is judged against float64 PyTorch: rounding passes, a real error does not."""
    import torch

    from results.export import _float32_noise

    torch.manual_seed(0)
    model = build_model(tiny_hybrid()).eval()
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        same = model(batch).numpy()
    noise, error = _float32_noise(model, batch, same)
    assert 0 <= noise < 1e-5 and error == pytest.approx(noise, abs=1e-12)  # float32 output: exactly the noise
    noise, error = _float32_noise(model, batch, same + 0.01)
    assert error > 0.009 and error > 2 * noise  # a genuine mismatch stays a mismatch

"""`nas report`: a self-contained HTML page whose figures are real, non-empty PNG images."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image
from test_results import make_run

from nas.cli import main
from results import load_run
from results.pareto import run_front
from results.report import build_report, param_importances

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """A 40-trial run with measured latency and zoo proxy accuracies, reported to a separate folder."""
    root = tmp_path_factory.mktemp("report_runs")
    path = make_run(root, "run", n=40, seed=11, measured_latency=True)
    (path / "zoo_proxy.json").write_text(json.dumps({"van_b0": {"val_acc": 0.61, "macs": 880_000_000}}))
    out = root / "elsewhere" / "rep"
    return path, build_report(path, out)


def _assert_real_png(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    extrema = image.convert("RGB").getextrema()
    assert any(lo != hi for lo, hi in extrema), "a single-colour image"


def test_report_is_self_contained_with_real_figures(full_report):
    path, report = full_report
    html = report.html_path.read_text()
    assert set(report.pngs) == {"pareto_macs", "pareto_latency", "history", "importance", "block_mix"}
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(report.pngs) == html.count("<img ")
    files = {p.read_bytes() for p in report.pngs.values()}
    for b64 in embedded:
        data = base64.b64decode(b64)
        _assert_real_png(data)
        assert data in files  # the same figures as the PNG files
    for png in report.pngs.values():
        _assert_real_png(png.read_bytes())
    # nothing is fetched from the network: no external src, stylesheet or script
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "<script src" not in html


def test_report_front_table_links_resolve(full_report):
    path, report = full_report
    html = report.html_path.read_text()
    run = load_run(path)
    front = run_front(run)
    for t in front:
        assert f"<td>#{t.number}</td>" in html
    hrefs = [unquote(h) for h in re.findall(r'href="([^"]+)"', html)]
    assert len([h for h in hrefs if h.endswith(".yaml")]) == len(front)
    for href in hrefs:
        target = (report.html_path.parent / href).resolve()
        assert target.is_file(), href
        assert target.parent == (path / "pareto").resolve()  # the search's exported configs and cards


def test_report_zoo_and_importance_sections(full_report):
    path, report = full_report
    html = report.html_path.read_text()
    assert "zoo models at their proxy accuracy" in html and "0.6100" in html
    for name in ("van_b0", "cmt_s", "acmix_t"):
        assert f"<td>{name}</td>" in html
    importances, note = param_importances(load_run(path))
    assert importances and abs(sum(importances.values()) - 1) < 1e-6
    assert "Left out" in note and "s1.heads" not in importances  # conditional choices named, not used


def test_report_with_few_trials_explains_instead_of_crashing(tmp_path, capsys):
    path = make_run(tmp_path, n=3, statuses=["complete", "pruned", "running"], status="running", write_pareto=False)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: Parameter importances need at least 5 complete feasible trials; this run has 1." in out
    html = (path / "report" / "report.html").read_text()
    assert "need at least 5" in html and "trials/00000/config.yaml" in html  # own config when not exported
    assert not (path / "report" / "pareto_latency.png").exists()  # nothing measured: no latency figure
    for png in (path / "report").glob("*.png"):
        _assert_real_png(png.read_bytes())


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(full_report, tmp_path):
    """Every figure decodes in a real browser (the page marks its body once loaded)."""
    _, report = full_report
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_report_chromium.sh"), str(report.html_path), str(shot)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"images ok: {len(report.pngs)}/{len(report.pngs)}" in done.stdout
    _assert_real_png(shot.read_bytes())

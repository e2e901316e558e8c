"""Security: safe YAML only, checkpoints with ``weights_only=True``, no pickle of untrusted data,
Ray's dashboard off (or on loopback), and names from configs never escaping an output directory.

The source checks read every Python file of our packages, scripts, benchmarks and tests (this file
aside, which names the forbidden calls), with the AST where a call's arguments matter. Each checker
is first shown to catch a planted offence, so a passing scan is not a vacuous one.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from fault_helpers import shared_search_run, tree_digest
from test_results import make_run, small_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_space", "nas", "scaling", "train_proxy", "results")
LOOPBACK = {"127.0.0.1", "::1"}


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    for extra in ("scripts", "benchmarks", "tests"):
        files += (ROOT / extra).rglob("*.py")
    return sorted(p for p in files if p.resolve() != Path(__file__).resolve())


def test_scan_covers_the_packages() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in sources()}
    for expected in ("search_space/config.py", "nas/search/runner.py", "scaling/cli.py", "train_proxy/data.py",
                     "results/export.py"):
        assert expected in files


# -- YAML --------------------------------------------------------------------------------------

UNSAFE_YAML = re.compile(
    r"yaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\s*\(|"
    r"Loader\s*=\s*(yaml\.)?(Loader|UnsafeLoader|FullLoader)\b|\b(UnsafeLoader|FullLoader)\b|"
    r"yaml\.(Loader|UnsafeLoader|FullLoader|CLoader|CUnsafeLoader|CFullLoader)\b"
)


def unsafe_yaml_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if UNSAFE_YAML.search(line)]


@pytest.mark.parametrize(
    "snippet",
    ["yaml.load(text)", "yaml.load(fh, Loader=yaml.Loader)", "yaml.unsafe_load(s)", "yaml.full_load(s)",
     "yaml.load(s, Loader=FullLoader)", "from yaml import UnsafeLoader", "yaml.load_all(s)"],
)
def test_yaml_checker_catches(snippet: str) -> None:
    assert unsafe_yaml_lines(snippet)


def test_yaml_checker_allows_safe_load() -> None:
    assert not unsafe_yaml_lines("data = yaml.safe_load(text)\nyaml.safe_dump(d)\nyaml.safe_load_all(s)")


def test_only_safe_yaml_loading() -> None:
    offences = {p.relative_to(ROOT).as_posix(): unsafe_yaml_lines(p.read_text()) for p in sources()}
    offences = {k: v for k, v in offences.items() if v}
    assert not offences, f"unsafe YAML loading: {offences}"
    safe = sum(p.read_text().count("yaml.safe_load(") for p in sources())
    assert safe >= 3, "expected the YAML readers to use yaml.safe_load"


# -- checkpoints and pickles ----------------------------------------------------------------------


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def unsafe_loads(text: str) -> list[str]:
    """torch.load without weights_only=True; pickle.load(s) (untrusted data runs code);
    numpy loading with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name == "torch.load":
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
                      "joblib.load", "torch.serialization.load"):
            found.append(f"line {node.lineno}: {name}")
        elif name in ("np.load", "numpy.load"):
            value = kw.get("allow_pickle")
            if isinstance(value, ast.Constant) and value.value is True:
                found.append(f"line {node.lineno}: {name}(allow_pickle=True)")
    return found


@pytest.mark.parametrize(
    "snippet",
    ["torch.load(path)", "torch.load(path, weights_only=False)", "torch.load(path, map_location='cpu')",
     "pickle.loads(blob)", "pickle.load(fh)", "np.load(f, allow_pickle=True)"],
)
def test_load_checker_catches(snippet: str) -> None:
    assert unsafe_loads(snippet)


def test_load_checker_allows() -> None:
    assert not unsafe_loads("torch.load(p, weights_only=True, map_location='cpu')\nnp.load(f)\n"
                            "_ArrayUnpickler(io.BytesIO(raw)).load()")


def test_checkpoints_weights_only_and_no_pickle() -> None:
    offences = {p.relative_to(ROOT).as_posix(): unsafe_loads(p.read_text()) for p in sources()}
    offences = {k: v for k, v in offences.items() if v and not k.startswith("tests/")}
    assert not offences, f"unsafe deserialisation: {offences}"


def test_cifar_reader_refuses_code_in_pickles(tmp_path: Path) -> None:
    """The one pickle reader (CIFAR-10 python batches) is a restricted unpickler: a batch whose
    unpickling would run a command is refused and the command does not run."""
    import os
    import pickle

    from search_space.errors import UserError
    from train_proxy.data import load_data

    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(UserError, match="refusing"):
        load_data(f"cifar10:{folder}", 32)
    assert not marker.exists()


# -- Ray: no dashboard, loopback -------------------------------------------------------------------


def ray_init_calls(text: str) -> list[dict[str, object]]:
    calls = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and _dotted(node.func) == "ray.init":
            kw = {k.arg: (k.value.value if isinstance(k.value, ast.Constant) else "<expr>") for k in node.keywords if k.arg}
            kw["<has **>"] = any(k.arg is None for k in node.keywords)
            calls.append(kw)
    return calls


def test_local_ray_init_has_no_dashboard_in_source() -> None:
    calls = []
    for path in (ROOT / "nas").rglob("*.py"):
        calls += [(path.name, c) for c in ray_init_calls(path.read_text())]
    assert calls, "nas/search must start Ray somewhere"
    local = [(f, c) for f, c in calls if c.get("address") in (None, "local")]
    assert local, "expected a local ray.init (the default when no --address is given)"
    for f, c in local:
        dashboard_off = c.get("include_dashboard") is False
        loopback = c.get("dashboard_host") in LOOPBACK
        assert dashboard_off or loopback, f"{f}: local ray.init without dashboard off / on loopback: {c}"
        assert c.get("_node_ip_address") in LOOPBACK, f"{f}: local Ray not bound to loopback: {c}"


def test_start_ray_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `nas search` actually passes to ray.init, locally and when joining a cluster."""
    import ray

    from nas.search import runner

    seen: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    runner.start_ray(None)
    runner.start_ray("127.0.0.1:6379")
    local, joined = seen
    assert local["address"] == "local"  # never a cluster named by $RAY_ADDRESS
    assert local["include_dashboard"] is False
    assert local["_node_ip_address"] == "127.0.0.1"
    assert joined["address"] == "127.0.0.1:6379"
    assert "include_dashboard" not in joined or joined["include_dashboard"] is False


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    run = shared_search_run(tmp_path_factory.getbasetemp())
    assert run.returncode == 0, run.output[-3000:]
    return run


def test_live_search_has_no_dashboard_listening_beyond_loopback(shared) -> None:
    """Processes of a real local search (snapshots taken while it ran): the dashboard, if Ray starts
    its head process at all, runs minimal on 127.0.0.1 and listens on nothing else; no process of
    the search listens on Ray's dashboard port off loopback."""
    procs = shared.processes
    assert any("raylet" in p["cmdline"] for p in procs), "the snapshots missed the search's Ray processes"
    dashboards = [p for p in procs if "dashboard/dashboard.py" in p["cmdline"]]
    for p in dashboards:
        host = re.search(r"--host[= ](\S+)", p["cmdline"])
        assert host and host.group(1) in LOOPBACK, f"dashboard not on loopback: {p['cmdline'][:300]}"
        off_loopback = [s for s in p["listen"] if s[0] not in LOOPBACK]
        assert not off_loopback, f"dashboard listens beyond loopback: {off_loopback}"
    for p in procs:
        assert not [s for s in p["listen"] if s[1] == 8265 and s[0] not in LOOPBACK], p["cmdline"][:200]


# -- names from configs never become paths outside the output directory ------------------------------


def test_search_with_evil_space_name_writes_only_its_run_dir(shared) -> None:
    """The shared search ran on a space named ``../../evil``: everything it wrote is inside its run
    directory, and the Pareto export is named by trial number."""
    after = tree_digest(shared.parent)
    run_rel = shared.run_dir.relative_to(shared.parent).as_posix()
    outside = {k: v for k, v in after.items() if not (k == run_rel or k.startswith(run_rel + "/"))}
    assert outside == shared.before, "the search wrote outside its run directory"
    assert not [k for k in after if "evil" in k.split("/")[-1]]
    pareto = sorted(p.name for p in (shared.run_dir / "pareto").iterdir())
    assert pareto and all(re.fullmatch(r"trial_\d{5}\.(yaml|md)", n) for n in pareto), pareto


def test_pareto_export_ignores_config_names(tmp_path: Path) -> None:
    """The search's Pareto export (unit level) with members whose configs are named ``../../evil``
    and an absolute path: files land in RUN_DIR/pareto as trial_NNNNN.*, nowhere else."""
    import optuna

    from nas.search import pareto
    from results.run_dir import RunDir
    from search_space import analytic_cost

    work = tmp_path / "w" / "x"
    rd = RunDir(work / "run")
    rd.trials_dir.mkdir(parents=True)
    abs_target = tmp_path / "abs" / "evil"
    members = []
    for number, name in ((3, "../../evil"), (7, str(abs_target))):
        cfg = small_config(number).replace(name=name)
        rd.trial_dir(number).mkdir()  # as the search does when it samples a trial
        cost = analytic_cost(cfg)
        members.append(pareto.FrontMember(number, cfg, 0.5, cost.macs, cost.params, None))
    before = tree_digest(tmp_path)
    study = optuna.create_study(directions=["maximize", "minimize"])
    written = pareto.export(rd, members, study)
    after = tree_digest(tmp_path)
    new = sorted(set(after) - set(before))
    assert all(k.startswith("w/x/run/") for k in new), new
    assert sorted(p.name for p in written) == ["trial_00003.yaml", "trial_00007.yaml"]
    assert not abs_target.exists() and not (tmp_path / "evil.yaml").exists()


def test_nas_export_sanitises_config_names(tmp_path: Path, cli) -> None:
    abs_target = tmp_path / "abs" / "evil"
    cfgs = [small_config(0).replace(name="../../evil"), small_config(1).replace(name=str(abs_target)),
            small_config(2).replace(name="..")]
    work = tmp_path / "a" / "b"
    run = make_run(work, "run", n=3, configs=cfgs, statuses=["complete"] * 3, accuracies=[0.5, 0.6, 0.7])
    out = work / "exported"
    before = tree_digest(tmp_path)
    code, _, err = cli("export", run, "--top", "3", "--out", out)
    assert code == 0, err
    after = tree_digest(tmp_path)
    new = sorted(set(after) - set(before))
    assert new and all(k == "a/b/exported" or k.startswith("a/b/exported/") for k in new), new
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 6 and all(re.fullmatch(r"trial_\d{5}[A-Za-z0-9_-]*\.(yaml|md)", n) for n in names), names
    assert not abs_target.exists()


def test_scaling_family_sanitises_config_names(tmp_path: Path, cli) -> None:
    from scaling.cli import main as scaling_main
    from search_space import load_zoo

    abs_target = tmp_path / "abs" / "evil"
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for i, name in enumerate(("../../evil", str(abs_target), "/etc/passwd")):
        cfg_file = work / f"base{i}.yaml"
        cfg_file.write_text(load_zoo("cmt_ti").replace(name=name).to_yaml())
        out = work / f"fam{i}"
        before = tree_digest(tmp_path)
        code, stdout, err = cli("family", "--config", cfg_file, "--phis", "0,1", "--names", "S,B", "--out", out,
                                "--json", main=scaling_main)
        assert code == 0, err
        new = sorted(set(tree_digest(tmp_path)) - set(before))
        assert new and all(k.startswith(f"a/b/fam{i}") for k in new), new
        summary = json.loads(stdout)
        for path in summary["files"].values():
            assert Path(path).resolve().parent == out.resolve()
    assert not abs_target.exists()


def test_scaling_family_refuses_path_member_names(tmp_path: Path, cli) -> None:
    from scaling.cli import main as scaling_main

    for names in ("../x,B", "/tmp/x,B", "a/b,B", "..,B"):
        code, _, err = cli("family", "--config", "cmt_ti", "--phis", "0,1", "--names", names,
                           "--out", tmp_path / "fam", main=scaling_main)
        assert code == 2 and "not a safe file name" in err, (names, err)
    assert not (tmp_path / "fam").exists()

"""Bad input across `nas` and `scaling`: exit status 2, one line naming the problem, no traceback,
nothing written, an existing run directory byte-identical, and no code run from a malicious file.

Each case runs against a workspace holding a real finished search run (a tiny one, shared with the
security tests), fixture files (empty, binary, malicious and invalid YAML, broken and malicious
CIFAR-10 batches, an impossible search space), and nothing else. The whole workspace is hashed
before and after every case: not one byte may change, not one file may appear (a malicious YAML
that ran would have created ``PWNED``).

Most cases run in-process (fast); a handful go through real ``python -m nas.cli`` /
``python -m scaling.cli`` processes to show the console entry prints no traceback either.
"""

from __future__ import annotations

import functools
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import TINY_SPACE, shared_search_run, tree_digest, write_space

from search_space.units import format_macs
from scaling.cli import main as scaling_main
from search_space import SearchSpace

MARKER = "PWNED"


class _Exploit:
    """Pickles to a call of os.system: a CIFAR-10 batch that would run a command if unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared = shared_search_run(tmp_path_factory.getbasetemp())
    assert shared.returncode == 0, shared.output[-3000:]
    root = tmp_path_factory.mktemp("bad_input")
    shutil.copytree(shared.run_dir, root / "run")
    marker = root / MARKER
    (root / "empty.yaml").write_text("")
    (root / "comments.yaml").write_text("# nothing here\n\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "list.yaml").write_text("- just\n- a list\n")
    (root / "broken.yaml").write_text("name: x\nstages: [\n  {block: van\n")
    (root / "evil.yaml").write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    (root / "evil_nested.yaml").write_text(
        f"name: x\nresolution: !!python/object/apply:subprocess.check_output [[touch, {marker}]]\n"
    )
    (root / "evil_new.yaml").write_text(f"!!python/object/new:subprocess.Popen [[touch, {marker}]]\n")
    (root / "unknown_block.yaml").write_text(
        "name: x\nresolution: 224\nnum_classes: 10\nstages:\n"
        + "".join(f"  - {{block: {b}, depth: 1, width: {w}}}\n" for b, w in
                  (("van", 32), ("van", 64), ("transformerx", 160), ("van", 256)))
    )
    (root / "bad_res.yaml").write_text(
        (root / "unknown_block.yaml").read_text().replace("transformerx", "van").replace("224", "100")
    )
    write_space(root / "space.yaml")
    (root / "space_unknown_block.yaml").write_text(TINY_SPACE.format(name="x").replace("[van, cmt, acmix]", "[van, mamba]"))
    # an impossible space: even its smallest architecture needs 0.135 G MACs at 512 px
    (root / "space_512.yaml").write_text(TINY_SPACE.format(name="big").replace("resolution: 64", "resolution: 512"))
    (root / "notarun").mkdir()
    (root / "afile.txt").write_text("not a directory\n")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for folder, blob in (("cifar_garbage", b"\x80\x04garbage"),
                         ("cifar_evil", pickle.dumps(_Exploit(f"touch {marker}")))):
        (root / folder).mkdir()
        for name in names:
            (root / folder / name).write_bytes(blob)
    (root / "images_empty").mkdir()
    corrupt = root / "run_corrupt"
    shutil.copytree(root / "run", corrupt)
    (corrupt / "run.json").write_text('{"format": 1, "settings": ')
    return root


@functools.cache
def smallest_macs(space_file: Path | None) -> str:
    space = SearchSpace.default() if space_file is None else SearchSpace.load(space_file)
    return format_macs(space.smallest()[1].macs)


# (id, program, argv with {placeholders} of workspace paths, words the one error line must contain)
CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    # -- nas search: budgets and counts ---------------------------------------------------------
    ("budget-4GFLOP", "nas", "search --budget 4GFLOP --out {ws}/new", ("4GFLOP", "budget")),
    ("budget-negative", "nas", "search --budget=-1G --out {ws}/new", ("-1G", "budget")),
    ("budget-negative-spaced", "nas", "search --budget -1G --out {ws}/new", ("budget",)),
    ("budget-abc", "nas", "search --budget abc --out {ws}/new", ("abc", "budget")),
    ("budget-zero", "nas", "search --budget 0 --out {ws}/new", ("budget", "positive")),
    ("budget-nan", "nas", "search --budget nan --out {ws}/new", ("nan", "budget")),
    ("budget-missing", "nas", "search --trials 3 --out {ws}/new", ("--budget", "required")),
    ("params-zero", "nas", "search --budget 4G --params 0 --out {ws}/new", ("parameter count", "positive")),
    ("params-bytes", "nas", "search --budget 4G --params 30MB --out {ws}/new", ("30MB",)),
    ("latency-negative", "nas", "search --budget 4G --latency-ms=-5 --out {ws}/new", ("latency",)),
    ("trials-zero", "nas", "search --budget 4G --trials 0 --out {ws}/new", ("--trials", ">= 1")),
    ("trials-negative", "nas", "search --budget 4G --trials -3 --out {ws}/new", ("--trials", "-3")),
    ("trials-text", "nas", "search --budget 4G --trials many --out {ws}/new", ("--trials", "many")),
    ("epochs-zero", "nas", "search --budget 4G --epochs 0 --out {ws}/new", ("--epochs", ">= 1")),
    ("concurrency-zero", "nas", "search --budget 4G --concurrency 0 --out {ws}/new", ("--concurrency", ">= 1")),
    ("concurrency-negative", "nas", "search --budget 4G --concurrency -2 --out {ws}/new", ("--concurrency", "-2")),
    ("threads-zero", "nas", "search --budget 4G --threads 0 --out {ws}/new", ("--threads",)),
    ("max-failures-negative", "nas", "search --budget 4G --max-failures -1 --out {ws}/new", ("--max-failures",)),
    ("fraction-two", "nas", "search --budget 4G --data-fraction 2 --out {ws}/new", ("--data-fraction",)),
    ("proxy-res-48", "nas", "search --budget 4G --proxy-resolution 48 --out {ws}/new", ("resolution", "48")),
    ("objective-unknown", "nas", "search --budget 4G --objectives acc,flops --out {ws}/new", ("flops", "objective")),
    ("sampler-unknown", "nas", "search --budget 4G --sampler grid --out {ws}/new", ("--sampler", "grid")),
    ("address-malformed", "nas", "search --budget 4G --address nonsense --out {ws}/new", ("--address", "nonsense")),
    ("device-without-latency", "nas", "search --budget 4G --latency-device cuda --out {ws}/new", ("--latency-device", "latency")),
    # -- nas search: files, spaces, data ---------------------------------------------------------
    ("space-missing", "nas", "search --budget 4G --space {ws}/nope.yaml --out {ws}/new", ("nope.yaml", "no such")),
    ("space-empty", "nas", "search --budget 4G --space {ws}/empty.yaml --out {ws}/new", ("empty.yaml", "empty")),
    ("space-comments", "nas", "search --budget 4G --space {ws}/comments.yaml --out {ws}/new", ("comments.yaml", "empty")),
    ("space-binary", "nas", "search --budget 4G --space {ws}/binary.yaml --out {ws}/new", ("binary.yaml", "binary")),
    ("space-malicious", "nas", "search --budget 4G --space {ws}/evil.yaml --out {ws}/new", ("evil.yaml", "python/object")),
    ("space-malicious-new", "nas", "search --budget 4G --space {ws}/evil_new.yaml --out {ws}/new", ("evil_new.yaml", "python/object")),
    ("space-unknown-block", "nas", "search --budget 4G --space {ws}/space_unknown_block.yaml --out {ws}/new",
     ("unknown block type", "mamba")),
    ("space-is-dir", "nas", "search --budget 4G --space {ws}/notarun --out {ws}/new", ("notarun",)),
    ("space-too-big", "nas", "search --budget 100M --space {ws}/space_512.yaml --out {ws}/new",
     ("smallest", "{smallest_512}", "budget of 0.100 G")),
    ("default-space-too-big", "nas", "search --budget 1M --out {ws}/new", ("smallest", "{smallest_default}")),
    ("data-cifar-missing", "nas", "search --budget 4G --data cifar10:{ws}/nowhere --out {ws}/new", ("nowhere",)),
    ("data-cifar-garbage", "nas", "search --budget 4G --data cifar10:{ws}/cifar_garbage --out {ws}/new",
     ("cifar_garbage", "cifar-10")),
    ("data-cifar-malicious", "nas", "search --budget 4G --data cifar10:{ws}/cifar_evil --out {ws}/new",
     ("cifar_evil", "refusing")),
    ("data-imagefolder-file", "nas", "search --budget 4G --data imagefolder:{ws}/afile.txt --out {ws}/new",
     ("afile.txt", "not a directory")),
    ("data-imagefolder-empty", "nas", "search --budget 4G --data imagefolder:{ws}/images_empty --out {ws}/new",
     ("images_empty",)),
    ("data-unknown-kind", "nas", "search --budget 4G --data svhn --out {ws}/new", ("svhn", "data")),
    # -- nas search: run directories ----------------------------------------------------------
    ("out-is-existing-run", "nas", "search --budget 4G --out {ws}/run", ("--resume", "not empty")),
    ("out-is-file", "nas", "search --budget 4G --out {ws}/afile.txt", ("afile.txt", "not a directory")),
    ("resume-without-out", "nas", "search --resume", ("--resume", "--out")),
    ("resume-missing-dir", "nas", "search --resume --out {ws}/nowhere", ("nowhere", "no such")),
    ("resume-not-a-run", "nas", "search --resume --out {ws}/notarun", ("notarun", "run.json")),
    ("resume-corrupt-run", "nas", "search --resume --out {ws}/run_corrupt", ("run.json", "unreadable")),
    ("resume-changed-budget", "nas", "search --resume --out {ws}/run --budget 2G", ("--budget", "differs")),
    ("resume-changed-epochs", "nas", "search --resume --out {ws}/run --epochs 5", ("--epochs", "differs")),
    ("resume-changed-space", "nas", "search --resume --out {ws}/run --space {ws}/space_512.yaml", ("--space", "differs")),
    # -- nas status / export / report / compare / runs ----------------------------------------
    ("status-missing", "nas", "status {ws}/nowhere", ("nowhere",)),
    ("status-not-a-run", "nas", "status {ws}/notarun", ("notarun", "run.json")),
    ("status-corrupt", "nas", "status {ws}/run_corrupt", ("run.json", "unreadable")),
    ("status-top-zero", "nas", "status {ws}/run --top 0", ("--top",)),
    ("export-no-such-trial", "nas", "export {ws}/run --trial 999 --out {ws}/exported", ("999",)),
    ("export-format", "nas", "export {ws}/run --format pdf --out {ws}/exported", ("pdf", "format")),
    ("export-missing-run", "nas", "export {ws}/nowhere --out {ws}/exported", ("nowhere",)),
    ("export-out-is-file", "nas", "export {ws}/run --out {ws}/afile.txt", ("afile.txt",)),
    ("report-not-a-run", "nas", "report {ws}/notarun --out {ws}/rep", ("notarun",)),
    ("report-missing", "nas", "report {ws}/nowhere --out {ws}/rep", ("nowhere",)),
    ("compare-missing", "nas", "compare {ws}/run {ws}/nowhere", ("nowhere",)),
    ("compare-objective", "nas", "compare {ws}/run {ws}/run --objectives acc,flops", ("flops",)),
    ("runs-missing", "nas", "runs {ws}/nowhere", ("nowhere",)),
    ("runs-file", "nas", "runs {ws}/afile.txt", ("afile.txt", "not a directory")),
    # -- nas profile / sample / train / latency / score / fidelity -----------------------------
    ("profile-unknown-zoo", "nas", "profile van_b9", ("van_b9", "zoo")),
    ("profile-missing-yaml", "nas", "profile {ws}/nope.yaml", ("nope.yaml",)),
    ("profile-empty-yaml", "nas", "profile {ws}/empty.yaml", ("empty.yaml", "empty")),
    ("profile-binary-yaml", "nas", "profile {ws}/binary.yaml", ("binary.yaml", "binary")),
    ("profile-list-yaml", "nas", "profile {ws}/list.yaml", ("list.yaml", "mapping")),
    ("profile-broken-yaml", "nas", "profile {ws}/broken.yaml", ("broken.yaml", "yaml")),
    ("profile-malicious-yaml", "nas", "profile {ws}/evil.yaml", ("evil.yaml", "python/object")),
    ("profile-malicious-nested", "nas", "profile {ws}/evil_nested.yaml", ("evil_nested.yaml", "python/object")),
    ("profile-unknown-block", "nas", "profile {ws}/unknown_block.yaml", ("unknown block type", "transformerx")),
    ("profile-bad-resolution", "nas", "profile {ws}/bad_res.yaml", ("resolution", "100")),
    ("profile-resolution-arg", "nas", "profile van_b0 --resolution 100", ("resolution", "100")),
    ("sample-zero", "nas", "sample --trials 0 --out {ws}/samples", ("--trials", ">= 1")),
    ("sample-negative", "nas", "sample --trials -4 --out {ws}/samples", ("--trials", "-4")),
    ("sample-malicious-space", "nas", "sample --space {ws}/evil.yaml --out {ws}/samples", ("evil.yaml", "python/object")),
    ("sample-out-is-file", "nas", "sample --out {ws}/afile.txt", ("afile.txt", "not a directory")),
    ("train-epochs-zero", "nas", "train van_b0 --epochs 0", ("--epochs", ">= 1")),
    ("train-batch-negative", "nas", "train van_b0 --batch-size -8", ("--batch-size",)),
    ("train-unknown-model", "nas", "train cmt_xxl", ("cmt_xxl",)),
    ("train-unreadable-data", "nas", "train van_b0 --data cifar10:{ws}/cifar_garbage", ("cifar_garbage",)),
    ("train-malicious-data", "nas", "train van_b0 --data cifar10:{ws}/cifar_evil", ("cifar_evil", "refusing")),
    ("latency-threads-zero", "nas", "latency van_b0 --threads 0", ("--threads",)),
    ("latency-unknown-device", "nas", "latency van_b0 --latency-device tpu", ("tpu",)),
    ("score-unknown-proxy", "nas", "score van_b0 --proxy vibes", ("--proxy", "vibes")),
    ("score-malicious-yaml", "nas", "score {ws}/evil.yaml --proxy synflow", ("evil.yaml", "python/object")),
    ("fidelity-n-zero", "nas", "fidelity --trials 0", ("--trials",)),
    ("fidelity-malicious-space", "nas", "fidelity --space {ws}/evil.yaml", ("evil.yaml", "python/object")),
    ("fidelity-missing-data", "nas", "fidelity --data imagefolder:{ws}/nowhere", ("nowhere",)),
    ("unknown-command", "nas", "serach --budget 4G", ("serach",)),
    # -- scaling ----------------------------------------------------------------------------------
    ("expand-phi-text", "scaling", "expand --config cmt_s --phi abc", ("phi", "abc")),
    ("expand-phi-absurd", "scaling", "expand --config cmt_s --phi 50", ("phi", "absurd", "MACs")),
    ("expand-phi-absurd-negative", "scaling", "expand --config cmt_s --phi -1000", ("phi", "absurd")),
    ("expand-phi-nan", "scaling", "expand --config cmt_s --phi nan", ("phi", "nan")),
    ("expand-alpha-below-one", "scaling", "expand --config cmt_s --phi 1 --alpha 0.9", ("alpha", "> 1")),
    ("expand-beta-negative", "scaling", "expand --config cmt_s --phi 1 --beta -1.3", ("beta",)),
    ("expand-unknown-zoo", "scaling", "expand --config cmt_q --phi 1", ("cmt_q",)),
    ("expand-malicious-yaml", "scaling", "expand --config {ws}/evil.yaml --phi 1", ("evil.yaml", "python/object")),
    ("expand-binary-yaml", "scaling", "expand --config {ws}/binary.yaml --phi 1", ("binary.yaml", "binary")),
    ("expand-empty-yaml", "scaling", "expand --config {ws}/empty.yaml --phi 1", ("empty.yaml", "empty")),
    ("family-phis-text", "scaling", "family --config cmt_s --phis 1,abc --out {ws}/fam", ("abc",)),
    ("family-phi-absurd", "scaling", "family --config cmt_s --phis 0,25 --out {ws}/fam", ("absurd", "MACs")),
    ("family-unknown-block", "scaling", "family --config {ws}/unknown_block.yaml --out {ws}/fam", ("transformerx",)),
    ("family-out-is-file", "scaling", "family --config cmt_s --out {ws}/afile.txt", ("afile.txt",)),
    ("family-names-count", "scaling", "family --config cmt_s --names a,b --out {ws}/fam", ("--names",)),
    ("coeffs-epochs-zero", "scaling", "coeffs --config cmt_s --epochs 0", ("--epochs",)),
    ("coeffs-target-negative", "scaling", "coeffs --config cmt_s --target -1", ("--target",)),
    ("coeffs-malicious-data", "scaling", "coeffs --config cmt_s --data cifar10:{ws}/cifar_evil", ("cifar_evil",)),
    ("coeffs-malicious-yaml", "scaling", "coeffs --config {ws}/evil_new.yaml", ("evil_new.yaml", "python/object")),
]


def _expand(text: str, ws: Path) -> str:
    return text.format(
        ws=ws,
        smallest_512=smallest_macs(ws / "space_512.yaml") if "{smallest_512}" in text else "",
        smallest_default=smallest_macs(None) if "{smallest_default}" in text else "",
    )


def test_enough_cases() -> None:
    commands = {(prog, argv.split()[0]) for _, prog, argv, _ in CASES}
    assert len(CASES) >= 30
    for prog, sub in [("nas", c) for c in ("search", "profile", "sample", "train", "latency", "score", "status",
                                           "export", "report", "compare", "runs", "fidelity")] + \
                     [("scaling", c) for c in ("expand", "family", "coeffs")]:
        assert (prog, sub) in commands, f"no bad-input case for {prog} {sub}"


@pytest.mark.parametrize("case_id, prog, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id: str, prog: str, argv: str, words: tuple[str, ...], ws: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(ws)  # a command defaulting to a relative path would write here: caught below
    before = tree_digest(ws)
    args = [_expand(a, ws) for a in argv.split()]
    code, out, err = cli(*args, main=scaling_main if prog == "scaling" else None)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err + out
    assert out == "", f"a rejected command printed {out!r}"
    for word in words:
        assert _expand(word, ws).lower() in lines[0].lower(), f"{_expand(word, ws)!r} not in {lines[0]!r}"
    assert not (ws / MARKER).exists(), "a malicious file ran code"
    assert tree_digest(ws) == before, "the workspace (run directory included) changed"
    if prog == "nas" and args[0] == "search":
        import ray

        assert not ray.is_initialized(), "bad input must be refused before Ray starts"


# Real console entries: no traceback from the interpreter either (each pays torch's import).
SUBPROCESS_CASES = [
    ("nas", "search --budget 4GFLOP --out {ws}/new", ("4GFLOP",)),
    ("nas", "search --budget 4G --space {ws}/evil.yaml --out {ws}/new", ("python/object",)),
    ("nas", "search --resume --out {ws}/run --budget 2G", ("--budget", "differs")),
    ("scaling", "expand --config cmt_s --phi 40", ("absurd",)),
]


def test_bad_input_console_entries(ws: Path) -> None:
    before = tree_digest(ws)
    procs = []
    for prog, argv, words in SUBPROCESS_CASES:
        module = "nas.cli" if prog == "nas" else "scaling.cli"
        cmd = [sys.executable, "-m", module, *[_expand(a, ws) for a in argv.split()]]
        procs.append((cmd, words, subprocess.Popen(cmd, cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for cmd, words, proc in procs:  # started together: the imports overlap
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, f"{cmd}: exit {proc.returncode}; {err}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err + out, f"{cmd}: {err!r}"
        assert all(w.lower() in lines[0].lower() for w in words), f"{cmd}: {lines[0]!r}"
    assert not (ws / MARKER).exists()
    assert tree_digest(ws) == before

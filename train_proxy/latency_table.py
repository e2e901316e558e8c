"""Latency prediction from a per-block lookup table, measured once per device and cached on disk.

A network's latency is predicted as the sum of the latencies of its parts, each measured alone:

    stem + sum over stages (patch embed + depth x block + stage-end norm) + head

Every distinct part (a block type with all the knobs it reads, at its feature-map size; a patch
embedding with its channels, kernel, stride and norm at its input size; the stem; the head) is an
entry of a table. Entries are measured lazily the first time a network needs them, with the very
timing method used for whole networks (`train_proxy.latency.time_module`), on small modules built
from the real building blocks (`search_space.blocks`), so a search measures each distinct block
once and then predicts in microseconds.

Memory layout: ``LayerNorm2d`` (the permute trick) hands on channels_last-strided tensors, and
convolutions and elementwise ops keep that layout, so after the first LayerNorm nearly every part
of a network runs on NHWC-strided inputs, and the same conv is up to 3x slower or faster in one
layout than the other. An entry is therefore keyed by the layout of its input too (``nchw`` or
``nhwc``) and records the layout of its output; a prediction walks the network from the image's
layout, as the real forward pass does. (Measured on the development CPU: parts timed on NCHW
inputs ran up to 3x faster than inside the network, and predictions of 12 random networks at
224 px came out low, median -6 %, worst -31 %; with layouts: median +3 %.)

Timing: each entry's median comes from at most ``repeats`` timed runs after at most ``warmup``
untimed ones; with ``adaptive`` (the default) warm-up stops once two runs agree within 10 % and
timing once the 95 % interval of the median is within +-5 % of it, after at least 5 runs
(`train_proxy.latency.median_known`), and the forward pass that reads an entry's output layout
is its first warm-up run. Measured on the development CPU (docs/throughput.md), this took the
default space's table from 26 forward passes per entry to about 8, with the predictor's error
against measured networks unchanged.

The table is keyed by the device it was measured on: device type, CPU model string or CUDA device
name, thread count, batch size, torch version (and the channels_last / bf16 / clock options).
Each key has its own JSON file under the cache directory:

    argument ``cache_dir``  >  ``$HYBRID_NAS_CACHE/latency``  >  ``~/.cache/hybrid-nas/latency``

Writes merge with what is on disk under a file lock and replace the file atomically, so several
processes (parallel search trials) can share one table.

Validation. Every table read from disk passes the same checks (`check_table`), whether it is a
portable table (`LatencyPredictor.from_table`, `nas latency-table check`, a build continued with
``--out``) or this per-device cache: the file is read by `search_space.files.read_json` (regular
files only, at most 64 MiB: a FIFO or ``/dev/zero`` is refused, never read), and every entry's
``ms`` must be a finite number in [0, `MAX_ENTRY_MS`], ``overhead_ms`` finite and within
+-`MAX_OVERHEAD_MS`, correction factors finite and in (0, `MAX_CORRECTION`]. What differs is what
happens to a file that fails: a portable table cannot be measured again here, so it is refused
with one line naming the file and the problem; the cache can, so a cache that fails is treated as
corrupt, exactly as an unparsable one always was: a one-line warning names the file and the
problem, not one of its entries is used (a negative or NaN entry can never make a candidate
"fit" ``--latency-ms``), the parts are measured again and the next save replaces the file. A
symbolic link in place of either file is refused (the writer never writes through one), and the
lock file next to the table is opened without following links and without blocking on a FIFO
(`search_space.files.held_lock`).

Per-network constant: a whole-network forward also pays for the Python dispatch between parts
(``HybridNet.forward``, the stage loops), which no entry contains; each entry's timing in turn
contains one call of its own wrapper. The two nearly cancel; the residual is measured once per
device as ``overhead_ms`` (a minimal network timed back to back with each of its parts, median of
the paired differences) and added to every prediction. On the 2-core development CPU it measured
0.0-0.4 ms against networks of 40-1000 ms, i.e. the constant is negligible there; it is kept
because it is cheap (about a second once per device) and matters more where per-call dispatch is
a larger share (small inputs, fast accelerators). See ``benchmarks/bench_latency_predictor.py``
for the error against measured whole networks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from search_space import ArchConfig, StageConfig
from search_space.blocks.heads import ClassifierHead
from search_space.blocks.layers import LayerNorm2d
from search_space.blocks.registry import get_block
from search_space.blocks.stems import PatchEmbed, build_stem
from search_space.config import MAX_RESOLUTION, HeadConfig, StemConfig
from search_space.errors import UserError
from search_space.files import held_lock, read_json, write_json_atomic
from search_space.walk import network_parts as walk_parts

from .latency import (
    MEDIAN_TOLERANCE,
    MIN_REPEATS,
    device_name,
    pinned_threads,
    resolve_device,
    time_callable,
    time_module,
)
from .runtimes import check_runtime, prepare, runtime_version

CACHE_ENV = "HYBRID_NAS_CACHE"
# Bounds of a table's numbers (`check_table`). Entries are the median milliseconds of one part
# (a block, an embedding) on one batch: CMT-B's largest block takes tens of ms on one CPU thread.
MAX_ENTRY_MS = 3_600_000.0  # an hour for one part: no measurement, a damaged file
MAX_OVERHEAD_MS = 1_000.0  # the per-network dispatch constant: 0.0-0.4 ms measured, slightly negative on CUDA
MAX_CORRECTION = 1_000.0  # calibration factors: measured / predicted per block family, ~1
TABLE_FORMAT = 2  # 2: entries keyed by input layout, with their output layout
DEFAULT_TABLE_WARMUP = 5
DEFAULT_TABLE_REPEATS = 20

# Stage fields that never change a block's own latency (they belong to the patch embedding,
# the stage-end norm, or multiply the block).
_NOT_BLOCK_KNOBS = frozenset({"depth", "embed_kernel", "embed_stride", "embed_norm", "out_norm"})


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "latency"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hybrid-nas" / "latency"


# -- table entries --------------------------------------------------------------------------


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def block_knobs(stage: StageConfig) -> dict[str, Any]:
    """The stage fields a block's latency depends on.

    Knobs of other block types that this one does not read (``BlockType.knobs``) are dropped, so
    e.g. two VAN stages differing only in an unused ``heads`` share one entry.
    """
    block_type = get_block(stage.block)
    return {
        f.name: getattr(stage, f.name)
        for f in fields(StageConfig)
        if f.name not in _NOT_BLOCK_KNOBS and block_type.reads(f.name)
    }


LAYOUTS = ("nchw", "nhwc")


def layout_of(tensor: torch.Tensor) -> str:
    """``nhwc`` for a channels_last-strided 4-d tensor, else ``nchw``."""
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return "nchw"


@dataclass(frozen=True)
class Part:
    """One summand of a prediction: a table entry times how often the network runs it."""

    name: str  # "stem", "stage2.embed", "stage2.block", "stage2.out_norm", "head"
    entry: dict[str, Any]
    count: int

    def key(self, layout: str) -> str:
        """The table key of this part fed an input in ``layout`` (made once per layout)."""
        cache = self.__dict__.setdefault("_keys", {})
        if layout not in cache:
            cache[layout] = _key({**self.entry, "layout": layout})
        return cache[layout]


def network_parts(cfg: ArchConfig, resolution: int | None = None) -> tuple[Part, ...]:
    """The table entries of a network run at ``resolution`` (default: its own)."""
    return _network_parts(cfg, resolution or cfg.resolution)


@lru_cache(maxsize=16384)  # configs are frozen and hashable; a search predicts the same ones again (and the
# default space's 8,712 covering networks are walked several times while its table is built)
def _network_parts(cfg: ArchConfig, res: int) -> tuple[Part, ...]:
    """The walk of `search_space.walk`, one entry per distinct part (a stage's blocks share one)."""
    parts: list[Part] = []
    for p in walk_parts(cfg, res):
        stage = cfg.stages[p.stage] if p.stage is not None else None
        if p.kind == "stem" and cfg.stem.kind != "none":
            entry = {"part": "stem", "kind": cfg.stem.kind, "in": p.in_channels, "out": p.out_channels,
                     "res": p.in_size}  # fmt: skip
            parts.append(Part("stem", entry, 1))
        elif p.kind == "embed":
            assert stage is not None
            entry = {"part": "embed", "in": p.in_channels, "out": p.out_channels, "kernel": stage.embed_kernel,
                     "stride": stage.embed_stride, "norm": stage.embed_norm, "in_size": p.in_size, "out_size": p.size}  # fmt: skip
            parts.append(Part(p.group + ".embed", entry, 1))
        elif p.kind == "block" and p.index == 0:  # the stage's blocks are identical: one entry, depth times
            assert stage is not None
            entry = {"part": "block", **block_knobs(stage), "size": p.size}
            if get_block(stage.block).build_shared is not None:
                entry["config_size"] = p.config_size  # shared modules (CMT's bias) are sized for the config
            parts.append(Part(p.group + ".block", entry, stage.depth))
        elif p.kind == "out_norm":
            assert stage is not None
            entry = {"part": "out_norm", "kind": stage.out_norm, "width": p.out_channels, "size": p.size}
            parts.append(Part(p.group + ".out_norm", entry, 1))
        elif p.kind == "head":
            entry = {"part": "head", "kind": cfg.head.kind, "in": p.in_channels, "fc_dim": cfg.head.fc_dim,
                     "classes": cfg.num_classes, "size": p.in_size}  # fmt: skip
            parts.append(Part("head", entry, 1))
    return tuple(parts)  # the shared module (CMT's bias) is timed inside its blocks' entry


def _read_correction(raw: Any, path: Path) -> dict[str, float] | None:
    if raw is None:
        return None
    problem = _correction_problem(raw)
    if problem:
        raise UserError(f"{path}: malformed latency table ({problem})")
    return {k: float(v) for k, v in raw.items()}


def _correction_problem(raw: Any) -> str | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and all(
        isinstance(k, str) and _is_number(v) and math.isfinite(v) and 0 < v <= MAX_CORRECTION for k, v in raw.items()
    )
    return None if ok else f"'correction' must map groups to factors in (0, {MAX_CORRECTION:g}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry_problem(value: Any) -> str | None:
    """What is wrong with one table entry ({"ms": median, "out": layout}), or None."""
    if not isinstance(value, dict):
        return "not an object"
    ms = value.get("ms")
    if not _is_number(ms):
        return f"'ms' is {_short_repr(ms)}, not a number"
    if not math.isfinite(ms):
        return f"'ms' is {ms}"
    if ms < 0:
        return f"'ms' is negative ({ms})"
    if ms > MAX_ENTRY_MS:
        return f"'ms' is {ms:.3g}, above {MAX_ENTRY_MS:.0f} (an hour)"
    if value.get("out") not in LAYOUTS:
        return f"'out' is {_short_repr(value.get('out'))}, not one of {', '.join(LAYOUTS)}"
    return None


def _short_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**15 else "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."


def check_table(data: Any, path: Path) -> dict[str, Any]:
    """``data`` (a parsed table file) if it is a well-formed latency table; else a one-line
    `UserError` naming ``path`` and the first problem. The one validation of every table read
    from disk: portable tables and the per-device cache alike (see the module docstring)."""
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise UserError(f"{path}: not a latency table of format {TABLE_FORMAT}")
    key = data.get("key")
    if not isinstance(key, dict) or key.get("device") not in ("cpu", "cuda") or not isinstance(key.get("name"), str):
        raise UserError(f"{path}: malformed latency table (its 'key' must name the device)")
    for field_name in ("threads", "batch_size"):
        if not isinstance(key.get(field_name), int) or isinstance(key.get(field_name), bool) or key[field_name] < 1:
            raise UserError(f"{path}: malformed latency table ('key.{field_name}' must be a positive integer)")
    entries = data.get("entries")
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{path}: malformed latency table (no entries)")
    for k, v in entries.items():
        problem = _entry_problem(v)
        if problem:
            raise UserError(f"{path}: malformed latency table (entry {k[:120]!r}: {problem})")
    overhead = data.get("overhead_ms")
    if overhead is not None and (
        not _is_number(overhead) or not math.isfinite(overhead) or abs(overhead) > MAX_OVERHEAD_MS
    ):
        raise UserError(f"{path}: malformed latency table ('overhead_ms' must be a finite number of at most "
                        f"{MAX_OVERHEAD_MS:g} ms either way, got {_short_repr(overhead)})")  # fmt: skip
    problem = _correction_problem(data.get("correction"))
    if problem:
        raise UserError(f"{path}: malformed latency table ({problem})")
    for name, kind in (("timing", dict), ("calibration", list)):
        if data.get(name) is not None and not isinstance(data[name], kind):
            raise UserError(f"{path}: malformed latency table ('{name}' must be {'an object' if kind is dict else 'a list'})")
    resolution = data.get("resolution")
    if resolution is not None and (not isinstance(resolution, int) or isinstance(resolution, bool)
                                   or not 32 <= resolution <= MAX_RESOLUTION):  # fmt: skip
        raise UserError(f"{path}: malformed latency table ('resolution' must be a whole number of pixels)")
    return data


def _refuse_link(path: Path) -> None:
    """A symbolic link where a table belongs is refused (the writer never writes through one)."""
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; a latency table must be a regular file")


def _load_json(path: Path, *, missing_ok: bool = False) -> Any:
    """The parsed JSON of a table file through the project's guarded reader (a regular file of at
    most 64 MiB); None when missing and ``missing_ok``. Every problem is one `UserError` line."""
    try:
        data = read_json(path, "latency table", missing_ok=missing_ok)
    except UserError as exc:  # "not valid JSON (why)" reads "not a latency table (why)"
        text = str(exc)
        if ": not valid JSON" in text:
            why = text.split(": not valid JSON", 1)[1].strip() or "(not valid JSON)"
            raise UserError(f"{path}: not a latency table {why}") from None
        raise
    return data


def _entry_text(entry: dict[str, Any]) -> str:
    """A table entry in words for error messages (bounded)."""
    text = " ".join(f"{k}={v}" for k, v in entry.items())
    return text if len(text) <= 200 else text[:197] + "..."


def _key_text(key: Any) -> str:
    if not isinstance(key, dict):
        return "unknown settings"
    return (f"{key.get('runtime', 'torch')} on {key.get('device')} ({key.get('name')}), {key.get('threads')} thread(s), "
            f"batch {key.get('batch_size')}, torch {key.get('torch')}")  # fmt: skip


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _read_table(path: Path) -> dict[str, Any]:
    """A portable table file, checked (`check_table`): one-line errors for a missing, oversized,
    non-regular or malformed file."""
    _refuse_link(path)
    return check_table(_load_json(path), path)


class _BlockProbe(nn.Module):
    """One block with its stage's shared module, callable like a plain layer."""

    def __init__(self, block: nn.Module, shared: nn.Module | None) -> None:
        super().__init__()
        self.block, self.shared = block, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.shared)


def build_entry(entry: dict[str, Any]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The module an entry times and its input's (channels, height, width)."""
    part = entry["part"]
    if part == "stem":
        module, _ = build_stem(StemConfig(entry["kind"], entry["out"]), entry["in"])
        return module, (entry["in"], entry["res"], entry["res"])
    if part == "embed":
        stage = StageConfig(block="van", depth=1, width=entry["out"], embed_kernel=entry["kernel"],
                            embed_stride=entry["stride"], embed_norm=entry["norm"])  # fmt: skip
        return PatchEmbed(entry["in"], stage), (entry["in"], entry["in_size"], entry["in_size"])
    if part == "block":
        knobs = {k: v for k, v in entry.items() if k not in ("part", "size", "config_size")}
        stage = StageConfig(depth=1, **knobs)
        block_type = get_block(stage.block)
        config_size = entry.get("config_size", entry["size"])
        shared = block_type.build_shared(stage, config_size) if block_type.build_shared else None
        return _BlockProbe(block_type.build(stage, config_size), shared), (stage.width, entry["size"], entry["size"])
    if part == "out_norm":
        return LayerNorm2d(entry["width"], eps=1e-6), (entry["width"], entry["size"], entry["size"])
    if part == "head":
        module = ClassifierHead(HeadConfig(entry["kind"], entry["fc_dim"]), entry["in"], entry["classes"])
        return module, (entry["in"], entry["size"], entry["size"])
    raise ValueError(f"unknown latency table entry {entry}")


# -- the predictor --------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "device"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path``'s ``.lock`` file next to it (waiting for other
    writers). `held_lock` opens it with O_NOFOLLOW | O_NONBLOCK and refuses anything but a
    regular file: a planted symbolic link or FIFO is one line, never followed or waited on."""
    with held_lock(path.with_suffix(".lock"), root=path.parent, blocking=True):
        yield


class LatencyPredictor:
    """Predicted latency (ms per batch) of any `ArchConfig` from cached per-block timings.

    Entries hold the median of ``repeats`` timed runs after ``warmup`` (the statistic
    `measure_latency` reports). ``clock="cpu"`` builds a table in thread CPU time (single-threaded
    CPU only; see `train_proxy.latency.time_callable`) to compare with measurements taken the same
    way. ``measurements`` counts the entries this instance timed itself (cache misses); entries
    found on disk are never re-measured.
    """

    def __init__(
        self,
        device: str = "cpu",
        threads: int = 1,
        batch_size: int = 1,
        cache_dir: str | Path | None = None,
        *,
        warmup: int = DEFAULT_TABLE_WARMUP,
        repeats: int = DEFAULT_TABLE_REPEATS,
        channels_last: bool = False,
        bf16: bool = False,
        clock: str = "wall",
        progress: bool = False,
        runtime: str = "torch",
        table_file: str | Path | None = None,
        adaptive: bool = True,
    ) -> None:
        if threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        self.dev = resolve_device(device)
        if runtime != "torch":
            check_runtime(runtime, self.dev)
        self.runtime = runtime
        self.frozen = False  # a table read with from_table: never measured here
        self.threads, self.batch_size = threads, batch_size
        self.warmup, self.repeats = warmup, repeats
        self.adaptive = adaptive  # warmup and repeats are the most runs (train_proxy.latency.median_known)
        self.channels_last = channels_last
        self.bf16 = bf16 and self.dev.type == "cuda"
        self.progress, self.clock = progress, clock
        self.device_key: dict[str, Any] = {
            "device": self.dev.type,
            "name": device_name(self.dev),
            "threads": threads,
            "batch_size": batch_size,
            "torch": torch.__version__,
            "channels_last": channels_last,
            "bf16": self.bf16,
            "clock": clock,
        }
        if runtime != "torch":  # (torch tables keep the keys, and cache files, they always had)
            self.device_key.update(runtime=runtime, runtime_version=runtime_version(runtime))
        digest = hashlib.sha256(_key(self.device_key).encode()).hexdigest()[:12]
        if table_file is not None:  # a portable table: one named file, refused if made otherwise
            self.path = Path(table_file)
            self.cache_dir = self.path.parent
            self._strict_file = True
        else:
            self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
            rt = "" if runtime == "torch" else f"{runtime}-"
            name = f"{rt}{self.dev.type}-{_slug(self.device_key['name'])}-t{threads}-b{batch_size}-{digest}.json"
            self.path = self.cache_dir / name
            self._strict_file = False
        self._start_empty()
        self._load()

    def _start_empty(self) -> None:
        """The state of a table before anything is read or measured (every constructor's)."""
        self.entries: dict[str, dict[str, Any]] = {}  # key -> {"ms": median, "out": output layout}
        self.overhead: float | None = None  # per-network constant (ms)
        self.measurements = 0
        self._plans: dict[tuple[ArchConfig, int], tuple[tuple[str, str, int], ...]] = {}
        self._bar: Any = None  # progress bar while ensure() measures
        self.calibration: list[dict[str, Any]] = []  # whole networks measured: features and latency
        self.correction: dict[str, float] | None = None  # group -> coefficient (see `calibrate`)
        self.resolution: int | None = None  # the deploy resolution a built table was made for

    @classmethod
    def for_table_file(cls, path: str | Path, *, device: str = "cpu", threads: int = 1, batch_size: int = 1,
                       runtime: str = "torch", warmup: int = DEFAULT_TABLE_WARMUP,
                       repeats: int = DEFAULT_TABLE_REPEATS, resolution: int | None = None) -> "LatencyPredictor":  # fmt: skip
        """A portable table being built into ``path`` on this machine (continued if it exists)."""
        predictor = cls(device, threads, batch_size, warmup=warmup, repeats=repeats, runtime=runtime,
                        table_file=path)  # fmt: skip
        predictor.resolution = resolution if resolution is not None else predictor.resolution
        return predictor

    @classmethod
    def from_table(cls, path: str | Path) -> "LatencyPredictor":
        """A table built elsewhere (``nas latency-table build`` on the target): it predicts that
        device's latency and is never measured into here; a missing entry is an error."""
        data = _read_table(Path(path))
        key = data["key"]
        predictor = cls.__new__(cls)
        predictor.dev = torch.device(key["device"])  # the target's, possibly absent here
        predictor.runtime = key.get("runtime", "torch")
        predictor.frozen, predictor._strict_file = True, True
        predictor.threads, predictor.batch_size = int(key["threads"]), int(key["batch_size"])
        timing = data.get("timing") or {}
        predictor.warmup, predictor.repeats = timing.get("warmup"), timing.get("repeats")
        predictor.adaptive = bool(timing.get("adaptive", False))
        predictor.channels_last, predictor.bf16 = bool(key.get("channels_last")), bool(key.get("bf16"))
        predictor.progress, predictor.clock = False, str(key.get("clock", "wall"))
        predictor.device_key = dict(key)
        predictor.path, predictor.cache_dir = Path(path), Path(path).parent
        predictor._start_empty()
        predictor.entries = dict(data["entries"])
        predictor.overhead = data.get("overhead_ms")
        predictor._take_extras(data)
        return predictor

    def describe(self) -> str:
        k = self.device_key
        return (f"{self.runtime} on {k['device']} ({k['name']}), {k['threads']} thread(s), batch {k['batch_size']}"
                + (", channels_last" if k.get("channels_last") else "") + (", bf16" if k.get("bf16") else ""))  # fmt: skip

    def table_info(self) -> dict[str, Any]:
        k = self.device_key
        return {"device": k["device"], "device_name": k["name"], "runtime": self.runtime, "threads": k["threads"],
                "batch_size": k["batch_size"], "torch": k.get("torch"), "runtime_version": k.get("runtime_version"),
                **self._timing()}  # fmt: skip

    def _timing(self) -> dict[str, Any]:
        """How entries were timed (stored in the table): with ``adaptive``, warm-up and repeats are
        the most runs, and timing stops once the median is known (`train_proxy.latency.median_known`)."""
        timing: dict[str, Any] = {"warmup": self.warmup, "repeats": self.repeats, "statistic": "median"}
        if self.adaptive:
            timing.update(adaptive=True, min_repeats=MIN_REPEATS, median_tolerance=MEDIAN_TOLERANCE)
        return timing

    @classmethod
    def for_device(
        cls,
        device: str = "cpu",
        threads: int = 1,
        batch_size: int = 1,
        cache_dir: str | Path | None = None,
        **options: Any,
    ) -> "LatencyPredictor":
        return cls(device, threads, batch_size, cache_dir, **options)

    # -- persistence ------------------------------------------------------------------------
    def _read_file(self, warn: bool = True) -> tuple[dict[str, dict[str, Any]], float | None, dict[str, Any]]:
        """(entries, overhead, the whole file) of this table's file, when it was made with this
        predictor's settings and passes `check_table`; nothing otherwise. A portable table (built
        into ``--out``) that fails is refused; a cache that fails is corrupt: nothing of it is used,
        a warning names it (``warn``), and the next save replaces it with measurements."""
        _refuse_link(self.path)
        try:
            data = _load_json(self.path, missing_ok=True)
        except UserError as exc:
            if self._strict_file:
                raise UserError(f"{exc}; move it away or use another --out") from None
            return self._corrupt(str(exc), warn)
        if data is None:
            return {}, None, {}
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT or data.get("key") != self.device_key:
            if self._strict_file:
                theirs = data.get("key") if isinstance(data, dict) else None
                raise UserError(f"{self.path}: a latency table measured with other settings ({_key_text(theirs)}); "
                                f"this build is {_key_text(self.device_key)}: use another --out")  # fmt: skip
            return {}, None, {}  # another format (an older version's cache): rebuilt, silently
        try:
            check_table(data, self.path)
        except UserError as exc:
            if self._strict_file:
                raise UserError(f"{exc}; move it away or use another --out") from None
            return self._corrupt(str(exc), warn)
        entries = {key: {"ms": float(value["ms"]), "out": value["out"]} for key, value in data["entries"].items()}
        overhead = data.get("overhead_ms")
        return entries, float(overhead) if overhead is not None else None, data

    def _corrupt(self, problem: str, warn: bool) -> tuple[dict[str, dict[str, Any]], None, dict[str, Any]]:
        """A cache that failed `check_table` (or could not be read): none of it is used."""
        if warn:
            print(f"warning: {problem}; ignoring this latency cache: its entries are measured again and the file "
                  "replaced", file=sys.stderr)  # fmt: skip
        return {}, None, {}

    def _load(self) -> None:
        entries, overhead, data = self._read_file()
        self.entries.update(entries)
        if overhead is not None:
            self.overhead = overhead
        if entries:
            self._take_extras(data)

    def _take_extras(self, data: dict[str, Any]) -> None:
        """A stored table's calibration, correction and resolution."""
        self.calibration = list(data.get("calibration") or [])
        self.correction = _read_correction(data.get("correction"), self.path)
        self.resolution = data.get("resolution")

    def _save(self) -> None:
        if self.frozen:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with _locked(self.path):
                on_disk, overhead, _ = self._read_file(warn=False)  # merge what others measured meanwhile
                self.entries = {**on_disk, **self.entries}
                if self.overhead is None:
                    self.overhead = overhead
                payload = {
                    "format": TABLE_FORMAT,
                    "key": self.device_key,
                    "timing": self._timing(),
                    "overhead_ms": self.overhead,
                    "resolution": self.resolution,
                    "versions": {"hybrid_nas": _version("hybrid-nas"), "torch": torch.__version__,
                                 "runtime": runtime_version(self.runtime)},  # fmt: skip
                    "calibration": self.calibration,
                    "correction": self.correction,
                    "entries": dict(sorted(self.entries.items())),
                }
                write_json_atomic(self.path, payload, indent=1)
        except OSError as exc:
            raise UserError(f"cannot write the latency table cache in {self.cache_dir} ({exc.strerror})") from None

    # -- measuring --------------------------------------------------------------------------
    def measure_entry(self, part: Part, layout: str) -> dict[str, Any]:
        """Time ``part`` on an input in ``layout``; record the median and the output's layout."""
        if self.frozen:
            raise UserError(f"{self.path}: no entry for {_entry_text(part.entry)} ({layout} input); the table does "
                            "not cover this architecture")  # fmt: skip
        with torch.random.fork_rng(devices=[]):  # building modules must not move the caller's RNG
            torch.manual_seed(0)
            module, shape = build_entry(part.entry)
            x = torch.randn(self.batch_size, *shape)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        warmup, out_layout = self.warmup, "nchw"  # ONNX Runtime is fed and returns contiguous arrays
        if self.runtime != "onnxruntime":  # the output's layout, from one forward pass as it will be timed
            module = module.to(self.dev).eval()
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
            with pinned_threads(self.threads), torch.inference_mode():
                out_layout = layout_of(module(x.to(self.dev)))
            if self.runtime == "torch" and not self.channels_last and not self.bf16:
                warmup = max(0, warmup - 1)  # that pass was exactly the first warm-up run
        times = time_module(
            module,
            x,
            device=self.dev,
            threads=self.threads,
            warmup=warmup,
            repeats=self.repeats,
            channels_last=self.channels_last,
            bf16=self.bf16,
            clock=self.clock,
            runtime=self.runtime,
            adaptive=self.adaptive,
        )
        record = {"ms": statistics.median(times), "out": out_layout}
        self.entries[part.key(layout)] = record
        self.measurements += 1
        return record

    def _measure_overhead(self, repeats: int = 30) -> float:
        """Per-network dispatch that no entry contains, from a minimal 4-stage network.

        Each repeat times the whole network once and then each of its parts once (the model's own
        submodules on the real intermediate tensors), back to back, so slow drifts in the load of
        a shared machine cancel in the paired difference. The constant is the median of
        ``whole - sum(parts)``. It may come out slightly negative (on CUDA, every part pays its
        own synchronisation).
        """
        from search_space import build_model

        stages = tuple(
            StageConfig(
                block="van", depth=2 if i == 2 else 1, width=8, mlp_ratio=1.0, out_norm="ln" if i == 3 else "none"
            )
            for i in range(4)
        )
        tiny = ArchConfig(stages=stages, name="overhead-probe", resolution=32, num_classes=10,
                          stem=StemConfig("conv3", 8))  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(tiny).to(self.dev).eval()
            x = torch.randn(self.batch_size, tiny.in_channels, tiny.resolution, tiny.resolution).to(self.dev)
        if self.channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        # Single-threaded CPU: time the probe in thread CPU time, which preemption by other
        # processes does not inflate (their scheduler slices otherwise swamp a sub-ms difference).
        clock = "cpu" if self.dev.type == "cpu" and self.threads == 1 else self.clock
        with pinned_threads(self.threads), torch.inference_mode(), autocast:
            calls = [(model.stem, x)]
            h = model.stem(x)
            for stage in model.stages:
                calls.append((stage.embed, h))
                h = stage.embed(h)
                for block in stage.blocks:
                    probe = _BlockProbe(block, stage.shared)
                    calls.append((probe, h))
                    h = probe(h)
                calls.append((stage.out_norm, h))
                h = stage.out_norm(h)
            calls.append((model.head, h))
            calls = [(m, t) for m, t in calls if not isinstance(m, nn.Identity)]  # not an entry
            if self.runtime == "torch":
                timed = [lambda: model(x)] + [lambda m=m, t=t: m(t) for m, t in calls]
            else:  # the whole network and each part in the runtime, as entries are timed
                inputs = [t.contiguous() if self.runtime == "onnxruntime" else t for _, t in calls]
                timed = [prepare(self.runtime, model, x, self.dev, self.threads).run] + [
                    prepare(self.runtime, m, t, self.dev, self.threads).run for (m, _), t in zip(calls, inputs)
                ]
            for fn in timed:  # warm every callable up
                time_callable(fn, dev=self.dev, warmup=self.warmup, repeats=1, clock=clock)
            diffs = []
            for _ in range(repeats):
                per_call = [time_callable(fn, dev=self.dev, warmup=0, repeats=1, clock=clock)[0] for fn in timed]
                diffs.append(per_call[0] - sum(per_call[1:]))
        return statistics.median(diffs)

    def _walk(
        self, cfg: ArchConfig, resolution: int | None, measure: bool
    ) -> tuple[list[tuple[str, str, int]], list[str]]:
        """Follow the parts from the image's layout: [(part name, entry key, count)], missing keys.

        Each part's input layout is the previous part's output layout (as in the real forward
        pass). A part repeated ``depth`` times may see one layout first and another afterwards
        (a VAN block fed NCHW outputs NCHW; after a LayerNorm everything is NHWC). With
        ``measure``, missing entries are timed on the way; without, the walk assumes a missing
        entry keeps its input's layout (used to list what a prediction would measure).
        """
        layout = "nhwc" if self.channels_last else "nchw"
        plan: list[tuple[str, str, int]] = []
        missing: list[str] = []
        for part in network_parts(cfg, resolution):
            remaining = part.count
            while remaining:
                key = part.key(layout)
                record = self.entries.get(key)
                if record is None:
                    if not measure:
                        if key not in missing:
                            missing.append(key)
                        plan.append((part.name, key, remaining))
                        break
                    record = self.measure_entry(part, layout)
                    if self._bar is not None:
                        self._bar.update(1)
                steady = record["out"] == layout  # later repeats see the same layout again
                plan.append((part.name, key, remaining if steady else 1))
                remaining = 0 if steady else remaining - 1
                layout = record["out"]
        return plan, missing

    def missing(self, cfg: ArchConfig, resolution: int | None = None) -> list[str]:
        """Table keys a prediction of ``cfg`` would still have to measure (each once)."""
        return self._walk(cfg, resolution, measure=False)[1]

    def ensure(self, cfg: ArchConfig, resolution: int | None = None) -> int:
        """Measure and cache whatever ``cfg`` needs; returns how many entries were measured."""
        todo = len(self.missing(cfg, resolution))
        need_overhead = self.overhead is None and not self.frozen  # a foreign table without one: 0
        if not todo and not need_overhead:
            return 0
        before = self.measurements
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=todo + need_overhead, desc="latency table", unit="entry", leave=False)
        try:
            self._walk(cfg, resolution, measure=True)
            if need_overhead:
                self.overhead = self._measure_overhead()
                if self._bar is not None:
                    self._bar.update(1)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        self._save()
        return self.measurements - before

    def prefill(
        self,
        networks: Iterable[ArchConfig],
        resolution: int | None = None,
        on_measure: Callable[[int], None] | None = None,
    ) -> int:
        """Measure every entry a prediction of any network mixing the parts of ``networks`` can need.

        A search calls this before its trials start, with networks that together hold every part
        its space can produce, so that no entry is timed later while trials load the machine.
        Parts are grouped by position in the network (stem, each stage's embed, block and norm,
        head), and each position gets every input layout the previous position can hand on (or
        the one before, where a position may be absent): a superset of what any one walk needs.
        A repeated part (a stage's blocks) is followed over its repeats, as `_walk` does.
        ``on_measure(n)`` is told the running count of measured entries. Returns that count.
        """
        order, slots, shapes = self._positions(networks, resolution)
        before = self.measurements

        def measure(part: Part, layout: str) -> dict[str, Any]:
            record = self.measure_entry(part, layout)
            if on_measure is not None:
                on_measure(self.measurements - before)
            if (self.measurements - before) % 50 == 0:
                self._save()  # an interrupted warm-up keeps what it measured
            return record

        try:
            self._cover(order, slots, shapes, measure)
            if self.overhead is None:
                self.overhead = self._measure_overhead()
        finally:
            self._save()
        return self.measurements - before

    def _cover(self, order: list[str], slots: dict[str, dict[str, Part]], shapes: set[frozenset[str]],
               missing: Callable[[Part, str], dict[str, Any] | None]) -> None:  # fmt: skip
        """Walk every position with every input layout it can be handed (see `prefill`);
        ``missing(part, layout)`` supplies an absent entry (measured) or None (noted, and the walk
        assumes it keeps its input's layout)."""
        optional = {name for name in order if any(name not in shape for shape in shapes)}
        layouts_in = {"nhwc" if self.channels_last else "nchw"}
        for name in order:
            layouts_out: set[str] = set()
            for part in slots[name].values():
                for layout in sorted(layouts_in):
                    remaining = part.count
                    while remaining:  # the walk of one position, as in `_walk`
                        record = self.entries.get(part.key(layout)) or missing(part, layout)
                        out = record["out"] if record is not None else layout
                        steady = out == layout
                        remaining = 0 if steady else remaining - 1
                        layout = out
                        layouts_out.add(layout)
            layouts_in = layouts_out | layouts_in if name in optional else layouts_out

    def _positions(self, networks: Iterable[ArchConfig], resolution: int | None = None):  # type: ignore[no-untyped-def]
        order: list[str] = []
        slots: dict[str, dict[str, Part]] = {}
        shapes: set[frozenset[str]] = set()
        for cfg in networks:
            previous = -1
            names = []
            for part in network_parts(cfg, resolution):
                if part.name not in slots:
                    order.insert(previous + 1, part.name)
                    slots[part.name] = {}
                previous = order.index(part.name)
                key = part.key("any")
                known = slots[part.name].get(key)
                if known is None or known.count < part.count:  # keep the most repeats of each entry
                    slots[part.name][key] = part
                names.append(part.name)
            shapes.add(frozenset(names))
        return order, slots, shapes

    def uncovered(self, networks: Iterable[ArchConfig], resolution: int | None = None) -> list[tuple[Part, str]]:
        """Entries (part, input layout) that predictions of the networks' mixes would lack."""
        gaps: list[tuple[Part, str]] = []
        self._cover(*self._positions(networks, resolution), lambda part, layout: gaps.append((part, layout)))
        return gaps

    def require_cover(self, space: Any) -> None:
        """Refuse, with one line naming the first missing entry, a table that cannot predict every
        candidate of ``space`` at its deploy resolution."""
        from .latency_warmup import covering_networks

        gaps = self.uncovered(covering_networks(space))
        if gaps:
            part, layout = gaps[0]
            raise UserError(f"{self.path}: does not cover space '{space.name}' at {space.resolution} px: no entry "
                            f"for {_entry_text(part.entry)} ({layout} input){f' and {len(gaps) - 1} more' if len(gaps) > 1 else ''}")  # fmt: skip

    # -- predicting -------------------------------------------------------------------------
    @property
    def overhead_ms(self) -> float:
        return self.overhead or 0.0

    def _plan(self, cfg: ArchConfig, resolution: int | None) -> tuple[tuple[str, str, int], ...]:
        res = resolution or cfg.resolution
        plan = self._plans.get((cfg, res))
        if plan is None:
            self.ensure(cfg, res)
            plan = tuple(self._walk(cfg, res, measure=True)[0])
            self._plans[(cfg, res)] = plan  # entries never change once measured
        return plan

    def breakdown(self, cfg: ArchConfig, resolution: int | None = None) -> list[tuple[str, float]]:
        """Predicted ms per part (a repeated part's entries summed), plus the per-network ``overhead``."""
        rows: dict[str, float] = {}
        for name, key, count in self._plan(cfg, resolution):
            rows[name] = rows.get(name, 0.0) + self.entries[key]["ms"] * count
        return [*rows.items(), ("overhead", self.overhead_ms)]

    def predict(self, cfg: ArchConfig, resolution: int | None = None) -> float:
        """Predicted milliseconds per forward pass of one batch at ``resolution`` (default: cfg's):
        the sum of the parts, corrected by the table's calibration when it has one."""
        if not isinstance(cfg, ArchConfig):
            raise TypeError(f"predict() takes an ArchConfig, got {type(cfg).__name__}")
        if self.correction:
            features = self.features(cfg, resolution)
            value = sum(self.correction.get(group, 1.0) * ms for group, ms in features.items())
        else:
            value = self.predict_raw(cfg, resolution)
        if not math.isfinite(value) or value < 0:  # checked entries cannot give this: a last guard
            raise UserError(f"{self.path}: predicts {value:.6g} ms for {cfg.name}; the latency table is damaged "
                            "(move it away to measure again)")  # fmt: skip
        return value

    def predict_raw(self, cfg: ArchConfig, resolution: int | None = None) -> float:
        """The plain sum of the parts' table entries, plus the per-network overhead."""
        plan = self._plan(cfg, resolution)
        return sum(self.entries[key]["ms"] * count for _, key, count in plan) + self.overhead_ms

    def features(self, cfg: ArchConfig, resolution: int | None = None) -> dict[str, float]:
        """The raw prediction split by what it is spent on: each block family's blocks, and the
        rest (stem, patch embeddings, norms, head, per-network overhead). Sums to `predict_raw`."""
        groups = {f"block:{name}": 0.0 for name in sorted({st.block for st in cfg.stages})}
        groups["other"] = self.overhead_ms
        for name, key, count in self._plan(cfg, resolution):
            ms = self.entries[key]["ms"] * count
            if name.endswith(".block"):
                groups[f"block:{cfg.stages[int(name[len('stage'):].split('.')[0]) - 1].block}"] += ms
            else:
                groups["other"] += ms
        return groups

    def calibrate(self, networks: Sequence[ArchConfig], warmup: int = 3, repeats: int = 10,
                  on_network: Callable[[int], None] | None = None) -> dict[str, float]:  # fmt: skip
        """Measure whole ``networks`` in this table's runtime and fit the correction.

        A sum of parts timed alone misses what happens between them (operator fusion across a
        block's edges, caches warmed by the previous part or evicted by the next), and the bias
        differs by block family. scikit-learn's non-negative linear regression (no intercept) of
        measured latency on the raw prediction split by family (`features`) gives one factor per
        family; the points and the factors are stored in the table, so a table built on a target
        carries its own correction.
        """
        from sklearn.linear_model import LinearRegression

        from .latency import measure_latency

        if self.frozen:
            raise UserError(f"{self.path}: a table built elsewhere cannot be calibrated here")
        points = []
        for i, cfg in enumerate(networks):
            features = self.features(cfg)
            result = measure_latency(cfg, device=str(self.dev), batch_size=self.batch_size, threads=self.threads,
                                     warmup=warmup, repeats=repeats, channels_last=self.channels_last, bf16=self.bf16,
                                     clock=self.clock, runtime=self.runtime, adaptive=self.adaptive)  # fmt: skip
            points.append({"network": cfg.name, "features": features, "measured_ms": result.median_ms})
            if on_network is not None:
                on_network(i + 1)
        groups = sorted({g for p in points for g in p["features"]})
        x = [[p["features"].get(g, 0.0) for g in groups] for p in points]
        y = [p["measured_ms"] for p in points]
        model = LinearRegression(positive=True, fit_intercept=False).fit(x, y)
        # a family absent from every calibration network keeps the plain sum (factor 1)
        seen = {g for p in points for g, ms in p["features"].items() if ms > 0}
        self.correction = {g: float(c) if g in seen and c > 0 else 1.0 for g, c in zip(groups, model.coef_)}
        self.calibration = points
        self._save()
        return self.correction

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"LatencyPredictor({self.device_key['device']}, {self.device_key['name']!r}, threads={self.threads}, "
            f"batch={self.batch_size}, entries={len(self)}, cache={self.path})"
        )

"""IDX decompression is bounded by what an MNIST-format header may claim (issue 24, part 3).

A gzip IDX file is inflated incrementally (`train_proxy.idx`): the header first, whose dimensions
must be those of an MNIST-format data set (at most 10 million items, 256 px sides, 1 GiB), then at
most the claimed size plus one byte. So a few hundred KB of compressed zeros, whose header claims
200 x 2900 x 2900 images or whose data runs on for 300 MB past a small header, is one line at once
and costs no memory; the same checks hold for raw (uncompressed) files. Legitimate files, gzip or
raw, single or multi-member, still load.

The memory checks run in a fresh interpreter, where the peak RSS (``ru_maxrss``) measured around
the read belongs to the read alone.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from search_space.errors import UserError
from train_proxy.data import load_data
from train_proxy.idx import IMAGES_MAGIC, LABELS_MAGIC, MAX_IDX_ITEMS, MAX_IDX_SIDE, read_idx

ZEROS = 300 << 20  # 300 MB of zeros: about 300 KB once compressed


def gzip_of_zeros(header: bytes, zeros: int) -> bytes:
    """A one-member gzip file holding ``header`` then ``zeros`` zero bytes, built without
    compressing them all: after a full flush the compressor starts afresh, so every MiB of zeros
    compresses to the same bytes, repeated (about 1 KB per MiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = bytes(1 << 20)
    piece = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    n, rest = divmod(zeros, len(chunk))
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(bytes(rest), crc)
    size = (len(header) + zeros) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head + piece * n + tail + struct.pack("<II", crc, size)


def images_header(n: int, rows: int, cols: int) -> bytes:
    return struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols)


def labels_header(n: int) -> bytes:
    return struct.pack(">II", LABELS_MAGIC, n)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("idx-hostile")
    files = {
        # the tester's file: a header claiming 200 x 2900 x 2900 (1.7 GB), then zeros
        "claims-huge-images-idx3-ubyte.gz": gzip_of_zeros(images_header(200, 2900, 2900), ZEROS),
        # sides within bounds, but 1 GiB + of pixels in all
        "claims-too-much-idx3-ubyte.gz": gzip_of_zeros(images_header(20_000, 256, 256), ZEROS),
        # too many labels
        "claims-many-labels-idx1-ubyte.gz": gzip_of_zeros(labels_header(2**31), ZEROS),
        # an honest small header, then data running on for 300 MB
        "over-long-idx3-ubyte.gz": gzip_of_zeros(images_header(1000, 28, 28), ZEROS),
    }
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
        assert len(raw) < 400_000  # a few hundred KB on disk
    return folder


HOSTILE = [
    ("claims-huge-images-idx3-ubyte.gz", IMAGES_MAGIC, "header claims images of 2900x2900 px"),
    ("claims-too-much-idx3-ubyte.gz", IMAGES_MAGIC, "header claims 20000 x 256 x 256 = 1,310,720,000 bytes of images"),
    ("claims-many-labels-idx1-ubyte.gz", LABELS_MAGIC, "header claims 2,147,483,648 labels"),
    ("over-long-idx3-ubyte.gz", IMAGES_MAGIC, "trailing bytes: header says 1000 x 28 x 28 = 784000 bytes of images, "
                                              "found more than 784000"),
]  # fmt: skip

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from search_space.errors import UserError
from train_proxy.idx import read_idx

out = {}
for name, magic in json.loads(sys.argv[1]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        read_idx(Path(sys.argv[2]) / name, magic)
        error = None
    except UserError as exc:
        error = str(exc)
    out[name] = {"error": error, "seconds": time.monotonic() - started,
                 "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
print(json.dumps(out))
"""


def test_a_gzip_bomb_is_one_line_quickly_and_without_inflating_it(hostile):
    cases = [(name, magic) for name, magic, _ in HOSTILE]
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases), str(hostile)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    for name, _, needle in HOSTILE:
        got = results[name]
        assert got["error"] is not None and needle in got["error"] and name in got["error"], got
        assert "\n" not in got["error"]
        assert got["seconds"] < 5, got
        assert got["rss_growth_mb"] < 64, got  # inflating the zeros would take 300 MB


def test_a_bomb_in_a_data_folder_is_one_line(tmp_path):
    """Through `load_data`, as every command reads MNIST-format folders."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    labels = list(range(10)) * 2
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip_of_zeros(images_header(200, 2900, 2900), 1 << 20))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels_header(20) + bytes(labels)))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images_header(20, 6, 6) + bytes(720)))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels_header(20) + bytes(labels)))
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        load_data(f"mnist:{folder}", 32)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz: header claims images of 2900x2900 px" in message and "\n" not in message


@pytest.mark.parametrize(
    "header, needle",
    [(images_header(200, 2900, 2900), "images of 2900x2900 px"),
     (images_header(MAX_IDX_ITEMS + 1, 1, 1), "header claims 10,000,001 images"),
     (images_header(1, MAX_IDX_SIDE + 1, 1), f"images of {MAX_IDX_SIDE + 1}x1 px"),
     (labels_header(MAX_IDX_ITEMS + 1), "header claims 10,000,001 labels")],
    ids=["huge-sides", "too-many-images", "too-wide", "too-many-labels"],
)  # fmt: skip
def test_raw_files_are_held_to_the_same_bounds(tmp_path, header, needle):
    path = tmp_path / ("x-idx3-ubyte" if len(header) == 16 else "x-idx1-ubyte")
    path.write_bytes(header + bytes(64))
    with pytest.raises(UserError, match=needle):
        read_idx(path, IMAGES_MAGIC if len(header) == 16 else LABELS_MAGIC)


def _pixels(n: int = 30, side: int = 7) -> np.ndarray:
    return (np.arange(n * side * side) % 251).astype(np.uint8).reshape(n, side, side)


@pytest.mark.parametrize("form", ["gz", "raw", "two-members", "zero-padded", "header-alone-member"])
def test_legitimate_files_still_load(tmp_path, form):
    pixels = _pixels()
    raw = images_header(*pixels.shape) + pixels.tobytes()
    if form == "raw":
        path, data = tmp_path / "a-idx3-ubyte", raw
    else:
        path = tmp_path / "a-idx3-ubyte.gz"
        data = {
            "gz": gzip.compress(raw),
            "two-members": gzip.compress(raw[:100]) + gzip.compress(raw[100:]),  # as `cat a.gz b.gz` makes
            "zero-padded": gzip.compress(raw) + bytes(512),  # padding after the member, as tape tools leave
            "header-alone-member": gzip.compress(raw[:16]) + gzip.compress(b"") + gzip.compress(raw[16:]),
        }[form]
    path.write_bytes(data)
    assert np.array_equal(read_idx(path, IMAGES_MAGIC), pixels)


@pytest.mark.parametrize(
    "damage, needle",
    [("truncated-stream", "truncated gzip data"), ("bad-crc", "not a readable gzip file"),
     ("garbage-after", "not a readable gzip file"), ("short-body", "truncated: header says")],
)  # fmt: skip
def test_damaged_gzip_is_still_one_line(tmp_path, damage, needle):
    pixels = _pixels()
    raw = images_header(*pixels.shape) + pixels.tobytes()
    data = {
        "truncated-stream": gzip.compress(raw)[:-30],
        "bad-crc": gzip.compress(raw)[:-8] + b"\0\0\0\0" + gzip.compress(raw)[-4:],
        "garbage-after": gzip.compress(raw) + b"not gzip",
        "short-body": gzip.compress(raw[:-5]),
    }[damage]
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        read_idx(path, IMAGES_MAGIC)
    assert needle in str(info.value) and "\n" not in str(info.value)

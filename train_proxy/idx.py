"""Reading the IDX files of MNIST and Fashion-MNIST (``.gz`` or raw) with numpy.

An IDX file is a big-endian header followed by uint8 data:

    images: magic 2051, count, rows, cols (4 x uint32), then count x rows x cols bytes
    labels: magic 2049, count (2 x uint32), then count bytes

Every way a file can be wrong (missing, not gzip, wrong magic, truncated or over-long data, label
count differing from the image count, labels outside 0..9, a header claiming an absurd size) is a
one-line `UserError` naming the file. Decoded arrays are cached per (path, size, modification time).

Bounded reading. A file is read by `search_space.files.read_bytes` (a regular file of at most
512 MiB compressed). A gzip file is inflated incrementally: first the header alone, whose claimed
dimensions must be those of an MNIST-format data set (below), then at most the claimed size plus
one byte, so over-long data is detected without inflating it (a 7 MB file of zeros whose header
claims 200 x 2900 x 2900 images would otherwise inflate to 3.9 GB). The bounds, generous against
the data sets this format holds (MNIST and Fashion-MNIST: 60,000 x 28 x 28 = 47 MB; EMNIST
ByClass: 697,932 images; QMNIST: 120,000):

* at most `MAX_IDX_ITEMS` (10 million) images or labels;
* image sides at most `MAX_IDX_SIDE` (256) px (the format's data sets are 28 px, a few 32-128 px);
* at most `MAX_IDX_BYTES` (1 GiB) of pixels in one file.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np

from search_space.errors import UserError
from search_space.files import read_bytes

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
NUM_CLASSES = 10
MAX_IDX_ITEMS = 10_000_000  # images or labels in one file (EMNIST's largest split: 697,932)
MAX_IDX_SIDE = 256  # px per image side (MNIST-format data sets: 28)
MAX_IDX_BYTES = 1 << 30  # pixels in one file (Fashion-MNIST's training images: 47 MB)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists (gzip first)."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx_files(folder: Path) -> bool:
    """Whether ``folder`` holds all four standard IDX files (``.gz`` or raw)."""
    return all(find_file(folder, stem) is not None for pair in SPLIT_FILES.values() for stem in pair)


def idx_paths(folder: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images file, labels file)}; a missing file is a one-line error."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory (expected the four MNIST-format IDX files)")
    out = {}
    for split, stems in SPLIT_FILES.items():
        found = []
        for stem in stems:
            path = find_file(folder, stem)
            if path is None:
                raise UserError(f"{folder}: missing {stem}.gz (or {stem}); an MNIST-format folder has "
                                f"{', '.join(s for pair in SPLIT_FILES.values() for s in pair)}")  # fmt: skip
            found.append(path)
        out[split] = (found[0], found[1])
    return out


class _Gunzip:
    """The decompressed bytes of gzip data, handed out ``read(n)`` at a time: nothing is inflated
    beyond what was asked for. Concatenated members are read one after another, as
    `gzip.decompress` reads them (zero padding after a member is skipped)."""

    def __init__(self, path: Path, raw: bytes) -> None:
        self.path, self.data = path, raw
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only where the data ends."""
        chunks, got = [], 0
        try:
            while got < n:
                if self.inflater.eof:  # a member ended: another may follow
                    rest = self.inflater.unused_data.lstrip(b"\0")
                    if not rest:
                        break
                    self.inflater, self.data = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
                chunk = self.inflater.decompress(self.data, n - got)
                self.data = self.inflater.unconsumed_tail
                if not chunk and not self.data and not self.inflater.eof:
                    raise UserError(f"{self.path}: truncated gzip data")
                chunks.append(chunk)
                got += len(chunk)
        except zlib.error as exc:
            raise UserError(f"{self.path}: not a readable gzip file ({exc})") from None
        return b"".join(chunks)


def _header_limits(path: Path, shape: list[int], what: str) -> int:
    """The number of data bytes the header claims, refused when no MNIST-format data set has them."""
    if shape[0] > MAX_IDX_ITEMS:
        raise UserError(f"{path}: header claims {shape[0]:,} {what}; an MNIST-format file has at most "
                        f"{MAX_IDX_ITEMS:,}")  # fmt: skip
    if len(shape) == 3 and max(shape[1:]) > MAX_IDX_SIDE:
        raise UserError(f"{path}: header claims images of {shape[1]}x{shape[2]} px; an MNIST-format file has "
                        f"images of at most {MAX_IDX_SIDE}x{MAX_IDX_SIDE}")  # fmt: skip
    expected = int(np.prod(shape, dtype=np.int64))
    if expected > MAX_IDX_BYTES:
        raise UserError(f"{path}: header claims {' x '.join(map(str, shape))} = {expected:,} bytes of {what}; an "
                        f"MNIST-format file has at most {MAX_IDX_BYTES >> 30} GiB")  # fmt: skip
    return expected


def _parse(path: Path, magic: int) -> np.ndarray:
    raw = read_bytes(path, "data", what="IDX data file")
    assert raw is not None
    dims = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + dims)
    what = "images" if magic == IMAGES_MAGIC else "labels"
    gz = path.suffix == ".gz"
    stream = _Gunzip(path, raw) if gz else None
    head = stream.read(header) if stream is not None else raw[:header]
    if len(head) < header:
        raise UserError(f"{path}: truncated IDX header ({len(head)} bytes, an IDX {what} header has {header})")
    found, *shape = struct.unpack(f">{1 + dims}I", head)
    if found != magic:
        raise UserError(f"{path}: magic number {found}, expected {magic} (IDX {what})")
    if magic == IMAGES_MAGIC and (shape[1] == 0 or shape[2] == 0):
        raise UserError(f"{path}: images of size {shape[1]}x{shape[2]}")
    expected = _header_limits(path, shape, what)
    if stream is not None:
        data = stream.read(expected + 1)  # one byte more than claimed: over-long data shows, uninflated
        body, more = len(data), len(data) > expected
    else:
        data = memoryview(raw)[header:]
        body, more = len(data), len(data) > expected
    if body != expected:
        problem = "truncated" if body < expected else "trailing bytes"
        found_text = f"more than {expected}" if gz and more else str(body)
        raise UserError(f"{path}: {problem}: header says {' x '.join(map(str, shape))} = {expected} bytes of "
                        f"{what}, found {found_text}")  # fmt: skip
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


@functools.lru_cache(maxsize=8)
def _cached(path: str, magic: int, size: int, mtime_ns: int) -> np.ndarray:
    array = _parse(Path(path), magic)
    array.flags.writeable = False  # shared by every caller of the cache
    return array


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of one IDX file (images N x H x W, labels N), decoded once per file version."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    return _cached(str(path), magic, st.st_size, st.st_mtime_ns)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W uint8) and labels (N int64) of one split, checked against each other."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise UserError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if len(labels) and labels.max() >= NUM_CLASSES:
        bad = int(labels[labels >= NUM_CLASSES][0])
        raise UserError(f"{labels_path}: label {bad} outside 0..{NUM_CLASSES - 1}")
    if len(labels) == 0:
        raise UserError(f"{labels_path}: no images in this split")
    return images, labels.astype(np.int64)

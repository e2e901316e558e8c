"""Reading the IDX files of MNIST and Fashion-MNIST (``.gz`` or raw) with numpy.

An IDX file is a big-endian header followed by uint8 data:

    images: magic 2051, count, rows, cols (4 x uint32), then count x rows x cols bytes
    labels: magic 2049, count (2 x uint32), then count bytes

Every way a file can be wrong (missing, not gzip, wrong magic, truncated or over-long data, label
count differing from the image count, labels outside 0..9) is a one-line `UserError` naming the
file. Decoded arrays are cached per (path, size, modification time).
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from search_space.errors import UserError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
NUM_CLASSES = 10
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


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise UserError(f"{path}: truncated gzip data") from None
    except (OSError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable gzip file ({exc})") from None


def _parse(path: Path, magic: int) -> np.ndarray:
    raw = _read_bytes(path)
    dims = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + dims)
    what = "images" if magic == IMAGES_MAGIC else "labels"
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header ({len(raw)} bytes, an IDX {what} header has {header})")
    found, *shape = struct.unpack(f">{1 + dims}I", raw[:header])
    if found != magic:
        raise UserError(f"{path}: magic number {found}, expected {magic} (IDX {what})")
    if magic == IMAGES_MAGIC and (shape[1] == 0 or shape[2] == 0):
        raise UserError(f"{path}: images of size {shape[1]}x{shape[2]}")
    expected = int(np.prod(shape, dtype=np.int64))
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "trailing bytes"
        raise UserError(f"{path}: {problem}: header says {' x '.join(map(str, shape))} = {expected} bytes of "
                        f"{what}, found {body}")  # fmt: skip
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


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

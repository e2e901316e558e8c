"""Datasets for proxy training: ``fashion-mnist`` (Debian's package, or ``fashion-mnist:DIR``),
``mnist:DIR``, ``digits`` (embedded), ``cifar10:PATH`` and ``imagefolder:PATH``.

Every loader returns a `DataBundle` of in-memory float32 tensors, 3 channels, normalised, already
at the requested resolution, so the trainer only indexes tensors (no DataLoader workers, no
per-sample decoding). Validation splits are fixed: they never depend on the training seed, so
every architecture of a search is ranked on the same held-out images. ``fraction`` subsamples
the train split per class (stratified) with its own seed.

Where a data set has an official test split of its own (the IDX folders' ``t10k`` files), the
validation part is held out of the train split and the test split is kept apart in
``DataBundle.test``, for a final evaluation only: nothing in a search or proxy training reads it.

The default data (`default_data_spec`) is Fashion-MNIST where it is installed, else digits with a
one-line notice saying how to get the real data.

Bundles are cached per (spec, resolution, fraction, seed, files' modification times): a search
that trains many architectures in one process decodes the data once. Treat the tensors as
read-only.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from search_space.errors import UserError

from .idx import has_idx_files, idx_paths, read_split

SPLIT_SEED = 0  # the fixed validation split; independent of any training seed
VAL_FRACTION = 0.2  # held out where a dataset has no validation split of its own
MAX_TENSOR_BYTES = 8 << 30  # refuse float tensors above this instead of exhausting memory
SPEC_HELP = "fashion-mnist, fashion-mnist:DIR, mnist:DIR, digits, cifar10:PATH or imagefolder:PATH"

# Fashion-MNIST: where Debian's package dataset-fashion-mnist installs it, unless this names a folder.
FASHION_MNIST_ENV = "HYBRID_NAS_FASHION_MNIST"
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_HELP = (
    "apt-get install dataset-fashion-mnist (Debian), or put the four IDX files in a folder and give "
    f"--data fashion-mnist:DIR or set {FASHION_MNIST_ENV}=DIR"
)
# Mean and std of all pixels (in [0, 1]) of the 60000 train images, computed from the official
# train-images-idx3-ubyte.gz: Fashion-MNIST 0.28604 / 0.35302; MNIST 0.1307 / 0.3081 (the constants
# of PyTorch's MNIST example, from MNIST's train images).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VAL_FOLDER_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class DataBundle:
    """Train and validation tensors (images N x 3 x R x R float32 normalised, labels N int64).

    ``hflip`` and ``max_shift`` tell the trainer which augmentation keeps labels valid: flips
    and a shift of up to ``max_shift`` x side for natural images; no flip for digits.
    ``fraction`` is the share of the train split kept when the bundle was loaded. ``test`` is
    the official test split where the data set has one (never subsampled, never read by the
    search or the proxy trainer). Grey data sets hold their images as a 3-channel view of one
    channel (``expand``): index them (or call ``.contiguous()``) rather than write to them.
    """

    train: TensorDataset
    val: TensorDataset
    num_classes: int
    name: str
    class_names: tuple[str, ...] = ()
    hflip: bool = True
    max_shift: float = 0.125
    fraction: float = 1.0
    test: TensorDataset | None = None
    # per-channel statistics the pixels (in [0, 1]) were normalised with: a deployed model needs them
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def resolution(self) -> int:
        return int(self.train.tensors[0].shape[-1])

    def summary(self) -> str:
        test = f" ({len(self.test)} test images held apart)" if self.test is not None else ""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val images, "
            f"{self.num_classes} classes, {self.resolution} px{test}"
        )


def load_data(spec: str, resolution: int, *, fraction: float = 1.0, seed: int = 0) -> DataBundle:
    """Load a data spec (see `SPEC_HELP`) at ``resolution`` x ``resolution``."""
    kind, path = parse_data_spec(spec)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise UserError(f"data resolution must be an integer >= 8, got {resolution!r}")
    if not 0.0 < float(fraction) <= 1.0:
        raise UserError(f"data fraction must be in (0, 1], got {fraction}")
    name = spec.strip() if kind.endswith("mnist") else ""
    if kind == "fashion-mnist" and path is None:
        path, name = fashion_mnist_dir(required=True), "fashion-mnist"
    signature = _files_signature(kind, path)
    return _load_cached(kind, str(path) if path else "", resolution, float(fraction), int(seed), signature, name)


def parse_data_spec(spec: str) -> tuple[str, Path | None]:
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty data spec (expected {SPEC_HELP})")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "digits":
        if sep:
            raise UserError(f"data spec '{spec}': digits takes no path (it ships with scikit-learn)")
        return kind, None
    if kind == "fashion-mnist" and not sep:
        return kind, None  # the installed copy, found by `fashion_mnist_dir`
    if kind in ("cifar10", "imagefolder", "fashion-mnist", "mnist"):
        if not rest.strip():
            what = "DIR" if kind.endswith("mnist") else "PATH"
            raise UserError(f"data spec '{spec}': missing path (expected {kind}:{what})")
        return kind, Path(rest.strip()).expanduser()
    raise UserError(f"unknown data spec '{spec}' (expected {SPEC_HELP})")


def fashion_mnist_dir(*, required: bool = False) -> Path | None:
    """The folder of the installed Fashion-MNIST: ``$HYBRID_NAS_FASHION_MNIST`` if set, else Debian's."""
    override = os.environ.get(FASHION_MNIST_ENV)
    candidates = (Path(override).expanduser(),) if override else FASHION_MNIST_DIRS
    for folder in candidates:
        if folder.is_dir() and has_idx_files(folder):
            return folder
    if not required:
        return None
    where = f"{FASHION_MNIST_ENV}={override}" if override else ", ".join(map(str, FASHION_MNIST_DIRS))
    raise UserError(f"fashion-mnist: the four IDX files are not in {where}; {FASHION_MNIST_HELP}")


def default_data_spec() -> str:
    """The data of a command not given ``--data``: Fashion-MNIST where it is installed (Debian's
    package, or the folder ``$HYBRID_NAS_FASHION_MNIST`` names), the bundled digits otherwise."""
    return "fashion-mnist" if fashion_mnist_dir() is not None else "digits"


def default_data_notice() -> str | None:
    """One line saying why the default fell back to digits and how to get the real data (None
    when the default is the real data)."""
    if default_data_spec() != "digits":
        return None
    return (
        "note: Fashion-MNIST is not installed, so this uses the small bundled digits data (8x8 images; "
        f"nearly every architecture scores alike there); to get real data: {FASHION_MNIST_HELP}"
    )


def resolve_data_arg(value: str | None) -> tuple[str, str | None]:
    """A command's ``--data`` value or, when not given, the default spec and its notice (if any)."""
    if value is not None:
        return value, None
    return default_data_spec(), default_data_notice()


@functools.lru_cache(maxsize=2)
def _load_cached(
    kind: str, path: str, resolution: int, fraction: float, seed: int, signature: tuple, name: str
) -> DataBundle:
    if kind == "digits":
        return _load_digits(resolution, fraction, seed)
    if kind in ("fashion-mnist", "mnist"):
        return _load_idx_folder(kind, Path(path), name, resolution, fraction, seed)
    if kind == "cifar10":
        return _load_cifar10(Path(path), resolution, fraction, seed)
    return _load_imagefolder(Path(path), resolution, fraction, seed)


def _files_signature(kind: str, path: Path | None) -> tuple:
    """Modification times that invalidate the cache when the files change."""
    if path is None:
        return ()
    if not path.exists():
        raise UserError(f"{kind} path {path} does not exist")
    entries = [path] + (sorted(path.iterdir()) if path.is_dir() else [])
    return tuple((str(p), p.stat().st_mtime_ns) for p in entries)


# -- splits -------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``val_fraction`` of the samples (at least one where a class has two) to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, round(val_fraction * len(idx))), len(idx) - 1) if len(idx) >= 2 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices keeping ``fraction`` of every class (at least one sample per class), sorted."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        keep.append(idx[: max(1, round(fraction * len(idx)))])
    return np.sort(np.concatenate(keep))


# -- conversion ---------------------------------------------------------------------------


def _check_memory(n_images: int, resolution: int, what: str) -> None:
    needed = n_images * 3 * resolution * resolution * 4
    if needed > MAX_TENSOR_BYTES:
        raise UserError(
            f"{what}: {n_images} images at {resolution} px need {needed / 2**30:.1f} GiB as float tensors "
            f"(limit {MAX_TENSOR_BYTES / 2**30:.0f} GiB); use a lower resolution or a data fraction"
        )


def _uint8_to_normalised(
    images: np.ndarray, resolution: int, mean: Sequence[float], std: Sequence[float], chunk: int = 2048
) -> torch.Tensor:
    """N x 3 x H x W uint8 -> N x 3 x R x R float32, resized (bilinear, antialiased) and normalised."""
    n = len(images)
    out = torch.empty(n, 3, resolution, resolution, dtype=torch.float32)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    for start in range(0, n, chunk):  # chunks bound the temporary memory of the conversion
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).float().div_(255.0)
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(x)] = (x - mean_t) / std_t
    return out


def _bundle(
    name: str,
    train_x: torch.Tensor,
    train_y: np.ndarray,
    val_x: torch.Tensor,
    val_y: np.ndarray,
    class_names: Sequence[str],
    *,
    hflip: bool,
    max_shift: float,
    fraction: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> DataBundle:
    return DataBundle(
        train=TensorDataset(train_x, torch.as_tensor(train_y, dtype=torch.long)),
        val=TensorDataset(val_x, torch.as_tensor(val_y, dtype=torch.long)),
        num_classes=len(class_names),
        name=name,
        class_names=tuple(class_names),
        hflip=hflip,
        max_shift=max_shift,
        fraction=fraction,
        mean=_three(mean),
        std=_three(std),
    )


def _three(values: float | Sequence[float]) -> tuple[float, float, float]:
    """Per-channel statistics of a 3-channel input; a grey set's one value repeated."""
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    a, b, c = (float(v) for v in values)
    return (a, b, c)


# -- digits -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 x 64 pixels in 0..16, labels 0..9).

    The bundled CSV is read directly: importing ``sklearn.datasets`` takes seconds, the file
    milliseconds. ``load_digits`` is the fallback should the file move in a future release.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32), digits.target.astype(np.int64)


def _load_digits(resolution: int, fraction: float, seed: int) -> DataBundle:
    pixels, labels = _digits_arrays()
    _check_memory(len(labels), resolution, "digits")  # before upsampling every image
    images = torch.from_numpy(pixels).float().div_(16.0).view(-1, 1, 8, 8)  # N x 1 x 8 x 8 in [0, 1]
    full_train_idx, val_idx = stratified_split(labels, VAL_FRACTION, SPLIT_SEED)
    train_idx = full_train_idx[stratified_subset(labels[full_train_idx], fraction, seed)]
    up = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    # one grey channel: normalise with the statistics of the full, fixed train split
    mean, std = up[full_train_idx].mean(), up[full_train_idx].std()
    up = ((up - mean) / std).expand(-1, 3, -1, -1)
    return _bundle(
        "digits",
        up[train_idx].contiguous(),
        labels[train_idx],
        up[val_idx].contiguous(),
        labels[val_idx],
        [str(d) for d in range(10)],
        hflip=False,  # a mirrored digit is not the same digit
        max_shift=0.0625,  # small translations only: digits fill their 8x8 frame
        fraction=fraction,
        mean=float(mean),
        std=float(std),
    )


# -- MNIST-format IDX folders (Fashion-MNIST, MNIST) ----------------------------------------


def _grey_to_normalised(
    images: np.ndarray, resolution: int, mean: float, std: float, chunk: int = 4096
) -> torch.Tensor:
    """N x H x W uint8 -> N x 1 x R x R float32, resized (bilinear, antialiased) and normalised."""
    n = len(images)
    out = torch.empty(n, 1, resolution, resolution, dtype=torch.float32)
    for start in range(0, n, chunk):  # chunks bound the temporary memory of the conversion
        block = np.array(images[start : start + chunk])  # a copy: the cached arrays are read-only
        x = torch.from_numpy(block).float().div_(255.0).unsqueeze(1)
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(x)] = (x - mean) / std
    return out


def _load_idx_folder(kind: str, path: Path, name: str, resolution: int, fraction: float, seed: int) -> DataBundle:
    paths = idx_paths(path)
    train_images, train_labels = read_split(*paths["train"])
    test_images, test_labels = read_split(*paths["test"])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UserError(f"{paths['test'][0]}: images of {test_images.shape[1]}x{test_images.shape[2]}, the train "
                        f"images are {train_images.shape[1]}x{train_images.shape[2]}")  # fmt: skip
    full_train_idx, val_idx = stratified_split(train_labels, VAL_FRACTION, SPLIT_SEED)
    if len(val_idx) == 0:
        raise UserError(f"{paths['train'][1]}: too few images for a validation split (need 2 per class)")
    train_idx = full_train_idx[stratified_subset(train_labels[full_train_idx], fraction, seed)]
    # one float channel per image in memory (see `three`)
    _check_memory((len(train_idx) + len(val_idx) + len(test_labels) + 2) // 3, resolution, f"{kind}:{path}")
    fashion = kind == "fashion-mnist"
    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if fashion else (MNIST_MEAN, MNIST_STD)

    def three(images: np.ndarray) -> torch.Tensor:
        """Grey as 3 channels, like every other loader, but as a view of one: a third of the memory
        (60000 images at 64 px: 1 GB instead of 3). Batches gathered from it are ordinary tensors."""
        return _grey_to_normalised(images, resolution, mean, std).expand(-1, 3, -1, -1)

    bundle = _bundle(
        name,
        three(train_images[train_idx]),
        train_labels[train_idx],
        three(train_images[val_idx]),
        train_labels[val_idx],
        FASHION_MNIST_CLASSES if fashion else [str(d) for d in range(10)],
        # A mirrored shirt, shoe or bag is still a shirt, shoe or bag (the classes do not come
        # in left and right variants); a mirrored digit is not the same digit.
        hflip=fashion,
        max_shift=0.125 if fashion else 0.0625,
        fraction=fraction,
        mean=mean,
        std=std,
    )
    return replace(bundle, test=TensorDataset(three(test_images), torch.as_tensor(test_labels, dtype=torch.long)))


# -- CIFAR-10 python batches --------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and bytes only: a data file must not run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),  # protocol 5 pickles of arrays
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("builtins", "bytearray"),
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any decoding problem is a malformed file
        raise UserError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: not a CIFAR-10 python batch (expected a dict, got {type(obj).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(raw, where)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{where}: not a CIFAR-10 python batch (no 'data' array of shape N x 3072)")
    if labels is None or len(labels) != len(data):
        raise UserError(f"{where}: not a CIFAR-10 python batch ('labels' missing or not one per image)")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{where}: labels outside 0..9, not CIFAR-10")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), labels


def _cifar_reader(path: Path) -> tuple[Callable[[str], bytes | None], str]:
    """A function reading a member of the CIFAR-10 folder (or the downloaded .tar.gz) by name."""
    if path.is_file():
        wanted = set(CIFAR_TRAIN_BATCHES) | {CIFAR_TEST_BATCH, "batches.meta"}
        try:
            with tarfile.open(path) as tar:  # the downloaded cifar-10-python.tar.gz, read in place
                blobs = {}
                for member in tar.getmembers():
                    name = Path(member.name).name
                    handle = tar.extractfile(member) if member.isfile() and name in wanted else None
                    if handle is not None:
                        blobs[name] = handle.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(f"{path}: not a CIFAR-10 folder nor a readable cifar-10-python.tar.gz ({exc})") from None
        return blobs.get, str(path)
    root = (
        path / CIFAR_FOLDER if not (path / CIFAR_TRAIN_BATCHES[0]).exists() and (path / CIFAR_FOLDER).is_dir() else path
    )

    def read(name: str) -> bytes | None:
        try:
            return (root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"{root / name}: cannot read ({exc.strerror})") from None

    return read, str(root)


def _load_cifar10(path: Path, resolution: int, fraction: float, seed: int) -> DataBundle:
    read, where = _cifar_reader(path)
    names = CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)
    raws = {name: read(name) for name in names}
    missing = [name for name, raw in raws.items() if raw is None]
    if missing:
        raise UserError(f"{where}: not a CIFAR-10 python folder (missing {', '.join(missing)})")
    parts = [_cifar_batch(raws[name], f"{where}/{name}") for name in CIFAR_TRAIN_BATCHES]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    val_images, val_labels = _cifar_batch(raws[CIFAR_TEST_BATCH], f"{where}/{CIFAR_TEST_BATCH}")
    keep = stratified_subset(train_labels, fraction, seed)
    _check_memory(len(keep) + len(val_labels), resolution, f"cifar10:{path}")
    class_names = [str(i) for i in range(10)]
    meta_raw = read("batches.meta")
    if meta_raw is not None:
        names_raw = _unpickle(meta_raw, f"{where}/batches.meta").get("label_names")
        if isinstance(names_raw, list) and len(names_raw) == 10:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names_raw]
    return _bundle(
        f"cifar10:{path}",
        _uint8_to_normalised(train_images[keep], resolution, CIFAR_MEAN, CIFAR_STD),
        train_labels[keep],
        _uint8_to_normalised(val_images, resolution, CIFAR_MEAN, CIFAR_STD),
        val_labels,
        class_names,
        hflip=True,
        max_shift=0.125,  # the classic 4 px of 32 random crop
        fraction=fraction,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )


# -- class-per-folder images --------------------------------------------------------------


def _class_files(root: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} for every visible sub-folder holding images."""
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in folder.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not f.name.startswith(".")
        )
        if files:
            classes[folder.name] = files
    return classes


def _read_image(path: Path, resolution: int) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (2 * resolution, 2 * resolution))  # JPEG: decode at reduced size, much faster
            img = ImageOps.fit(img.convert("RGB"), (resolution, resolution), method=Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def _read_images(files: Sequence[Path], resolution: int) -> np.ndarray:
    if not files:
        return np.empty((0, 3, resolution, resolution), dtype=np.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        return np.stack(list(pool.map(lambda f: _read_image(f, resolution), files)))


def _load_imagefolder(path: Path, resolution: int, fraction: float, seed: int) -> DataBundle:
    if not path.is_dir():
        raise UserError(f"imagefolder path {path} is not a directory")
    val_root = next((path / n for n in VAL_FOLDER_NAMES if (path / n).is_dir()), None)
    train_root = path / "train" if (path / "train").is_dir() else path
    train_classes = _class_files(train_root)
    if not train_classes:
        raise UserError(f"{train_root}: no class folders with images (expected {train_root}/CLASS/IMAGE.png)")
    if len(train_classes) < 2:
        raise UserError(f"{train_root}: only one class folder ({next(iter(train_classes))}); need at least 2")
    class_names = list(train_classes)
    files = [f for c in class_names for f in train_classes[c]]
    labels = np.array([i for i, c in enumerate(class_names) for _ in train_classes[c]], dtype=np.int64)
    if train_root != path and val_root is not None:
        val_classes = _class_files(val_root)
        unknown = sorted(set(val_classes) - set(class_names))
        if unknown:
            raise UserError(f"{val_root}: class folder '{unknown[0]}' has no counterpart in {train_root}")
        if not val_classes:
            raise UserError(f"{val_root}: no class folders with images")
        val_files = [f for c in class_names for f in val_classes.get(c, [])]
        val_labels = np.array([i for i, c in enumerate(class_names) for _ in val_classes.get(c, [])], dtype=np.int64)
        train_files, train_labels = files, labels
    else:  # no val/ folder: a fixed stratified split of the class folders
        train_idx, val_idx = stratified_split(labels, VAL_FRACTION, SPLIT_SEED)
        if len(val_idx) == 0:
            raise UserError(f"{path}: too few images for a validation split (need 2 per class)")
        train_files, train_labels = [files[i] for i in train_idx], labels[train_idx]
        val_files, val_labels = [files[i] for i in val_idx], labels[val_idx]
    keep = stratified_subset(train_labels, fraction, seed)
    _check_memory(len(keep) + len(val_files), resolution, f"imagefolder:{path}")
    train_uint8 = _read_images([train_files[i] for i in keep], resolution)
    val_uint8 = _read_images(val_files, resolution)
    return _bundle(
        f"imagefolder:{path}",
        _uint8_to_normalised(train_uint8, resolution, IMAGENET_MEAN, IMAGENET_STD),
        train_labels[keep],
        _uint8_to_normalised(val_uint8, resolution, IMAGENET_MEAN, IMAGENET_STD),
        val_labels,
        class_names,
        hflip=True,
        max_shift=0.125,
        fraction=fraction,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )

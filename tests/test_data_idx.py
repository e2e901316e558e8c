"""MNIST-format IDX folders (`--data fashion-mnist[:DIR]`, `--data mnist:DIR`): reading, splits, errors.

The IDX files here are written byte by byte with ``struct`` (big-endian header, uint8 data), not
by any writer of the package, so the reader is checked against the format, not against itself.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from search_space.errors import UserError
from train_proxy import data as D
from train_proxy.data import load_data, parse_data_spec

N_TRAIN, N_TEST, SIDE = 60, 20, 6  # 6 train and 2 test images per class


def _images_bytes(pixels: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = pixels.shape
    return struct.pack(">IIII", magic, n, rows, cols) + pixels.astype(np.uint8).tobytes()


def _labels_bytes(labels: list[int], magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + bytes(labels)


def _pixels(n: int, labels: list[int]) -> np.ndarray:
    """Image i is filled with 20 * label + (i % 3): the label can be read back from the pixels."""
    return np.stack([np.full((SIDE, SIDE), 20 * y + i % 3, dtype=np.uint8) for i, y in enumerate(labels)])


def _write(folder: Path, gz: bool, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, raw in files.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


def _standard(n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict[str, bytes]:
    train_y = [i % 10 for i in range(n_train)]
    test_y = [(3 * i) % 10 for i in range(n_test)]
    return {
        "train-images-idx3-ubyte": _images_bytes(_pixels(n_train, train_y)),
        "train-labels-idx1-ubyte": _labels_bytes(train_y),
        "t10k-images-idx3-ubyte": _images_bytes(_pixels(n_test, test_y)),
        "t10k-labels-idx1-ubyte": _labels_bytes(test_y),
    }


@pytest.fixture(params=["gz", "raw"])
def idx_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    folder = tmp_path / f"fmnist-{request.param}"
    _write(folder, request.param == "gz", _standard())
    return folder


def _label_of(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of Fashion-MNIST and read the label the fixture painted in."""
    pixel = images[:, 0].mean(dim=(1, 2)) * D.FASHION_MNIST_STD + D.FASHION_MNIST_MEAN
    return torch.floor((pixel * 255 + 0.5) / 20).long()  # 20 * y + {0, 1, 2}: the +0..2 drops out


def test_reads_gz_and_raw_folders(idx_dir: Path) -> None:
    bundle = load_data(f"fashion-mnist:{idx_dir}", 32)
    assert bundle.name == f"fashion-mnist:{idx_dir}"
    x, y = bundle.train.tensors
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey as 3 equal channels
    # every image keeps its label: the constant pixel value (20 * label + 0..2) decodes back to it
    for ds in (bundle.train, bundle.val, bundle.test):
        assert torch.equal(_label_of(ds.tensors[0]), ds.tensors[1])
    assert bundle.test is not None and len(bundle.test) == N_TEST
    assert sorted(bundle.test.tensors[1].tolist()) == sorted((3 * i) % 10 for i in range(N_TEST))
    assert bundle.num_classes == 10 and bundle.class_names[9] == "Ankle boot"
    assert bundle.hflip  # clothing has no left/right classes


def test_stratified_validation_split_and_untouched_test(idx_dir: Path) -> None:
    full = load_data(f"fashion-mnist:{idx_dir}", 32)
    # VAL_FRACTION = 0.2 of 6 images per class rounds to 1 per class: 10 val, 50 train
    assert np.bincount(full.val.tensors[1].numpy()).tolist() == [1] * 10
    assert np.bincount(full.train.tensors[1].numpy()).tolist() == [5] * 10
    half = load_data(f"fashion-mnist:{idx_dir}", 32, fraction=0.4, seed=1)
    assert np.bincount(half.train.tensors[1].numpy()).tolist() == [2] * 10  # 0.4 x 5 per class
    assert torch.equal(half.val.tensors[0], full.val.tensors[0])  # the split never depends on fraction/seed
    assert torch.equal(half.test.tensors[0], full.test.tensors[0]) and len(half.test) == N_TEST
    assert len(full.train) + len(full.val) == N_TRAIN  # train and val come from the train file only


def test_mnist_folder_no_flip(tmp_path: Path) -> None:
    _write(tmp_path / "m", True, _standard())
    bundle = load_data(f"mnist:{tmp_path / 'm'}", 32)
    assert not bundle.hflip and bundle.class_names[3] == "3"
    pixel = bundle.train.tensors[0][:, 0].mean(dim=(1, 2)) * D.MNIST_STD + D.MNIST_MEAN
    assert torch.equal(torch.floor((pixel * 255 + 0.5) / 20).long(), bundle.train.tensors[1])


def test_spec_parsing() -> None:
    assert parse_data_spec("fashion-mnist") == ("fashion-mnist", None)
    assert parse_data_spec("fashion-mnist:/x") == ("fashion-mnist", Path("/x"))
    assert parse_data_spec("mnist:/y") == ("mnist", Path("/y"))
    with pytest.raises(UserError, match="expected mnist:DIR"):
        parse_data_spec("mnist")


def _bad(files: dict[str, bytes], stem: str, raw: bytes) -> dict[str, bytes]:
    return {**files, stem: raw}


TRAIN_Y = [i % 10 for i in range(N_TRAIN)]
MALFORMED = [
    ("wrong-image-magic", "train-images-idx3-ubyte", _images_bytes(_pixels(N_TRAIN, TRAIN_Y), magic=2049),
     "magic number 2049, expected 2051"),
    ("wrong-label-magic", "train-labels-idx1-ubyte", _labels_bytes(TRAIN_Y, magic=2051), "magic number 2051, expected 2049"),
    ("truncated-images", "train-images-idx3-ubyte", _images_bytes(_pixels(N_TRAIN, TRAIN_Y))[:-7], "truncated"),
    ("truncated-header", "t10k-labels-idx1-ubyte", b"\x00\x00\x08", "truncated IDX header"),
    ("truncated-labels", "train-labels-idx1-ubyte", _labels_bytes(TRAIN_Y)[:-1], "truncated"),
    ("trailing-bytes", "t10k-labels-idx1-ubyte", _labels_bytes([0] * N_TEST) + b"\x00", "trailing bytes"),
    ("count-mismatch", "train-labels-idx1-ubyte", _labels_bytes(TRAIN_Y[:-1]), "59 labels for 60 images"),
    ("label-out-of-range", "t10k-labels-idx1-ubyte", _labels_bytes([0] * (N_TEST - 1) + [12]), "label 12 outside 0..9"),
]  # fmt: skip


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("case, stem, raw, words", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_files_one_line(tmp_path: Path, gz: bool, case: str, stem: str, raw: bytes, words: str) -> None:
    folder = tmp_path / case
    _write(folder, gz, _bad(_standard(), stem, raw))
    with pytest.raises(UserError) as info:
        load_data(f"fashion-mnist:{folder}", 32)
    message = str(info.value)
    assert "\n" not in message and words in message and stem in message, message


def test_missing_and_broken_files(tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    files = _standard()
    del files["t10k-images-idx3-ubyte"]
    _write(folder, True, files)
    with pytest.raises(UserError, match="missing t10k-images-idx3-ubyte"):
        load_data(f"mnist:{folder}", 32)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        load_data(f"mnist:{folder}", 32)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_standard()["t10k-images-idx3-ubyte"])[:-30])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: truncated gzip"):
        load_data(f"mnist:{folder}", 32)
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"fashion-mnist:{tmp_path / 'nowhere'}", 32)


def test_installed_copy_and_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "mine", True, _standard())
    monkeypatch.setenv(D.FASHION_MNIST_ENV, str(tmp_path / "mine"))
    assert load_data("fashion-mnist", 32).name == "fashion-mnist"
    assert D.default_data_spec() == "fashion-mnist"  # installed: the real data is the default, silently
    assert D.default_data_notice() is None
    assert D.resolve_data_arg(None) == ("fashion-mnist", None)
    monkeypatch.setenv(D.FASHION_MNIST_ENV, str(tmp_path / "empty"))
    notice = D.default_data_notice()
    assert notice is not None and "\n" not in notice and "apt-get install dataset-fashion-mnist" in notice
    assert "not installed" in notice and "digits" in notice
    assert D.default_data_spec() == "digits"
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", 32)
    assert D.resolve_data_arg("digits") == ("digits", None)
    assert D.resolve_data_arg(None) == ("digits", notice)


INSTALLED = D.FASHION_MNIST_DIRS[0]


@pytest.mark.skipif(not D.has_idx_files(INSTALLED), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files() -> None:
    from train_proxy.idx import IMAGES_MAGIC, LABELS_MAGIC, idx_paths, read_idx

    paths = idx_paths(INSTALLED)
    train_x = read_idx(paths["train"][0], IMAGES_MAGIC)
    train_y = read_idx(paths["train"][1], LABELS_MAGIC)
    test_y = read_idx(paths["test"][1], LABELS_MAGIC)
    assert train_x.shape == (60000, 28, 28) and len(test_y) == 10000
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    # The first training images are an ankle boot, two T-shirts/tops and a dress (labels 9, 0, 0, 3),
    # as the 5x5 grid of TensorFlow's "Basic classification" tutorial shows them.
    assert train_y[:4].tolist() == [9, 0, 0, 3]
    # the normalisation constants are the train pixels' own mean and std
    counts = np.bincount(train_x.ravel(), minlength=256)  # exact moments from the pixel histogram
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert mean == pytest.approx(D.FASHION_MNIST_MEAN, abs=1e-4) and std == pytest.approx(D.FASHION_MNIST_STD, abs=1e-4)


def test_commands_resolve_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, tiny_cfg) -> None:
    """`nas search` records the resolved spec (never "default"); `nas train` says why it fell back."""
    from nas.cli import build_parser
    from nas.search.settings import new_settings

    _write(tmp_path / "mine", False, _standard())
    monkeypatch.setenv(D.FASHION_MNIST_ENV, str(tmp_path / "mine"))
    args = build_parser().parse_args(["search", "--budget", "4G"])
    assert new_settings(args).to_json()["data"] == "fashion-mnist"  # resolved, never "default"
    args = build_parser().parse_args(["search", "--budget", "4G", "--data", "fashion-mnist"])
    assert new_settings(args).data == "fashion-mnist"
    monkeypatch.setenv(D.FASHION_MNIST_ENV, str(tmp_path / "nothing-here"))
    args = build_parser().parse_args(["search", "--budget", "4G"])
    assert new_settings(args).data == "digits"
    train = ["--epochs", "1", "--data-fraction", "0.1", "--batch-size", "32", "--threads", "1", "--no-progress", "--json"]
    code, out, err = cli("train", str(tmp_path / "missing.yaml"), *train)
    assert code == 2 and len(err.strip().splitlines()) == 1  # bad input: still one line, no notice before it
    tiny_cfg.save(tmp_path / "tiny.yaml")
    code, out, err = cli("train", str(tmp_path / "tiny.yaml"), *train)
    assert code == 0 and json.loads(out)["data"] == "digits"
    assert err.strip() == D.default_data_notice()


def test_train_reports_test_accuracy_only_when_asked(tmp_path: Path, cli, tiny_cfg) -> None:
    _write(tmp_path / "f", True, _standard())
    tiny_cfg.save(tmp_path / "tiny.yaml")
    train = ["train", str(tmp_path / "tiny.yaml"), "--data", f"fashion-mnist:{tmp_path / 'f'}", "--epochs", "1",
             "--batch-size", "16", "--threads", "1", "--no-progress", "--json"]  # fmt: skip
    code, out, _ = cli(*train)
    assert code == 0 and json.loads(out)["test_acc"] is None
    code, out, _ = cli(*train, "--test")
    acc = json.loads(out)["test_acc"]
    assert code == 0 and acc * N_TEST == pytest.approx(round(acc * N_TEST))  # a share of the 20 test images
    code, out, err = cli(*train[:2], "--data", "digits", *train[4:], "--test")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no official test split" in err

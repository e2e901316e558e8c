"""Data loaders of `train_proxy`: digits, CIFAR-10 python batches, image folders, and their errors."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from search_space.errors import UserError
from train_proxy.data import (
    CIFAR_TEST_BATCH,
    CIFAR_TRAIN_BATCHES,
    load_data,
    parse_data_spec,
    stratified_split,
    stratified_subset,
)

# -- fixtures -----------------------------------------------------------------------------


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [i % 10 for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """A CIFAR-10 folder in the python-pickle format: 5 train batches of 20 images, a test batch of 30."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i, name in enumerate(CIFAR_TRAIN_BATCHES):
        (root / name).write_bytes(pickle.dumps(_cifar_batch(20, i), protocol=2))
    # the test batch in today's pickle protocol (5): arrays pickled out of band must load too
    (root / CIFAR_TEST_BATCH).write_bytes(pickle.dumps(_cifar_batch(30, 99), protocol=5))
    names = [
        n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return root


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Two classes (red and blue images), 5 PNGs each, plus a stray text file to ignore."""
    root = tmp_path / "images"
    for i in range(5):
        _png(root / "red" / f"{i}.png", (200 + i, 10, 10))
        _png(root / "blue" / f"{i}.png", (10, 10, 200 + i), size=(9, 30))
    (root / "red" / "notes.txt").write_text("not an image")
    return root


# -- specs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ("svhn", "unknown data spec 'svhn'"),
        ("", "empty data spec"),
        ("cifar10:", "missing path"),
        ("imagefolder:  ", "missing path"),
        ("digits:/x", "digits takes no path"),
    ],
)
def test_bad_specs_are_one_line_user_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_data(spec, 32)
    assert "\n" not in str(info.value)


def test_spec_parsing() -> None:
    assert parse_data_spec("digits") == ("digits", None)
    assert parse_data_spec("CIFAR10:/data/c") == ("cifar10", Path("/data/c"))


def test_bad_resolution_and_fraction() -> None:
    with pytest.raises(UserError, match="resolution"):
        load_data("digits", 4)
    with pytest.raises(UserError, match="fraction"):
        load_data("digits", 32, fraction=0.0)
    with pytest.raises(UserError, match="fraction"):
        load_data("digits", 32, fraction=1.5)


@pytest.mark.parametrize("kind", ["cifar10", "imagefolder"])
def test_missing_path(kind: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=f"{kind} path .*nowhere does not exist"):
        load_data(f"{kind}:{missing}", 32)


# -- splits -------------------------------------------------------------------------------


def test_stratified_split_and_subset_keep_every_class() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 2, 1, 7])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val], minlength=5).tolist() == [2, 4, 1, 0, 1]  # a singleton class stays in train
    keep = stratified_subset(labels, 0.5, seed=3)
    assert set(labels[keep]) == set(range(5))
    assert np.array_equal(keep, stratified_subset(labels, 0.5, seed=3))
    assert not np.array_equal(keep, stratified_subset(labels, 0.5, seed=4))


# -- digits -------------------------------------------------------------------------------


def test_digits_shapes_split_and_normalisation() -> None:
    bundle = load_data("digits", 32)
    x, y = bundle.train.tensors
    xv, yv = bundle.val.tensors
    assert bundle.name == "digits" and bundle.num_classes == 10 and not bundle.hflip
    assert x.shape == (len(y), 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert xv.shape[1:] == (3, 32, 32)
    assert len(y) + len(yv) == 1797 and 350 <= len(yv) <= 370  # 80/20
    assert torch.bincount(yv, minlength=10).min() >= 33  # stratified: every digit held out
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05
    assert torch.equal(x[:, 0], x[:, 2])  # grey images in three channels


def test_digits_validation_split_is_fixed_and_fraction_is_seeded() -> None:
    a = load_data("digits", 32, fraction=0.1, seed=0)
    b = load_data("digits", 32, fraction=0.1, seed=1)
    full = load_data("digits", 32)
    assert torch.equal(a.val.tensors[1], b.val.tensors[1]) and torch.equal(a.val.tensors[0], full.val.tensors[0])
    assert len(a.train) == pytest.approx(0.1 * len(full.train), abs=10)
    assert torch.bincount(a.train.tensors[1], minlength=10).min() >= 10
    assert not torch.equal(a.train.tensors[0], b.train.tensors[0])
    again = load_data("digits", 32, fraction=0.1, seed=0)
    assert torch.equal(again.train.tensors[0], a.train.tensors[0])
    assert a.fraction == 0.1


def test_digits_at_higher_resolution() -> None:
    bundle = load_data("digits", 64, fraction=0.05)
    assert bundle.train.tensors[0].shape[-2:] == (64, 64) and bundle.resolution == 64


# -- CIFAR-10 -----------------------------------------------------------------------------


def test_cifar10_folder(cifar_dir: Path) -> None:
    bundle = load_data(f"cifar10:{cifar_dir}", 32)
    x, y = bundle.train.tensors
    assert x.shape == (100, 3, 32, 32) and len(bundle.val) == 30 and bundle.num_classes == 10
    assert bundle.class_names[0] == "airplane" and bundle.hflip
    # the first training image, undone from the CIFAR normalisation, is the first row of data_batch_1
    raw = _cifar_batch(20, 0)[b"data"][0].reshape(3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    assert torch.allclose((x[0] * std + mean) * 255, torch.from_numpy(raw).float(), atol=1e-3)
    assert y[:3].tolist() == [0, 1, 2]


def test_cifar10_parent_folder_tarball_resolution_and_fraction(cifar_dir: Path, tmp_path: Path) -> None:
    parent = load_data(f"cifar10:{cifar_dir.parent}", 64, fraction=0.5)
    assert parent.train.tensors[0].shape == (50, 3, 64, 64)
    assert torch.bincount(parent.train.tensors[1]).tolist() == [5] * 10
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir, arcname="cifar-10-batches-py")
    packed = load_data(f"cifar10:{archive}", 32)
    unpacked = load_data(f"cifar10:{cifar_dir}", 32)
    assert torch.equal(packed.train.tensors[0], unpacked.train.tensors[0])


def test_cifar10_missing_batch(cifar_dir: Path) -> None:
    (cifar_dir / "data_batch_4").unlink()
    with pytest.raises(UserError, match="missing data_batch_4"):
        load_data(f"cifar10:{cifar_dir}", 32)


def test_cifar10_malformed_batch(cifar_dir: Path) -> None:
    (cifar_dir / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match="data_batch_2: not a CIFAR-10 python batch") as info:
        load_data(f"cifar10:{cifar_dir}", 32)
    assert "\n" not in str(info.value)


def test_cifar10_wrong_shape(cifar_dir: Path) -> None:
    (cifar_dir / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 10), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 python batch"):
        load_data(f"cifar10:{cifar_dir}", 32)


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch pwned",))


def test_cifar10_pickle_cannot_run_code(cifar_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (cifar_dir / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load"):
        load_data(f"cifar10:{cifar_dir}", 32)
    assert not (tmp_path / "pwned").exists()


def test_cifar10_path_that_is_not_cifar(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="not a CIFAR-10 python folder"):
        load_data(f"cifar10:{tmp_path}", 32)
    with pytest.raises(UserError, match="not a CIFAR-10 folder"):
        load_data(f"cifar10:{tmp_path / 'readme.txt'}", 32)


# -- image folders ------------------------------------------------------------------------


def test_imagefolder_split(image_dir: Path) -> None:
    bundle = load_data(f"imagefolder:{image_dir}", 32)
    assert bundle.class_names == ("blue", "red") and bundle.num_classes == 2
    assert len(bundle.train) == 8 and len(bundle.val) == 2  # one of five per class held out
    assert sorted(bundle.val.tensors[1].tolist()) == [0, 1]
    x, y = bundle.train.tensors
    assert x.shape == (8, 3, 32, 32)
    red, blue = x[y == 1].mean(dim=(0, 2, 3)), x[y == 0].mean(dim=(0, 2, 3))
    assert red[0] > red[2] and blue[2] > blue[0]  # colours survive decode, resize and normalisation
    again = load_data(f"imagefolder:{image_dir}", 32, seed=5)
    assert torch.equal(again.val.tensors[0], bundle.val.tensors[0])  # the split does not follow the seed


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 255, 0)), ("fox", (0, 0, 255))):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", colour)
    bundle = load_data(f"imagefolder:{tmp_path}", 64)
    assert len(bundle.train) == 12 and len(bundle.val) == 6 and bundle.class_names == ("cat", "dog", "fox")
    assert bundle.train.tensors[0].shape[-1] == 64


def test_imagefolder_errors(tmp_path: Path, image_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no class folders with images"):
        load_data(f"imagefolder:{empty}", 32)
    _png(tmp_path / "one" / "only" / "a.png", (1, 2, 3))
    with pytest.raises(UserError, match="only one class folder"):
        load_data(f"imagefolder:{tmp_path / 'one'}", 32)
    with pytest.raises(UserError, match="is not a directory"):
        load_data(f"imagefolder:{image_dir / 'red' / '0.png'}", 32)
    (image_dir / "red" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="broken.png: cannot read image") as info:
        load_data(f"imagefolder:{image_dir}", 32)
    assert "\n" not in str(info.value)


# -- end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cifar10", "imagefolder"])
def test_proxy_trains_on_natural_image_data(kind: str, cifar_dir: Path, image_dir: Path) -> None:
    from search_space import ArchConfig, StageConfig, StemConfig
    from train_proxy import ProxySpec, train_proxy

    cfg = ArchConfig(
        stages=tuple(StageConfig(block="van", depth=1, width=8 * 2 ** min(i, 2), mlp_ratio=2.0) for i in range(4)),
        stem=StemConfig("conv3", 8),
    )
    spec = f"cifar10:{cifar_dir}" if kind == "cifar10" else f"imagefolder:{image_dir}"
    result = train_proxy(cfg, ProxySpec(epochs=1, batch_size=4, data_fraction=1.0, threads=1, device="cpu"), spec)
    assert result.status == "ok" and result.epochs == 1
    assert (result.n_train, result.n_val) == ((100, 30) if kind == "cifar10" else (8, 2))

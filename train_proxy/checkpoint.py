"""A training directory: what `nas train --save DIR` writes after every epoch and `--resume DIR` reads.

Layout (every file written atomically; none is ever unpickled beyond ``weights_only=True``):

- ``train.json``         how the training was asked for: source config, `ProxySpec`, data, command
- ``config.yaml``        the network exactly as built (data's classes and channels, trained resolution)
- ``model.safetensors``  its weights after the last finished epoch (metadata: epoch, config name)
- ``training_state.pt``  everything a resume needs, in one file so a kill between two writes cannot
                         pair weights of one epoch with an optimizer of another: weights, optimizer,
                         the RNG states (torch, the trainer's generator, Python, NumPy) and history;
                         read back with ``torch.load(weights_only=True)``
- ``history.json``, ``curves.png``   per-epoch loss, accuracy, learning rate and time
- ``result.json``, ``card.md``       at the end: final accuracies (test split included) and a model card

The trainer decides what a state holds (`train_proxy.trainer`); this module only stores it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search_space import ArchConfig
from search_space.errors import ConfigError, UserError
from search_space.files import check_regular, make_dirs, read_bytes, read_json, write_atomic, write_json_atomic

FORMAT = 1
SETTINGS = "train.json"
CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
STATE = "training_state.pt"
HISTORY = "history.json"
CURVES = "curves.png"
RESULT = "result.json"
CARD = "card.md"


@dataclass(frozen=True)
class TrainingDir:
    path: Path
    root: Path | None = None  # the directory the user named (RUN for RUN/final/N); default: path

    @property
    def _root(self) -> Path:
        return self.root if self.root is not None else self.path

    # -- opening ------------------------------------------------------------------------------
    @staticmethod
    def holds_training(path: str | Path) -> bool:
        """Whether ``path`` is (or was started as) a training directory."""
        return (Path(path) / SETTINGS).exists() or (Path(path) / STATE).exists()

    @staticmethod
    def check_new(path: str | Path) -> None:
        """Refuse, before anything is read or written, a ``path`` that cannot hold a new training."""
        path = Path(path)
        if path.is_symlink():
            raise UserError(f"--save {path}: is a symbolic link; give a real directory")
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--save {path}: exists and is not a directory")
            if TrainingDir.holds_training(path):
                raise UserError(f"--save {path}: already holds a training; continue it with --resume {path}")
            if any(path.iterdir()):
                raise UserError(f"--save {path}: directory is not empty")
        if not path.exists() and path.parent.exists() and not path.parent.is_dir():
            raise UserError(f"--save {path}: {path.parent} is not a directory")

    @classmethod
    def create(cls, path: str | Path, root: str | Path | None = None) -> "TrainingDir":
        """A new training directory at ``path`` (created; an existing one must be empty), reached
        from ``root`` (the directory the user named) without following links."""
        path = Path(path)
        cls.check_new(path)
        if root is not None:
            make_dirs(path, root=root)
            return cls(path, Path(root))
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--save {path}: cannot create the directory ({exc.strerror})") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, flag: str = "--resume", root: str | Path | None = None) -> "TrainingDir":
        """An existing training directory, its settings checked readable."""
        path = Path(path)
        if path.is_symlink() or not path.is_dir():
            raise UserError(f"{flag} {path}: not a directory")
        found = cls(path, Path(root) if root is not None else None)
        found.settings()  # refuses a missing or malformed train.json with one line
        return found

    # -- settings and config -------------------------------------------------------------------
    def write_settings(self, settings: dict[str, Any], built: ArchConfig) -> None:
        write_json_atomic(self.path / SETTINGS, {"format": FORMAT, **settings}, root=self._root)
        write_atomic(self.path / CONFIG, built.to_yaml(), root=self._root)

    def settings(self) -> dict[str, Any]:
        where = self.path / SETTINGS
        if where.is_symlink():
            raise UserError(f"{where}: is a symbolic link")
        data = read_json(where, "result", missing_ok=True)
        if data is None:
            raise UserError(f"{self.path}: no {SETTINGS}; not a directory written by nas train --save")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{where}: not a training settings file of format {FORMAT}")
        for key, kind in (("source_config", dict), ("spec", dict), ("data", str)):
            if not isinstance(data.get(key), kind):
                raise UserError(f"{where}: '{key}' missing or of the wrong type")
        return data

    def source_config(self) -> ArchConfig:
        try:
            return ArchConfig.from_dict(self.settings()["source_config"], source=str(self.path / SETTINGS))
        except ConfigError as exc:
            raise UserError(str(exc)) from None

    def built_config(self) -> ArchConfig:
        return ArchConfig.load(self.path / CONFIG)

    # -- per epoch -----------------------------------------------------------------------------
    def save_epoch(self, state: dict[str, Any]) -> None:
        """Store the state the trainer hands over at the end of an epoch."""
        epoch = int(state["epoch"])
        name = self.built_config().name if (self.path / CONFIG).exists() else "model"
        root = self._root
        write_atomic(self.path / WEIGHTS, weights_bytes(state["model"], {"epoch": str(epoch), "config": name}), root=root)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.path / STATE, buffer.getvalue(), root=root)
        write_json_atomic(self.path / HISTORY, state["history"], root=root)
        write_atomic(self.path / CURVES, curves_png(state["history"], f"{name}: training"), root=root)

    def load_state(self) -> dict[str, Any] | None:
        """The last saved state, or None before the first epoch finished."""
        where = self.path / STATE
        if where.is_symlink():
            raise UserError(f"{where}: is a symbolic link")
        raw = read_bytes(where, "weights", missing_ok=True)  # never a FIFO or device
        if raw is None:
            return None
        try:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: pickle, zip and torch errors alike
            raise UserError(f"{where}: unreadable training state ({type(exc).__name__})") from None
        needed = {"epoch": int, "model": dict, "optimizer": dict, "rng": dict, "history": list}
        if not isinstance(state, dict) or any(not isinstance(state.get(k), t) for k, t in needed.items()):
            raise UserError(f"{where}: not a training state written by nas train --save")
        return state

    # -- at the end ----------------------------------------------------------------------------
    def write_result(self, result: dict[str, Any], card: str) -> None:
        write_json_atomic(self.path / RESULT, result, root=self._root)
        write_atomic(self.path / CARD, card, root=self._root)

    def result(self) -> dict[str, Any] | None:
        """result.json once the training finished; None before (or caught half-written)."""
        data = read_json(self.path / RESULT, "result", missing_ok=True, lenient=True)
        return data if isinstance(data, dict) else None


def weights_bytes(state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A state dict as safetensors bytes (CPU, contiguous: channels_last CUDA weights included)."""
    from safetensors.torch import save

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    return save(tensors, metadata={"format": "pt", **metadata})


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    check_regular(path, "weights", missing_ok=True)  # a FIFO or device is refused, not waited on
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable safetensors file ({_reason(exc)})") from None


def curves_png(history: list[dict[str, Any]], title: str) -> bytes:
    """Training loss and validation accuracy per epoch, one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    acc_ax.plot(epochs, [h["val_acc"] for h in history], marker="o", color="tab:green")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(0.5, max(epochs) + 0.5)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
    return text or type(exc).__name__

"""The model zoo (published VAN/CMT models and our ACmix design) and NAME_OR_YAML resolution."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import ArchConfig
from .errors import ConfigError


def zoo_names() -> list[str]:
    """The names of the zoo's models (``van_b0`` ... ``cmt_b``, ``acmix_t``), sorted."""
    folder = resources.files("search_space").joinpath("zoo")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_zoo(name: str) -> ArchConfig:
    """A zoo model's config, as published (an unknown name is a `ConfigError` listing the zoo)."""
    if name not in zoo_names():
        raise ConfigError(f"unknown zoo model '{name}' (zoo: {', '.join(zoo_names())})")
    text = resources.files("search_space").joinpath(f"zoo/{name}.yaml").read_text()
    return ArchConfig.from_yaml(text, source=f"zoo model {name}")


def resolve_config(name_or_path: str) -> ArchConfig:
    """A zoo name (``cmt_s``) or a path to a model config YAML."""
    if name_or_path in zoo_names():
        return load_zoo(name_or_path)
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return ArchConfig.load(path)
    raise ConfigError(f"unknown model '{name_or_path}': not a zoo name ({', '.join(zoo_names())}) nor a file")

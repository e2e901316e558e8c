"""Plug-in discovery: import every module of a package, so that dropping a file in registers it.

Block families (`search_space/blocks/`) and channel attention modules (`search_space/attention/`)
register themselves when imported; their registries call `import_package_modules` once.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_package_modules(package_name: str, skip: tuple[str, ...] = ("registry",)) -> None:
    """Import ``package_name``'s modules in name order, except ``skip`` and names starting with _."""
    package = importlib.import_module(package_name)
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name not in skip and not module.name.startswith("_"):
            importlib.import_module(f"{package_name}.{module.name}")

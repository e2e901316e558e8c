"""Reading the YAML a user hands us (model configs, search spaces) without being hurt by it.

- only regular files are read (a FIFO would block forever, ``/dev/zero`` never ends), at most
  `MAX_YAML_BYTES` of them;
- parsing is `yaml.SafeLoader` (no Python objects) that also refuses duplicate keys (the last one
  silently winning hides mistakes) and documents whose aliases expand past `MAX_YAML_NODES` nodes
  (a "billion laughs" file of 1.6 KB would otherwise expand to gigabytes when walked or printed);
- every problem is a one-line `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import ConfigError
from .files import read_bytes

MAX_YAML_BYTES = 1 << 20  # a model config is ~1 KB, a search space ~2 KB
MAX_YAML_NODES = 100_000  # after alias expansion


def read_text_file(path: str | Path, what: str = "file", max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (`files.read_bytes`, the one
    guarded reader), with errors as one-line `ConfigError`s."""
    raw = read_bytes(path, "yaml", limit=max_bytes, what=what, error=ConfigError)
    assert raw is not None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (binary content)") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents that expand past MAX_YAML_NODES."""

    def construct_document(self, node: Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_short(key)!s}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node) -> None:
    """Count the nodes the document has once every alias is expanded (memoised: aliases share nodes)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, SequenceNode):
            kids = list(node.value)
        elif isinstance(node, MappingNode):
            kids = [n for pair in node.value for n in pair]
        else:
            kids = []
        if children_done or not kids:
            total = 1 + sum(sizes.get(id(k), 0) for k in kids)
            if total > MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"expands to more than {MAX_YAML_NODES} nodes (aliases nested too deep)", node.start_mark
                )
            sizes[id(node)] = total
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)


def load_yaml(text: str, source: str) -> Any:
    loader = _BoundedLoader(text)  # a SafeLoader: plain data only, never Python objects
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({problem(exc)})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int conversion limit)
        raise ConfigError(f"{source}: not valid YAML ({_short(str(exc))})") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, what: str = "file") -> Any:
    return load_yaml(read_text_file(path, what), str(path))


def problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one short line, with its position."""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{_short(what, 160)}{where}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."

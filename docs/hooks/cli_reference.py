"""mkdocs hook: the CLI reference page, generated at build time from the real argparse parsers.

`nas.cli.build_parser()` and `scaling.cli.build_parser()` are walked (every subcommand, nested
verbs such as `nas latency-table build`, argument groups); the page `reference/cli.md` is added to
the site's files before the navigation is built, so it is never written by hand and never stale.
Hidden aliases (old spellings, `help=argparse.SUPPRESS`) are left out, as `--help` leaves them out.

`render_reference()` needs no mkdocs: tests/test_docs.py calls it directly.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from typing import Any

PAGE = "reference/cli.md"
USAGE_COLUMNS = "100"  # usage lines wrap at a fixed width, whatever the building terminal has

INTRO = """\
# CLI reference

Generated from the parsers themselves (`nas.cli.build_parser`, `scaling.cli.build_parser`) each
time the site is built: what is listed here is what `--help` prints and what the commands accept.
Old spellings of renamed flags still work as hidden aliases and are not listed: see
[the vocabulary](../vocabulary.md). `python -m nas` and `python -m scaling` are the same programs.
"""

_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]<>|#])")


def escape(text: str) -> str:
    """Markdown-safe prose: code spans (`...`) kept as they are, special characters escaped elsewhere."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1 else _MARKDOWN_SPECIAL.sub(r"\\\1", p)
                   for p in parts)  # fmt: skip


def prose(text: str) -> str:
    """A raw description as markdown paragraphs: its blank lines separate paragraphs, its other line
    breaks are kept as breaks only where a line is a list item or indented (an example)."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.splitlines()]
        if any(line.startswith("    ") for line in lines):  # an indented example: keep it verbatim
            blocks.append("```text\n" + "\n".join(line.removeprefix("    ") for line in lines) + "\n```")
        else:
            blocks.append(escape(" ".join(line.strip() for line in lines)))
    return "\n\n".join(blocks)


def _visible(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order --help lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a command already listed
                    continue
                seen.add(id(sub))
                yield name, helps.get(name, ""), sub


def _option_names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    value = ""
    if action.nargs != 0:
        metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        if action.choices and action.metavar is None:
            metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
        value = f" {metavar}"
    return ", ".join(f"`{option}{value}`" for option in action.option_strings)


def _default(action: argparse.Action) -> str:
    default: Any = action.default
    if action.nargs == 0 or default is None or default is argparse.SUPPRESS or default == []:
        return ""  # switches (store_true, store_const) and options without a default
    return f"`{default}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    text = parser._get_formatter()._expand_help(action)  # %(default)s and friends, as --help shows them
    return escape(" ".join(text.split()))


def _options_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in actions:
        rows.append(f"| {_option_names(action)} | {_default(action)} | {_help(parser, action)} |")
    return "\n".join(rows)


def _usage(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        usage = parser.format_usage().strip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    first, *rest = usage.removeprefix("usage: ").splitlines()
    return "\n".join([first, *(line[len("usage: "):] if line.startswith(" " * 7) else line for line in rest)])


def render_command(path: str, parser: argparse.ArgumentParser, summary: str = "") -> list[str]:
    """The section of one command (`nas search`), then one section per subcommand it has."""
    level = min(2 + path.count(" "), 4)  # programs h2, commands h3, verbs h4
    out = [f"{'#' * level} {path}", ""]
    description = parser.description or summary
    if description:
        out += [prose(description), ""]
    out += ["```text", _usage(parser), "```", ""]
    subcommands = list(_subcommands(parser))
    if subcommands:
        out += ["| command | does |", "|---|---|"]
        out += [f"| [`{path} {name}`](#{slug(f'{path} {name}')}) | {escape(help_)} |" for name, help_, _ in subcommands]
        out.append("")
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if _visible(a) and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        title = group.title or "arguments"
        out += [f"**{escape(title)}**", "", _options_table(parser, actions), ""]
        if group.description:
            out[-2:-2] = [prose(group.description), ""]
    for name, help_, sub in subcommands:
        out += render_command(f"{path} {name}", sub, help_)
    return out


def slug(title: str) -> str:
    """The anchor mkdocs' table of contents gives a heading (lower case, words joined by '-')."""
    text = re.sub(r"[^\w\s-]", "", title.lower()).strip()
    return re.sub(r"[-\s]+", "-", text)


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """The two programs' parsers, built by their own functions."""
    from nas.cli import build_parser as nas_parser
    from scaling.cli import build_parser as scaling_parser

    return [("nas", nas_parser()), ("scaling", scaling_parser())]


def render_reference() -> str:
    out = [INTRO]
    for prog, parser in parsers():
        out += render_command(prog, parser)
    return "\n".join(out).rstrip() + "\n"


def on_files(files: Any, config: Any) -> Any:
    """mkdocs event: add the generated page before the navigation is built."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render_reference()))
    return files

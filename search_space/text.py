"""User-controlled text (config names, paths, run names) made safe to print or to write into markdown.

A config's ``name:`` or a directory name may hold anything: ANSI escapes that recolour the terminal
or set its title (``"\\x1b]0;pwned\\x07"``), a newline that forges a row of a listing or a section of
a model card. `printable` is the one escaping rule: every character that `str.isprintable` refuses
(C0 and C1 controls, DEL, line and paragraph separators, format characters such as the bidi
overrides, unassigned and surrogate code points, non-ASCII spaces) is written as a Python-style
escape (``\\n``, ``\\t``, ``\\r``, ``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``); everything else, ordinary
Unicode included, is left as it is. Backslashes are not doubled: the result is for humans to
read, not to parse back.

`markdown` and `markdown_code` build on it for cards: text in a table cell or a line, and an inline
code span. Rich consoles also read ``[...]`` as markup: pass their text through
``rich.markup.escape(printable(text))``.
"""

from __future__ import annotations

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` (``str()`` of it) on one line with no control characters: each non-printable
    character escaped (``\\x1b``, ``\\n``, ``\\u202e``, ...), ordinary Unicode kept."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def markdown(text: object) -> str:
    """`printable` text that cannot break a markdown table row: ``|`` escaped as ``\\|`` (read back
    as ``|`` in a cell and in running text alike)."""
    return printable(text).replace("|", "\\|")


def markdown_code(text: object) -> str:
    """`printable` text as an inline markdown code span: fenced with one backtick more than its
    longest run of backticks, so a backtick in a path cannot end the span early. Not for table
    cells (a ``|`` there would still split the cell)."""
    body = printable(text)
    run = longest = 0
    for c in body:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    if body.startswith("`") or body.endswith("`") or (body.startswith(" ") and body.endswith(" ") and body.strip()):
        body = f" {body} "  # CommonMark strips one space each side
    return f"{fence}{body}{fence}"

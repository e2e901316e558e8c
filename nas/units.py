"""Parsing and printing user quantities: a re-export of `search_space.units`, where they live (the
lowest floor, so that cards, reports and scaling print through the same functions as the CLIs).

New code imports `search_space.units` directly; this module stays until the CLIs do.
"""

from __future__ import annotations

from search_space.units import (  # noqa: F401 - re-exported
    MAX_QUANTITY,
    SIGNIFICANT_DIGITS,
    format_count,
    format_macs,
    format_ms,
    format_seconds,
    parse_count,
    parse_macs,
    significant,
)

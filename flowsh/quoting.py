"""Bash words for exported scripts: whatever the text, the word expands to exactly it."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[A-Za-z0-9_./:@%+,=-]+\Z")


def bash_quote(value: object) -> str:
    """A bash word that expands to exactly `value` (single quotes; plain when harmless)."""
    text = "" if value is None else str(value)
    if text and _SAFE.match(text) and not text.startswith(("=", "-")):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def quote_name(value: object) -> str:
    """Always single-quoted: a name (step, channel) or a setting must never read as a bash
    keyword, a command (`wait`: SC2209) or arithmetic (SC2100)."""
    text = "" if value is None else str(value)
    return "'" + text.replace("'", "'\\''") + "'"

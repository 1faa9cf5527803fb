"""flowsh's own writes to a step's log (the step's output goes there through the executor).

A log that cannot be written (a full disk) is a warning naming it, never the end of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowsh import plugins
from flowsh.fileio import atomic_write
from flowsh.secrets import Masker


def append(path: Path, text: str) -> None:
    """A line of flowsh's (`--- flowsh: attempt 2 ---`) after what the step wrote."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        plugins.warn(f"cannot write log {path}: {exc.strerror or exc}")


def remask(path: Path, mask: Masker) -> None:
    """Rewrite a step's log with the secrets known now masked: a step may print a value
    before its output marks it secret."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return
    text = data.decode("utf-8", "surrogateescape")
    masked = "\n".join(mask(line) for line in text.split("\n"))
    if masked == text:
        return
    try:
        atomic_write(path, masked.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        plugins.warn(f"cannot mask the secret outputs in {path}: {exc.strerror or exc}")

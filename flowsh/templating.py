"""Where the jinja2 templates are.

The design card keeps them in the top-level `templates/` directory, which an install ships
as the `flowsh.templates` package. Running from a source checkout (`python3 -m flowsh` in
the repository root puts the source `flowsh/` first on sys.path) has no such package, so
fall back to the directory beside it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def templates_dir() -> Path:
    try:
        from importlib.resources import files

        return Path(str(files("flowsh.templates")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "templates"

"""flowsh: run shell steps as workflows with checkpoints, resume, retries, alerts and cron.

The package root holds only what every plugin needs at import time; the documented
surface for plugin authors and library users is `flowsh.api`.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Not typing's: `flowsh --version` imports nothing but this module (typing: ~2 ms). Type
# checkers treat any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import pluggy

    hookimpl: pluggy.HookimplMarker

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    # Made on first use, so `flowsh --version` does not import pluggy (~11 ms).
    if name == "hookimpl":
        import pluggy

        marker = globals()["hookimpl"] = pluggy.HookimplMarker("flowsh")
        return marker
    raise AttributeError(name)

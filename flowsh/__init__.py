"""flowsh: run shell steps as workflows with checkpoints, resume, retries, alerts and cron.

Public API::

    from flowsh import load_workflow, run_workflow, hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker
    from flowsh.engine import run_workflow
    from flowsh.loader import load_workflow

__all__ = ["__version__", "hookimpl", "load_workflow", "run_workflow"]


def __getattr__(name: str) -> Any:
    # Lazy, so `flowsh --version` and plugin imports stay cheap (pluggy: ~11 ms).
    if name == "hookimpl":
        import pluggy

        marker = globals()["hookimpl"] = pluggy.HookimplMarker("flowsh")
        return marker
    if name == "load_workflow":
        from flowsh.loader import load_workflow

        return load_workflow
    if name == "run_workflow":
        from flowsh.engine import run_workflow

        return run_workflow
    raise AttributeError(name)

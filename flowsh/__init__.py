"""flowsh: run shell steps as workflows with checkpoints, resume, retries, alerts and cron.

The package root holds only what every plugin needs at import time; the documented
surface for plugin authors and library users is `flowsh.api`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("flowsh")

__all__ = ["__version__", "hookimpl"]

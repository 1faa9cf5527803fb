"""Built-in exporters ``crontab`` and ``systemd``: how the workflow's `schedule` runs it."""

from __future__ import annotations

from typing import Any

from flowsh import hookimpl
from flowsh.hookspecs import Register


def export_crontab(workflow: Any, **options: Any) -> str:
    from flowsh.schedjob import render_crontab

    return render_crontab(workflow, options.get("exprs"), script=options.get("script"),
                          path=options.get("path"))


def export_systemd(workflow: Any, **options: Any) -> dict[str, str]:
    """Two files: the user units `flowsh-IDENTITY.service` and `.timer`."""
    from flowsh.schedjob import render_systemd

    return render_systemd(workflow, options.get("exprs"), script=options.get("script"),
                          path=options.get("path"))


@hookimpl
def flowsh_register_exporters(register: Register) -> None:
    register("crontab", export_crontab)
    register("systemd", export_systemd)

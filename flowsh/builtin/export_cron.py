"""Built-in exporter ``crontab``: the marked crontab block for a workflow's `schedule`."""

from __future__ import annotations

from typing import Any

from flowsh import hookimpl
from flowsh.hookspecs import Register


def export_crontab(workflow: Any, **options: Any) -> str:
    from flowsh.schedjob import render_crontab

    return render_crontab(workflow, options.get("exprs"), script=options.get("script"),
                          path=options.get("path"))


@hookimpl
def flowsh_register_exporters(register: Register) -> None:
    register("crontab", export_crontab)

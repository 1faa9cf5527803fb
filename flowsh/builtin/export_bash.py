"""Built-in exporter ``bash``: the workflow as one standalone bash script."""

from __future__ import annotations

from typing import Any

from flowsh import hookimpl
from flowsh.hookspecs import Register


def export_bash(workflow: Any, **options: Any) -> str:
    from flowsh.export import render_bash

    return render_bash(workflow, inline=bool(options.get("inline")),
                       script_name=options.get("script_name"))


@hookimpl
def flowsh_register_exporters(register: Register) -> None:
    register("bash", export_bash)

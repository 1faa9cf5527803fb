"""Built-in executor ``local``: steps as process groups on this machine."""

from __future__ import annotations

from flowsh import hookimpl
from flowsh.hookspecs import Register


@hookimpl
def flowsh_register_executors(register: Register) -> None:
    from flowsh.process import LocalExecutor

    register("local", LocalExecutor)

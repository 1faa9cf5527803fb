"""flowsh.builtin.exec_local: `local` is the LocalExecutor, registered through the hook."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flowsh import plugins
from flowsh.executor import StepRequest
from flowsh.process import LocalExecutor


def test_registered_as_local_by_the_builtin() -> None:
    assert plugins.registry("executors")["local"] is LocalExecutor
    assert plugins.registered_by("executors", "local") == "exec_local"


def test_the_registered_factory_runs_a_step(tmp_path: Path) -> None:
    factory = plugins.registry("executors")["local"]
    ex = factory()
    try:
        ex.start(StepRequest(key="k", argv=["bash", "-c", "exit 7"], cwd=str(tmp_path),
                             env={"PATH": os.environ["PATH"]}, log_path=str(tmp_path / "k.log")))
        got: list = []
        end = time.monotonic() + 30
        while not got and time.monotonic() < end:
            got = ex.wait(1.0)
        assert [(k, o.exit_code) for k, o in got] == [("k", 7)]
    finally:
        ex.close()


def test_executor_options_refused_through_the_registry() -> None:
    import pytest

    from flowsh.errors import UsageError

    with pytest.raises(UsageError, match="executor 'local' takes no executor_options"):
        plugins.registry("executors")["local"](workers=4)


def test_a_third_party_plugin_can_replace_local() -> None:
    from typing import Any

    from flowsh import hookimpl

    class Mine:
        @hookimpl
        def flowsh_register_executors(self, register: Any) -> None:
            register("local", dict)

    plugins.reset()
    pm = plugins.get_plugin_manager()
    mine = Mine()
    pm.register(mine, name="my-executor")
    try:
        assert plugins.registry("executors")["local"] is dict
        assert plugins.registered_by("executors", "local") == "my-executor"
    finally:
        pm.unregister(mine)
        plugins.reset()
    assert plugins.registry("executors")["local"] is LocalExecutor

"""flowsh plugin ``celery``: steps run on Celery workers (``executor: celery``).

Importing this module stays cheap (flowsh imports every plugin at each CLI start):
celery itself is imported only when a run asks for this executor.
"""

from __future__ import annotations

from typing import Any

from flowsh.api import Register, hookimpl


def _factory(**options: Any) -> Any:
    from flowsh_celery.executor import CeleryExecutor

    return CeleryExecutor(**options)


def _check_options(options: dict[str, Any]) -> None:
    from flowsh_celery.options import check_options

    check_options(options)


_factory.check_options = _check_options  # type: ignore[attr-defined]


@hookimpl
def flowsh_register_executors(register: Register) -> None:
    register("celery", _factory)

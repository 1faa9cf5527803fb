"""The Celery app both sides build: same task name, serializer and queue defaults."""

from __future__ import annotations

import os
from typing import Any

TASK_NAME = "flowsh_celery.run_step"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "flowsh"


def settings(
    broker: str | None = None, backend: str | None = None, queue: str | None = None
) -> tuple[str, str | None, str]:
    """Options win over FLOWSH_CELERY_* variables, which win over the defaults.

    A Redis broker doubles as the result backend unless another is given.
    """
    broker = broker or os.environ.get("FLOWSH_CELERY_BROKER") or DEFAULT_BROKER
    backend = backend or os.environ.get("FLOWSH_CELERY_BACKEND") or None
    if backend is None and broker.startswith(("redis://", "rediss://")):
        backend = broker
    queue = queue or os.environ.get("FLOWSH_CELERY_QUEUE") or DEFAULT_QUEUE
    return broker, backend, queue


def make_app(broker: str, backend: str | None, queue: str, connect_timeout: float = 3.0) -> Any:
    from celery import Celery

    app = Celery("flowsh_celery", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        # STARTED carries the worker's hostname and pid: flowsh shows where a step runs
        # and measures its own deadline from there, not from the time it was queued.
        task_track_started=True,
        # A step can run for hours: a worker takes one at a time per pool process.
        worker_prefetch_multiplier=1,
        # At most once: a step is shell work that may not be idempotent. If the worker
        # dies mid-step the task fails (or is lost) and flowsh's retry policy decides.
        task_acks_late=False,
        result_expires=86400,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=connect_timeout,
        redis_socket_connect_timeout=connect_timeout,
        redis_socket_timeout=max(connect_timeout, 10.0),
        redis_backend_health_check_interval=30,
        worker_hijack_root_logger=False,
    )
    return app

"""What both sides share: the Celery app, the settings, and the attempt protocol.

The attempt protocol lives in the result backend's Redis (keys under ``flowsh:``), because
Celery alone cannot promise "at most one live attempt of a step": a revoke reaches only
the workers alive at that moment, a reserved task comes back after the broker's
visibility timeout, and a worker's death is seen only when its result never comes.

* ``want:RUN:KEY`` holds the task id of the one attempt of step KEY of run RUN that may
  run. The runner sets it before it sends the task and changes it (to ``x:...``) when it
  gives up on that attempt (queue timeout, Ctrl-C, a resume after a crash).
* ``run:RUN`` exists while the run's runner lives (a TTL it keeps refreshing).
* A worker *claims* an attempt before it starts anything, atomically (one Lua script):
  only if ``want`` still names it, the run is live and nobody claimed it before. So an
  abandoned, expired, late-delivered or redelivered task never runs, and once the runner
  has switched ``want`` away from an unclaimed attempt, no worker can start it.
* ``beat:TASK`` exists (TTL ``lost_after``) while the attempt runs: the worker refreshes
  it; the runner declares the worker lost when it is gone without a result.
* ``cancel:TASK`` asks the worker to stop the attempt (TERM, then KILL its group).
* ``ev:CLIENT`` is a list the worker pushes the attempt's start and end (with the step's
  output) to; the runner blocks on it (BLPOP) rather than polling each task's state.
* ``worker:NAME`` (TTL) and the set ``workers`` say which workers report here and which
  queues they consume, so a runner can tell "nobody listens on this queue with this
  result backend" before it submits anything.
"""

from __future__ import annotations

import json
import os
from typing import Any

TASK_NAME = "flowsh_celery.run_step"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "flowsh"
PREFIX = "flowsh:"
KEEP = 7 * 86400  # how long protocol keys outlive their use (seconds)
ADVERT_EVERY = 5.0  # a worker says it is there this often...
ADVERT_TTL = 20  # ...and is forgotten after this long without saying so
RUN_TTL = 30  # a run's liveness key lasts this long without its runner refreshing it
DEFAULT_LOST_AFTER = 10.0
DEFAULT_QUEUE_TIMEOUT = 300.0

# KEYS: want, run, claim, beat, events; ARGV: task id, claim (JSON), beat TTL (ms),
# start event (JSON). Returns "ok" or why the attempt must not run.
CLAIM = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 'stale' end
if redis.call('exists', KEYS[2]) == 0 then return 'norun' end
if not redis.call('set', KEYS[3], ARGV[2], 'NX', 'EX', KEEP) then return 'dup' end
redis.call('set', KEYS[4], '1', 'PX', ARGV[3])
redis.call('rpush', KEYS[5], ARGV[4])
redis.call('expire', KEYS[5], 86400)
return 'ok'
""".replace("KEEP", str(KEEP))

# KEYS: want; ARGV: expected task id ('' = whichever), new value, key prefix.
# Settles a step's attempt: from now on it can never be claimed. Returns the task id it
# settled ('' if none), whether that attempt was claimed and whether it still beats.
SETTLE = """
local cur = redis.call('get', KEYS[1])
if not cur or string.sub(cur, 1, 2) == 'x:' then return {'', 0, 0} end
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {'', 0, 0} end
redis.call('set', KEYS[1], ARGV[2], 'EX', KEEP)
return {cur, redis.call('exists', ARGV[3] .. 'claim:' .. cur),
        redis.call('exists', ARGV[3] .. 'beat:' .. cur)}
""".replace("KEEP", str(KEEP))


def want_key(run_id: str, key: str) -> str:
    return f"{PREFIX}want:{run_id}:{key}"


def run_key(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}"


def task_key(kind: str, task_id: str) -> str:
    return f"{PREFIX}{kind}:{task_id}"


def events_key(client: str) -> str:
    return f"{PREFIX}ev:{client}"


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


def env_transport_options() -> dict[str, Any]:
    """FLOWSH_CELERY_TRANSPORT_OPTIONS: a JSON object (the worker's side of
    executor_options.transport_options)."""
    text = os.environ.get("FLOWSH_CELERY_TRANSPORT_OPTIONS", "").strip()
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("FLOWSH_CELERY_TRANSPORT_OPTIONS must be a JSON object")
    return value


def make_app(broker: str, backend: str | None, queue: str, connect_timeout: float = 3.0,
             transport_options: dict[str, Any] | None = None) -> Any:
    from celery import Celery

    app = Celery("flowsh_celery", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        # The step's start and end travel through flowsh's own keys (see above): Celery's
        # result records would be one more write per step that nobody reads.
        task_ignore_result=True,
        # A step can run for hours: a worker takes one at a time per pool process.
        worker_prefetch_multiplier=1,
        # At most once: a step is shell work that may not be idempotent. A redelivered
        # task finds its attempt claimed and does not run; flowsh's retry policy decides.
        task_acks_late=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=connect_timeout,
        broker_transport_options=dict(transport_options or {}),
        redis_socket_connect_timeout=connect_timeout,
        redis_socket_timeout=max(connect_timeout, 10.0),
        redis_backend_health_check_interval=30,
        worker_hijack_root_logger=False,
    )
    return app

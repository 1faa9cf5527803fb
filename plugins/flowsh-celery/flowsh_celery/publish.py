"""Publishing a task to a Redis broker without Celery on the runner's side.

Importing Celery and building its app costs the runner a few hundred milliseconds at
start-up, and `send_task` a few milliseconds per step; with a Redis broker a task is one
LPUSH of a JSON envelope, sent in the same round trip as the attempt's `want` key. The
envelope is exactly what Celery 5 (task protocol 2) and kombu's Redis transport write for
``send_task(name, args, queue=Q, task_id=..., expires=...)`` through the default
exchange (captured from celery 5.7 / kombu 5.7 and checked by the plugin's tests against
real workers): the workers are plain Celery workers and read it as their own.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import uuid
from typing import Any

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def task_envelope(name: str, task_id: str, queue: str, args: list[Any], expires: float,
                  argsrepr: str) -> str:
    """The message kombu's Redis transport stores in the list named `queue`."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires)
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}])
    headers = {
        "lang": "py", "task": name, "id": task_id, "shadow": None,
        "eta": None, "expires": when.isoformat(), "group": None, "group_index": None,
        "retries": 0, "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": argsrepr, "kwargsrepr": "{}", "origin": _ORIGIN,
        "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id, "reply_to": "", "argsrepr": argsrepr,
        "kwargsrepr": "{}", "delivery_mode": 2, "expiration": str(int(expires * 1000)),
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
        "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
    }
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": headers, "properties": properties,
    })

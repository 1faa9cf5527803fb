"""HTTP for notifiers and pings (stdlib only): a bounded POST with retries, and URLs as
errors may show them (webhook paths often carry the secret)."""

from __future__ import annotations

import json
import time
from typing import Any


def post_json(url: str, payload: Any, *, headers: dict[str, str] | None = None,
              timeout: float = 10.0, retries: int = 2, retry_delay: float = 1.0) -> int:
    """POST ``payload`` as JSON; returns the status. 5xx and network errors are retried
    (``retry_delay`` doubled each time) while ``timeout`` lasts; a 4xx is not."""
    import urllib.error
    import urllib.request

    from flowsh import __version__

    body = json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", "User-Agent": f"flowsh/{__version__}",
            **(headers or {})}
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        req = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
        left = max(0.1, deadline - time.monotonic())
        try:
            with urllib.request.urlopen(req, timeout=left) as resp:  # http(s) only: checked
                status: int = resp.status
                return status
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt > retries:
                raise RuntimeError(f"{url_for_errors(url)} answered {exc.code} {exc.reason}"
                                   ) from None
            error = f"{exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            if attempt > retries:
                reason = getattr(exc, "reason", exc)
                raise RuntimeError(f"{url_for_errors(url)}: {reason}") from None
            error = str(exc)
        delay = retry_delay * (2 ** (attempt - 1))
        if time.monotonic() + delay >= deadline:
            raise RuntimeError(f"{url_for_errors(url)}: {error} (out of time for a retry)")
        time.sleep(delay)


def url_for_errors(url: str) -> str:
    """Scheme and host only: webhook paths often carry the secret (Slack, healthchecks)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # user:password@ is a secret too
    return f"{parts.scheme}://{host}/..."

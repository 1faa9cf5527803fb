"""`flowsh wrap --ping URL`: healthchecks.io-style pings, the way runitor sends them.

The protocol (https://healthchecks.io/docs/http_api/, also served by self-hosted
healthchecks and compatible monitors): ``URL/start`` when the command starts (the monitor
measures the duration and notices a run that never finishes), ``URL`` on success,
``URL/<exit code>`` on failure. Each is a POST whose body is the tail of the output
(healthchecks keeps the body with the event, so the failure is readable from the alert).

Each ping carries ``rid=<uuid>`` (healthchecks' run id, a UUID derived from flowsh's run
id, the same for the start and the end of one run), so the monitor pairs a start with its
own end when runs overlap, and the ping links back to `flowsh status RUN_ID`. A URL that
names its own ``rid`` keeps it.

A ping that cannot be delivered is a warning on stderr, never a change of the command's
exit code: monitoring must not break the job it watches.
"""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh.engine import Reporter
from flowsh.errors import UsageError
from flowsh.http import url_for_errors

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord

TAIL_BYTES = 10_000  # healthchecks stores up to 100 kB of body; the end is what matters
TIMEOUT = 10.0  # for the whole ping: connecting, sending, reading the answer
_ANSWER_BYTES = 64 * 1024  # healthchecks answers "OK"; never hold a flood in memory


def check_ping_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--ping {url!r}: give the check's http(s) URL")
    return url


def with_suffix(url: str, suffix: str) -> str:
    """`url` with `suffix` (``/start``, ``/7``) added to its path, before any query.

    healthchecks documents query parameters on ping URLs (``?create=1``, ``?rid=...``):
    appended as text, ``.../backup?create=1/7`` reaches the server as a success ping of
    ``.../backup`` whose `create` parameter is ``1/7`` (rt18 #8). A trailing slash of the
    path is tolerated, as it always was.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


def rid_of(run_id: str) -> str:
    """healthchecks wants a UUID: one derived from the run id, stable across processes."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowsh:run:{run_id}"))


def with_rid(url: str, run_id: str | None) -> str:
    """`url` with ``rid=`` the run's UUID added to its query, unless it names one."""
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    if not run_id:
        return url
    parts = urlsplit(url)
    if any(k == "rid" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    query = (parts.query + "&" if parts.query else "") + f"rid={rid_of(run_id)}"
    return urlunsplit(parts._replace(query=query))


def ping_url(url: str, suffix: str, run_id: str | None) -> str:
    """`url` + ``/suffix`` in its path (none when empty), + ``rid=`` the run's UUID."""
    return with_rid(with_suffix(url, f"/{suffix}" if suffix else ""), run_id)


class Pinger:
    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = check_ping_url(url)
        self.timeout = timeout

    def send(self, suffix: str = "", body: bytes = b"", run_id: str | None = None) -> None:
        """POST, giving up after `timeout` seconds in all: urllib's own timeout is per
        socket operation, so a server that trickles its answer (or a resolver that hangs)
        would otherwise hold the job forever; the abandoned attempt is a daemon thread."""
        url = with_rid(with_suffix(self.url, suffix), run_id)
        outcome: list[str] = []
        worker = threading.Thread(target=self._post, args=(url, body, outcome),
                                  name="flowsh-ping", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            problem = f"no answer within {self.timeout:g}s"
        else:
            problem = outcome[0] if outcome else "failed"
        if problem:
            # Host only: a healthchecks check's UUID is its secret (as flowsh.http says).
            sys.stderr.write(f"flowsh: warning: --ping {url_for_errors(url)}: {problem}\n")

    def _post(self, url: str, body: bytes, outcome: list[str]) -> None:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"User-Agent": "flowsh-wrap"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read(_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            outcome.append(f"HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            outcome.append(str(exc.reason))
        except Exception as exc:
            # Anything else (a garbage status line or an endless header is http.client's
            # HTTPException, not OSError) is a warning too: monitoring must not break the job.
            outcome.append(f"{type(exc).__name__}: {exc}")
        else:
            outcome.append("")

    def finished(self, run: RunRecord, exit_code: int) -> None:
        suffix = "" if exit_code == 0 else f"/{exit_code}"
        self.send(suffix, output_tail(run), run.run_id)


def output_tail(run: RunRecord, limit: int = TAIL_BYTES) -> bytes:
    """The last `limit` bytes of the run's step logs, in step order."""
    chunks: list[bytes] = []
    for rec in run.steps.values():
        if rec.log_path and Path(rec.log_path).exists():
            with open(rec.log_path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - limit))
                chunks.append(fh.read())
    return b"".join(chunks)[-limit:]


class PingOnStart(Reporter):
    """Another reporter, plus `URL/start` once the run has its lock and starts."""

    def __init__(self, inner: Reporter, pinger: Pinger) -> None:
        self.inner, self.pinger = inner, pinger
        self.wants_output = inner.wants_output

    @property  # type: ignore[override]
    def prefix(self) -> bool:
        return self.inner.prefix

    @prefix.setter
    def prefix(self, value: bool) -> None:
        self.inner.prefix = value

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        self.pinger.send("/start", run_id=run.run_id)
        self.inner.run_started(run, wf)

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        self.inner.step_started(run, step)

    def step_output(self, step: str, line: str) -> None:
        self.inner.step_output(step, line)

    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None:
        self.inner.step_retrying(run, step, delay)

    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None:
        self.inner.step_waiting(run, step, pool)

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        self.inner.step_finished(run, step)

    def run_finished(self, run: RunRecord) -> None:
        self.inner.run_finished(run)

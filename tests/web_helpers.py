"""`flowsh serve` as a real process on a free loopback port, for tests/test_web_*.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

FLOW = """\
name: nightly
params:
  WHO: world
steps:
  - name: fetch
    run: echo "fetching for $WHO"; sleep 0.5
  - name: load
    needs: [fetch]
    run: |
      echo loading
      if [ ! -f "{flag}" ]; then echo "no flag file {flag}: failing" >&2; exit 3; fi
      echo loaded
  - name: publish
    needs: [load]
    run: echo published
"""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    csrf: str
    client: httpx.Client
    token: str
    printed: str  # the URL `flowsh serve` printed (with ?token= when it made the token)

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.client.post(path, json=body, headers=headers, **kw)


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something true; its value."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def serve(home: Path, *args: str, env: dict[str, str] | None = None,
          token: str | None = None,
          preexec_fn: Callable[[], None] | None = None) -> Iterator[Server]:
    out = home / f"serve-{time.monotonic_ns()}.out"
    full_env = {**os.environ, "FLOWSH_HOME": str(home), **(env or {})}
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "serve", "--port", "0", *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=preexec_fn)
    try:
        def url() -> re.Match[str] | None:
            if proc.poll() is not None:
                raise AssertionError(f"flowsh serve exited: {out.read_text()}")
            return re.search(r"http://(\S+?):(\d+)/\?token=(\S+)", out.read_text())

        m = wait_for(url, 30, "the URL flowsh serve prints")
        base = f"http://127.0.0.1:{m.group(2)}"
        # The token it was given, else the one it made and printed.
        token = token or m.group(3)
        assert token != "YOUR_TOKEN", "give serve() the token given to the server"
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        session = wait_for(lambda: _get_ok(client, "/api/v1/session"), 30, "the server")
        yield Server(base, proc, session["csrf_token"], client, token, m.group(0))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get_ok(client: httpx.Client, path: str) -> Any:
    try:
        r = client.get(path)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


def wait_status(srv: Server, run_id: str, statuses: tuple[str, ...],
                timeout: float = 60) -> dict[str, Any]:
    def done() -> Any:
        got = srv.client.get(f"/api/v1/runs/{run_id}").json()
        return got if got["status"] in statuses else None

    return wait_for(done, timeout, f"run {run_id} to be {'/'.join(statuses)}")


def sse_events(srv: Server, path: str, until: Callable[[str, str], bool],
               timeout: float = 30) -> list[tuple[str, str]]:
    """Read a Server-Sent Events stream until `until(event, data)` says so."""
    got: list[tuple[str, str]] = []
    event, data = "message", []
    with srv.client.stream("GET", path, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                got.append((event, "\n".join(data)))
                if until(event, got[-1][1]):
                    return got
                event, data = "message", []
    return got

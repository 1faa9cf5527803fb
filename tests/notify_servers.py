"""Real servers on loopback for the notifier tests: HTTP, SMTP (aiosmtpd), a silent socket.

Import the fixtures into a test module: ``from tests.notify_servers import http_server_fixture``
(each is named ``X_fixture`` and provides fixture ``X``, so ruff sees no redefinition).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HTTPRecorder:
    url: str
    requests: list[Request] = field(default_factory=list)
    # Statuses to answer with, in order; then 200. "hang" sleeps instead of answering.
    script: list[int | str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(name="http_server")
def http_server_fixture() -> Iterator[HTTPRecorder]:
    rec = HTTPRecorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rec.requests.append(Request("POST", self.path, dict(self.headers), body))
            action = rec.script.pop(0) if rec.script else 200
            if action == "hang":
                rec.release.wait(30)
                return
            self.send_response(int(action))
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rec
    rec.release.set()
    server.shutdown()
    server.server_close()


@dataclass
class SMTPRecorder:
    host: str
    port: int
    messages: list[Any] = field(default_factory=list)
    auth: list[tuple[str, str]] = field(default_factory=list)


def _smtp(refuse: bool = False, users: dict[str, str] | None = None, tls: Any = None
          ) -> Iterator[SMTPRecorder]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    rec = SMTPRecorder("127.0.0.1", 0)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if refuse:
                return "550 5.7.1 relaying denied"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            from email import message_from_bytes, policy

            msg = message_from_bytes(envelope.content, policy=policy.default)
            rec.messages.append((envelope, msg))
            return "250 Message accepted"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and users is not None
              and users.get(auth_data.login.decode()) == auth_data.password.decode())
        if ok:
            rec.auth.append((auth_data.login.decode(), mechanism))
        return AuthResult(success=ok, handled=False)  # handled=False: server answers 535

    kwargs: dict[str, Any] = {}
    if users is not None:
        kwargs.update(authenticator=authenticator, auth_require_tls=tls is not None)
    if tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port(), **kwargs)
    controller.start()
    rec.port = controller.port
    yield rec
    controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SMTPRecorder]:
    yield from _smtp()


@pytest.fixture(name="smtp_refusing")
def smtp_refusing_fixture() -> Iterator[SMTPRecorder]:
    yield from _smtp(refuse=True)


@pytest.fixture(name="smtp_auth")
def smtp_auth_fixture() -> Iterator[SMTPRecorder]:
    yield from _smtp(users={"ops": "s3cret-pass"})


@pytest.fixture(name="silent_server")
def silent_server_fixture() -> Iterator[tuple[str, int]]:
    """Accepts TCP connections and never says a word (a hung SMTP/HTTP server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield "127.0.0.1", sock.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll until ``predicate()`` is true (for background timers); not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())

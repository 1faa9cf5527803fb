"""A real HTTP server on 127.0.0.1, in a thread, that records requests and answers from a
script of statuses (the last one repeats)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    statuses: list[int]
    requests: list[Seen] = field(default_factory=list)
    hang: threading.Event | None = None  # set: the handler waits on it before answering


@contextmanager
def serve(statuses: list[int] | None = None, *, hang: bool = False) -> Iterator[Server]:
    server = Server(url="", statuses=list(statuses or [200]),
                    hang=threading.Event() if hang else None)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            server.requests.append(Seen("POST", self.path, dict(self.headers), body))
            if server.hang is not None:
                server.hang.wait(30)
            status = server.statuses.pop(0) if len(server.statuses) > 1 else server.statuses[0]
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def do_PUT(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            server.requests.append(Seen("PUT", self.path, dict(self.headers), body))
            self.send_response(server.statuses[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if server.hang is not None:
            server.hang.set()
        httpd.shutdown()
        httpd.server_close()

"""uvicorn as `flowsh serve` runs it: with a deadline on every request, so idle and slow
clients cannot hold the server's connections for ever.

uvicorn's own `timeout_keep_alive` starts only after a response, and any byte received
cancels it: a client that connects and says nothing, or trickles a header a byte at a time
(slowloris), keeps its connection, and its file descriptor, for ever; enough of them and
nobody else gets in. Here a connection must deliver a whole request (headers and body)
within `REQUEST_DEADLINE` seconds of opening, or of its previous response; else it is
closed. A request fully received is the app's: a Server-Sent Events stream lives as long as
its client listens.

The other direction too: a client that sends requests (pipelined) and never reads the
answers fills the socket's buffers, and uvicorn then waits for the writes to drain for
ever. Once the transport says "stop writing" (its buffer is over the high-water mark), the
client has `REQUEST_DEADLINE` seconds to read enough for writing to resume; else the
connection is aborted (its buffered output dropped: nobody was reading it).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_DEADLINE = 10.0
KEEP_ALIVE = 5.0  # idle after a response (uvicorn's default, said here)
MAX_HEADER_BYTES = 16 * 1024  # h11's limit on an incomplete request head
FD_WANTED = 65536


class DeadlineProtocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None
    _write_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_write()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(REQUEST_DEADLINE, self._write_stalled)

    def resume_writing(self) -> None:
        self._disarm_write()
        super().resume_writing()

    def _disarm_write(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_stalled(self) -> None:
        # The client has not read its answers for REQUEST_DEADLINE seconds: close() would
        # wait for the buffer to drain (never); abort drops it and frees the connection.
        self._write_deadline = None
        self.transport.abort()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request has as long as the first had

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            return  # the request is all in: its response is the app's to give
        # Nothing, part of a head, or a body still trickling in: close (the app, if it was
        # reading the body, sees the client go).
        self.transport.close()


def config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, http=DeadlineProtocol,
                          timeout_keep_alive=int(KEEP_ALIVE),
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          log_level="warning", access_log=False)


def raise_fd_limit() -> None:
    """Every connection is a file descriptor: a soft limit of 1024 (a common default) is
    reached by one client's idle connections long before the deadline frees them. Up to
    the hard limit, which an unprivileged process may do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        # Not allowed here: the deadline still frees them.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

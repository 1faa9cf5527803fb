"""What one `flowsh serve` knows: where runs are, which workflow files it may start, and
its security settings."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field

from flowsh.web.data import Known
from flowsh.web.sse import Hub


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time: how long a comparison takes says nothing about the secret."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether `host` names loopback, in any spelling the resolver takes for it: names are
    case-insensitive (`LOCALHOST`, `localhost.`), and inet_aton reads `127.1` and
    `0x7f.1` as 127.0.0.1 (the socket is bound with getaddrinfo, which takes them)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name)).is_loopback
    except OSError:
        return False


@dataclass
class ServeConfig:
    state: str | None
    known: Known
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    read_only: bool = False
    # Whether the Host header is checked (a loopback server): by default from `host`;
    # `flowsh serve` says it from the address it actually bound.
    loopback: bool | None = None
    # Per server start: a page from a previous server cannot post to this one.
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # What the `?token=` login puts in the browser's cookie, never the token itself: a
    # browser sends a 127.0.0.1 cookie to every port of it, any of which another account
    # may listen on. This value is good for this server's life only, and never as Bearer.
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    hub: Hub = field(init=False)

    def __post_init__(self) -> None:
        if self.loopback is None:
            self.loopback = is_loopback(self.host)
        self.hub = Hub(self.state)

    @property
    def cookie_name(self) -> str:
        """Per port: two servers on one host (cookies ignore ports) keep their logins."""
        return f"flowsh_session_{self.port}"

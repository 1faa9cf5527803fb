"""What one `flowsh serve` knows: where runs are, which workflow files it may start, and
its security settings."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field

from flowsh.web.data import Known
from flowsh.web.sse import Hub


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time: how long a comparison takes says nothing about the secret."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    state: str | None
    known: Known
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    read_only: bool = False
    # Per server start: a page from a previous server cannot post to this one.
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hub: Hub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = Hub(self.state)

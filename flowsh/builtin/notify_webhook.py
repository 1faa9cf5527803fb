"""Built-in notifier ``webhook``: the alert as JSON, POSTed with a timeout and retries.

Config: ``url`` (http or https, required), ``headers`` (mapping), ``token_env`` (the name
of a variable whose value is sent as ``Authorization: Bearer ...``), ``retries`` (default
2), ``retry_delay`` (default 1s, doubled per retry), ``timeout`` (per attempt and overall).
A 4xx answer is not retried (the request is wrong); 5xx and network errors are.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl
from flowsh.hookspecs import Register
from flowsh.http import post_json

if TYPE_CHECKING:
    from flowsh.notify import Alert


def check_url(channel: str, config: dict[str, Any], key: str = "url") -> str:
    from flowsh.notify import config_error, get_str

    url = get_str(channel, config, key, required=True) or ""
    if not url.startswith(("http://", "https://")):
        raise config_error(channel, key, "must be an http:// or https:// URL")
    return url


class WebhookNotifier:
    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        from flowsh.notify import (
            channel_timeout,
            check_keys,
            config_error,
            get_count,
            get_number,
            get_str,
        )

        check_keys(channel, config, {"url", "headers", "token_env", "retries", "retry_delay"})
        self.url = check_url(channel, config)
        headers = config.get("headers") or {}
        if not isinstance(headers, dict):
            raise config_error(channel, "headers", "must be a mapping of Header: value")
        self.headers = {str(k): str(v) for k, v in headers.items()}
        self.token_env = get_str(channel, config, "token_env")
        self.retries = get_count(channel, config, "retries", 2)
        self.retry_delay = get_number(channel, config, "retry_delay", 1.0)
        self.timeout = channel_timeout(channel, config)

    def send(self, alert: Alert) -> None:
        headers = dict(self.headers)
        if self.token_env:
            token = os.environ.get(self.token_env)
            if not token:
                raise RuntimeError(f"${self.token_env} (token_env) is not set")
            headers["Authorization"] = f"Bearer {token}"
        post_json(self.url, alert.to_dict(), headers=headers, timeout=self.timeout,
                  retries=self.retries, retry_delay=self.retry_delay)


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("webhook", WebhookNotifier)

"""flowsh plugin ``healthchecks``: ping a healthchecks.io-style URL as runs start and end.

Declared as a notify channel (``type: healthchecks``) so it is validated and configured
like any channel; the run hooks ping every channel of this type. Each ping carries ``rid=``
(healthchecks' run id, a UUID from flowsh's run id: a start pairs with its own end when
runs overlap).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flowsh.api import (
    SUCCEEDED,
    Alert,
    Register,
    RunContext,
    build_notifier,
    channel_timeout,
    check_keys,
    config_error,
    get_count,
    get_str,
    hookimpl,
    log_tail,
    ping_url,
    url_for_errors,
    warn,
)


class HealthchecksChannel:
    implicit_routes = False  # alerts reach it only when a route names it

    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        check_keys(channel, config, {"url", "url_env", "exit_codes", "retries"})
        self.channel = channel
        self.url = get_str(channel, config, "url")
        self.url_env = get_str(channel, config, "url_env")
        if bool(self.url) == bool(self.url_env):
            raise config_error(channel, "url", "give exactly one of `url` or `url_env`")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise config_error(channel, "url", "must be an http(s) URL")
        self.exit_codes = config.get("exit_codes", True)
        if not isinstance(self.exit_codes, bool):
            raise config_error(channel, "exit_codes", "must be true or false")
        self.retries = get_count(channel, config, "retries", 2)
        self.timeout = channel_timeout(channel, config)

    def base(self) -> str:
        url = self.url or os.environ.get(self.url_env or "")
        if not url:
            raise RuntimeError(f"${self.url_env} (url_env) is not set")
        return url.rstrip("/")

    def ping(self, suffix: str, body: str = "", run_id: str | None = None) -> None:
        import urllib.request

        url = ping_url(self.base(), suffix, run_id)
        req = urllib.request.Request(url, data=body.encode()[:100_000], method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout):
                    return
            except OSError as exc:
                last = exc
        raise RuntimeError(f"ping {url_for_errors(url)} failed: {last}")

    def send(self, alert: Alert) -> None:
        self.ping("log", alert.text, alert.run_id if alert.run_id != "-" else None)


def _channels(ctx: RunContext) -> list[HealthchecksChannel]:
    out = []
    for name, ch in ctx.notify.channels.items():
        if ch.type == "healthchecks":
            notifier = build_notifier(name, ch.model_dump())
            assert isinstance(notifier, HealthchecksChannel)
            out.append(notifier)
    return out


def _ping_all(ctx: RunContext, suffix_for: Any, body: str = "") -> None:
    def one(ch: HealthchecksChannel) -> None:
        try:
            ch.ping(suffix_for(ch), body, ctx.run.run_id)
        except Exception as exc:
            warn(f"healthchecks channel {ch.channel!r}: {exc}")

    # Channels are pinged at once, each bounded by its own timeout and retries.
    channels = _channels(ctx)
    threads = [threading.Thread(target=one, args=(ch,), daemon=True) for ch in channels]
    for t in threads:
        t.start()
    for t, ch in zip(threads, channels, strict=True):
        t.join(ch.timeout * (ch.retries + 1) + 1)


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("healthchecks", HealthchecksChannel)


@hookimpl
def flowsh_run_started(ctx: RunContext) -> None:
    _ping_all(ctx, lambda ch: "start", f"run {ctx.run.run_id} started")


@hookimpl
def flowsh_run_finished(ctx: RunContext) -> None:
    run = ctx.run
    code = run.exit_code if run.exit_code is not None else (0 if run.status == SUCCEEDED else 1)
    body = f"run {run.run_id} {run.status} (exit {code})"
    failed = [s for s in run.steps.values() if s.status == "failed"]
    if failed:
        body += f"\nstep {failed[0].name} failed:\n{log_tail(failed[0].log_path)}"
    body = ctx.masker(body)

    def suffix(ch: HealthchecksChannel) -> str:
        if ch.exit_codes:
            return str(code)
        return "" if code == 0 else "fail"  # the bare URL means success

    _ping_all(ctx, suffix, body)

"""flowsh plugin ``slack``: alerts to a Slack incoming webhook, as Block Kit blocks."""

from __future__ import annotations

import os
from typing import Any

from flowsh.api import (
    Alert,
    Register,
    channel_timeout,
    check_keys,
    config_error,
    format_duration,
    get_count,
    get_str,
    hookimpl,
    post_json,
)

COLORS = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
          "info": ":information_source:"}
MAX_TEXT = 2900  # Slack refuses section text over 3000 characters


class SlackNotifier:
    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        check_keys(channel, config, {"webhook_url", "webhook_url_env", "channel", "username",
                                     "icon_emoji", "mention", "retries"})
        self.url = get_str(channel, config, "webhook_url")
        self.url_env = get_str(channel, config, "webhook_url_env")
        if bool(self.url) == bool(self.url_env):
            raise config_error(channel, "webhook_url",
                               "give exactly one of `webhook_url` or `webhook_url_env`")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise config_error(channel, "webhook_url", "must be an http(s) URL")
        self.extra: dict[str, Any] = {
            k: config[k] for k in ("channel", "username", "icon_emoji") if k in config}
        self.mention = get_str(channel, config, "mention")
        self.retries = get_count(channel, config, "retries", 2)
        self.timeout = channel_timeout(channel, config)

    def payload(self, alert: Alert) -> dict[str, Any]:
        fields = [("Run", alert.run_id), ("Event", alert.event), ("Host", alert.host)]
        if alert.step:
            fields.append(("Step", alert.step))
        if alert.exit_code is not None:
            fields.append(("Exit code", str(alert.exit_code)))
        if alert.duration is not None:
            fields.append(("Duration", format_duration(alert.duration)))
        headline = f"{COLORS.get(alert.severity, '')} {alert.subject}".strip()
        if self.mention and alert.severity == "critical":
            headline = f"{self.mention} {headline}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": alert.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _esc(alert.message or "-")},
             "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_esc(v)}"} for k, v in fields]},
        ]
        if alert.log_tail:
            tail = alert.log_tail[-MAX_TEXT:]
            blocks.append({"type": "section",
                           "text": {"type": "mrkdwn", "text": f"```{_esc(tail)}```"}})
        return {"text": headline, "blocks": blocks, **self.extra}

    def send(self, alert: Alert) -> None:
        url = self.url or os.environ.get(self.url_env or "")
        if not url:
            raise RuntimeError(f"${self.url_env} (webhook_url_env) is not set")
        post_json(url, self.payload(alert), timeout=self.timeout, retries=self.retries,
                  retry_delay=0.5)


def _esc(text: str) -> str:
    # Slack mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("slack", SlackNotifier)

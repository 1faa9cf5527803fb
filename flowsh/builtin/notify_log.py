"""Built-in notifier ``log``: one line per alert in a log file (the seed's ``log_workflow``).

Config: ``path`` (default ``$FLOWSH_HOME/alerts.log``), ``format`` (``text`` or ``json``),
``stderr`` (also print the line on stderr; default false).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl
from flowsh.hookspecs import Register

if TYPE_CHECKING:
    from flowsh.notify import Alert


class LogNotifier:
    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        from flowsh.notify import check_keys, config_error, get_str

        check_keys(channel, config, {"path", "format", "stderr"})
        self.channel = channel
        self.path = get_str(channel, config, "path")
        self.format = get_str(channel, config, "format", "text")
        if self.format not in ("text", "json"):
            raise config_error(channel, "format", "must be 'text' or 'json'")
        self.stderr = config.get("stderr", False)
        if not isinstance(self.stderr, bool):
            raise config_error(channel, "stderr", "must be true or false")

    def target(self, alert: Alert) -> Path:
        from flowsh.state import ensure_private_dir, flowsh_home

        if self.path:
            p = Path(os.path.expandvars(self.path)).expanduser()
            return p if p.is_absolute() else alert.workdir / p
        return ensure_private_dir(flowsh_home()) / "alerts.log"

    def line(self, alert: Alert) -> str:
        if self.format == "json":
            data = alert.to_dict()
            data.pop("text", None)
            import json

            return json.dumps(data, sort_keys=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(alert.time))
        return f"{stamp} {alert.severity.upper()} {alert.workflow} {alert.run_id} {alert.subject}"

    def send(self, alert: Alert) -> None:
        line = self.line(alert).replace("\n", " ") + "\n"
        path = self.target(alert)
        # The default, under $FLOWSH_HOME, follows no link (docs/state.md); a `path:` the
        # user chose may be one on purpose.
        nofollow = 0 if self.path else os.O_NOFOLLOW
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | nofollow, 0o600)
        try:
            os.write(fd, line.encode())  # one write: concurrent runs never interleave a line
        finally:
            os.close(fd)
        if self.stderr:
            print(f"flowsh: alert: {line}", end="", file=sys.stderr)


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("log", LogNotifier)

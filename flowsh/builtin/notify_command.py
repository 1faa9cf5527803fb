"""Built-in notifier ``command``: a shell command receives the alert (the seed's ``send_sms``).

The alert arrives as ``FLOWSH_ALERT_*`` environment variables (SEVERITY, EVENT, WORKFLOW,
RUN_ID, STEP, EXIT_CODE, DURATION, HOST, MESSAGE, SUBJECT, TEXT, LOG_TAIL...) and as JSON on
stdin; it is never spliced into the command text. Config: ``run`` (shell text, run by
``bash -c`` in the workflow's directory), ``shell``, ``env`` (extra variables), ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess  # already loaded by the CLI (sh, process.py)
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl
from flowsh.hookspecs import Register

if TYPE_CHECKING:
    from flowsh.notify import Alert


class CommandNotifier:
    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        from flowsh.notify import channel_timeout, check_keys, config_error, get_str

        check_keys(channel, config, {"run", "shell", "env"})
        self.channel = channel
        self.run = get_str(channel, config, "run", required=True) or ""
        if not self.run.strip():
            raise config_error(channel, "run", "must not be empty")
        self.shell = get_str(channel, config, "shell", "bash") or "bash"
        env = config.get("env") or {}
        if not isinstance(env, dict):
            raise config_error(channel, "env", "must be a mapping of NAME: value")
        self.env = {str(k): str(v) for k, v in env.items()}
        self.timeout = channel_timeout(channel, config)

    def send(self, alert: Alert) -> None:
        # FLOWSH_RUN_ID: a resume or the next run stops what a dead runner's alert left
        # (as for its steps); timeout(1) holds the channel's limit even if flowsh dies.
        env = {**os.environ, **self.env, **alert.env(), "FLOWSH_RUN_ID": alert.run_id}
        argv = [self.shell, "-c", self.run]
        limiter = shutil.which("timeout")
        if limiter:
            argv = [limiter, "-k", "2", f"{self.timeout:g}", *argv]
        proc = subprocess.Popen(
            argv,
            cwd=alert.workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group, so a timeout kills its children too
        )
        try:
            # timeout(1) ends it first (124, or 137 after its own KILL); this is the backstop
            # where there is no timeout(1).
            _, err = proc.communicate(alert.to_json().encode(), timeout=self.timeout + 3)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise TimeoutError(f"command timed out after {self.timeout:g}s") from None
        if limiter and proc.returncode in (124, 137):
            raise TimeoutError(f"command timed out after {self.timeout:g}s")
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"command exited {proc.returncode}: {tail[0]}".rstrip(": "))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("command", CommandNotifier)

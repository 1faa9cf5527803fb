"""``flowsh wrap -- COMMAND [ARGS...]``: one existing command as a one-step workflow.

The cron wrapper people otherwise assemble from flock, timeout, chronic and a healthcheck
ping. The command runs through the engine like any workflow, so it gets the overlap lock,
timeout, retries, alerts, logs, metrics and a place in `flowsh history`; flowsh's exit code
is the command's own (124 on timeout, 128+N when killed by signal N, 75 when another run
holds the lock, 130 when flowsh itself is interrupted).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from flowsh import hookimpl
from flowsh.errors import EXIT_INTERRUPTED, UsageError
from flowsh.state import INTERRUPTED, SUCCEEDED

if TYPE_CHECKING:
    from flowsh.engine import Reporter
    from flowsh.model import Workflow
    from flowsh.state import RunRecord


def default_name(argv: list[str], cwd: str | None = None) -> str:
    """`./backup.sh --full` in /srv -> `backup-3f9a1c`.

    The name is the lock, so two different jobs must not share one: the command's
    basename says what it is, a hash of the whole command line and the directory it runs
    in tells `python3 a.py` from `python3 b.py`. The same cron line gets the same name
    every time, so its runs line up in `flowsh history`.
    """
    import hashlib

    key = "\0".join([cwd or os.getcwd(), *argv]).encode()
    return f"{command_base(argv[0])}-{hashlib.sha256(key).hexdigest()[:6]}"


def command_base(command: str) -> str:
    """`./backup.sh` -> `backup`, `/usr/bin/pg_dump` -> `pg_dump`."""
    base = os.path.basename(command.rstrip("/")) or "command"
    base = re.sub(r"\.(sh|bash|py|pl|rb)$", "", base)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).lstrip(".-") or "command"


def build_workflow(
    argv: list[str], *, name: str | None = None, timeout: str | None = None,
    retries: int = 0, retry_delay: str | None = None, overlap: str = "skip",
    notify: list[str] | None = None, kill_grace: str | None = None, pool: str | None = None,
) -> Workflow:
    """The in-memory workflow `flowsh wrap` runs: one step whose text is the command.

    The argv is quoted with `shlex.join` (it is the program, given by the user, not a
    value) and run with `exec`, so the command is the step's process: signals reach it
    directly and its exit status or death by signal is the step's.
    """
    from pydantic import ValidationError

    from flowsh.model import Workflow

    if not argv:
        raise UsageError("flowsh wrap needs a command: flowsh wrap [OPTIONS] -- COMMAND [ARGS...]")
    wf_name = name or default_name(argv)
    step: dict[str, Any] = {"name": wf_name, "run": "exec " + shlex.join(argv),
                            "retries": retries}
    if timeout is not None:
        step["timeout"] = timeout
    if retry_delay is not None:
        step["retry_delay"] = retry_delay
    data: dict[str, Any] = {
        "name": wf_name,
        "description": f"flowsh wrap -- {shlex.join(argv)}",
        "strict": False,  # the command is run as is; `set -e` would change nothing anyway
        "overlap": overlap,
        "steps": [step],
    }
    if kill_grace is not None:
        data["kill_grace"] = kill_grace
    if pool is not None:
        # Pools a wrapped command may hold are the user config's (POOL-7).
        from flowsh.config import config_path, load_user_config

        pools = load_user_config().get("pools") or {}
        if pool not in pools:
            declared = ", ".join(sorted(pools)) or "none"
            raise UsageError(f"--pool {pool}: not declared in `pools` of the user config "
                             f"{config_path()} (declared: {declared})")
        step["pool"] = pool
        data["pools"] = {pool: pools[pool]}
    if notify:
        # Channels are defined in the user config file; a failure is critical.
        data["notify"] = {"routes": {"critical": list(notify)},
                          "events": {"run_failed": "critical"}}
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        field = {"steps.timeout": "--timeout", "steps.retry_delay": "--retry-delay",
                 "steps.retries": "--retries", "steps.name": "--name", "name": "--name",
                 "overlap": "--overlap", "kill_grace": "--kill-grace",
                 "steps.pool": "--pool"}.get(where, where)
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{field}: {msg}") from None


def check_channels(wf: Workflow) -> None:
    """`--notify NAME` must name a channel the alerts machinery knows (user config)."""
    try:
        from flowsh.notify import check_notify  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return  # alerts not installed in this build: nothing could be sent anyway
    from flowsh.errors import NotFoundError, WorkflowError

    try:
        check_notify(wf)
    except WorkflowError as exc:
        raise NotFoundError(f"--notify: {exc.detail}") from None


def _make_reporter(*, quiet_on_success: bool, verbose: bool, json_events: bool) -> Reporter:
    from flowsh.ui import JSONReporter, PlainReporter

    if json_events:
        return JSONReporter()

    class WrapReporter(PlainReporter):
        """The command's output as is; flowsh speaks (stderr) only about trouble."""

        def __init__(self) -> None:
            super().__init__(show_output=not quiet_on_success)
            self._flush = self.out.isatty()

        def run_started(self, run: RunRecord, wf: Workflow) -> None:
            self.total = len(run.steps)
            if verbose:
                super().run_started(run, wf)

        def step_started(self, run: RunRecord, step: Any) -> None:
            if verbose:
                super().step_started(run, step)

        def step_waiting(self, run: RunRecord, step: Any, pool: str) -> None:
            if verbose:
                super().step_waiting(run, step, pool)

        def step_output(self, step: str, line: str) -> None:
            self.out.write(line + "\n")
            if self._flush:
                self.out.flush()

        def step_finished(self, run: RunRecord, step: Any) -> None:
            if verbose or step.status != SUCCEEDED:
                super().step_finished(run, step)

        def run_finished(self, run: RunRecord) -> None:
            self.out.flush()
            if run.status != SUCCEEDED and quiet_on_success:
                # chronic: the output only when it failed, streamed back from the step log.
                for rec in run.steps.values():
                    if rec.log_path and Path(rec.log_path).exists():
                        with open(rec.log_path, "rb") as fh:
                            shutil.copyfileobj(fh, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            if verbose or run.status != SUCCEEDED:
                from flowsh.ui import summary

                # No "flowsh resume" hint: a wrapped command has no file to resume from.
                self._say(summary(run))
                for rec in run.steps.values():
                    if rec.status != SUCCEEDED and rec.log_path:
                        self._say(f"output kept in {rec.log_path}")

    return WrapReporter()


def exit_code_of(run: RunRecord) -> int:
    """The command's own exit code; 130 when flowsh was interrupted."""
    if run.status == SUCCEEDED:
        return 0
    if run.status == INTERRUPTED:
        return EXIT_INTERRUPTED
    codes = [s.exit_code for s in run.steps.values() if s.exit_code is not None]
    return codes[0] if codes else (run.exit_code or 1)


def _append_log(run: RunRecord, path: Path) -> None:
    """`--log FILE`: append this run's output, after a header line, like `>> FILE 2>&1`.

    As `flowsh run --log` (flowsh/cronmode.py): a symlink is not followed, appends take
    turns under flock, and a log that cannot be written is a warning — the command's
    exit code and its --ping stand."""
    import fcntl
    import time

    from flowsh.cronmode import open_log
    from flowsh.errors import StateError

    try:
        with open_log(path) as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
            out.write(f"=== {stamp} {run.workflow} run {run.run_id}: {run.status}"
                      f" (exit {exit_code_of(run)}) ===\n".encode())
            for rec in run.steps.values():
                if rec.log_path and Path(rec.log_path).exists():
                    with open(rec.log_path, "rb") as fh:
                        shutil.copyfileobj(fh, out)
    except StateError as exc:
        sys.stderr.write(f"flowsh: warning: {exc}\n")
    except OSError as exc:
        sys.stderr.write(f"flowsh: warning: --log {path}: {exc.strerror}\n")


def wrap_cmd(
    command: list[str] = typer.Argument(..., metavar="COMMAND [ARGS]...",
                                        help="The command to run, after `--`."),
    name: Optional[str] = typer.Option(None, "--name", help="Workflow/step name (default: the command's basename and a hash of the command line)."),  # noqa: UP045,E501
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Kill the command after this long (exit 124)."),  # noqa: UP045,E501
    retries: int = typer.Option(0, "--retries", min=0, help="Extra attempts after a failure."),
    retry_delay: Optional[str] = typer.Option(None, "--retry-delay", help="Wait before the first retry (doubles each time)."),  # noqa: UP045,E501
    overlap: str = typer.Option("skip", "--overlap", help="If the same name is already running: skip (exit 75) | wait | allow."),  # noqa: E501
    lock_timeout: Optional[str] = typer.Option(None, "--lock-timeout", help="With --overlap wait: give up after this long."),  # noqa: UP045,E501
    notify: Optional[list[str]] = typer.Option(None, "--notify", metavar="CHANNEL", help="Alert this channel (from the config file) on failure; repeatable."),  # noqa: UP045,E501
    quiet_on_success: bool = typer.Option(False, "--quiet-on-success", help="Print the output only if the command fails (like chronic)."),  # noqa: E501
    log: Optional[Path] = typer.Option(None, "--log", metavar="FILE", help="Also append the output to FILE, with a header line per run."),  # noqa: UP045,E501
    kill_grace: Optional[str] = typer.Option(None, "--kill-grace", help="After a timeout: TERM, then KILL after this long (default 5s)."),  # noqa: UP045,E501
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print flowsh's progress lines too."),  # noqa: E501
    json_events: bool = typer.Option(False, "--json", help="JSON events on stdout instead of output."),  # noqa: E501
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE", help="State URL."),  # noqa: UP045
    ping: Optional[str] = typer.Option(None, "--ping", metavar="URL", help="healthchecks-style pings: URL/start, then URL on success or URL/EXIT_CODE with the output's tail (the suffix goes before a ?query)."),  # noqa: UP045,E501
    pool: Optional[str] = typer.Option(None, "--pool", metavar="NAME", help="Hold a slot of this pool (declared in the user config's `pools`) while the command runs; wait for one first."),  # noqa: UP045,E501
    skip_quietly: bool = typer.Option(False, "--skip-quietly", help="If the same name is already running: exit 75 and print nothing (like flock -n; implied by --quiet-on-success)."),  # noqa: E501
) -> None:
    """Run one command as a one-step workflow: lock, timeout, retries, alerts, history.

    Example (crontab): 0 2 * * * /home/me/.venv/bin/flowsh wrap --timeout 1h --notify ops
    --quiet-on-success -- /srv/bin/backup.sh

    In a crontab, give flowsh's absolute path (`command -v flowsh`): cron's PATH is
    /usr/bin:/bin, where a venv or pipx install is not. Give the script's too: cron starts
    in $HOME.
    """
    from flowsh.durations import parse_duration
    from flowsh.engine import RunOptions, run_workflow
    from flowsh.errors import EXIT_LOCKED, LockHeldError
    from flowsh.ping import Pinger, PingOnStart

    if overlap not in ("skip", "wait", "allow"):
        raise UsageError(f"--overlap {overlap!r}: use skip, wait or allow")
    wf = build_workflow(command, name=name, timeout=timeout, retries=retries,
                        retry_delay=retry_delay, overlap=overlap, notify=notify,
                        kill_grace=kill_grace, pool=pool)
    if notify:
        check_channels(wf)
    try:
        lock_t = parse_duration(lock_timeout) if lock_timeout is not None else None
    except ValueError as exc:
        raise UsageError(f"--lock-timeout: {exc}") from None
    if log is not None:
        from flowsh.cronmode import open_log

        open_log(log).close()  # a log that cannot be written is refused before the run
    pinger = Pinger(ping) if ping else None
    reporter = _make_reporter(quiet_on_success=quiet_on_success, verbose=verbose,
                              json_events=json_events)
    opts = RunOptions(
        state_url=state,
        reporter=PingOnStart(reporter, pinger) if pinger else reporter,
        lock_timeout=lock_t,
    )
    try:
        run = run_workflow(wf, opts)
    except LockHeldError:
        # Another run of this job is going: like `flock -n`, not a failure to mail about.
        if skip_quietly or quiet_on_success:
            raise typer.Exit(EXIT_LOCKED) from None
        raise
    if log is not None:
        _append_log(run, log)
    if pinger is not None:
        pinger.finished(run, exit_code_of(run))
    raise typer.Exit(exit_code_of(run))


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    # Everything after the command's name belongs to the command (`flowsh wrap ls -la`),
    # as with nice(1) or timeout(1); `--` works too.
    app.command(
        "wrap",
        context_settings={"allow_interspersed_args": False},
    )(wrap_cmd)

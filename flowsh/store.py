"""Opening the state backend a URL names, and reading runs back with their liveness."""

from __future__ import annotations

import os
import time

from flowsh import plugins
from flowsh.errors import UsageError
from flowsh.lock import runner_alive
from flowsh.state import (
    CRASHED,
    INTERRUPTED,
    RETRYING,
    RUNNING,
    NoSpaceError,
    RunRecord,
    StateBackend,
    StepRecord,
    default_state_url,
    flowsh_home,
)

# A run on another host whose heartbeat is older than this is taken as crashed.
STALE_AFTER = 120.0


def state_url(url: str | None = None) -> str:
    return url or os.environ.get("FLOWSH_STATE") or default_state_url()


def open_backend(url: str | None = None) -> StateBackend:
    url = state_url(url)
    scheme = url.split(":", 1)[0] if ":" in url else ""
    backends = plugins.registry("state_backends")
    factory = backends.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(backends))
        raise UsageError(f"state URL {url!r}: unknown scheme {scheme!r} (known: {known}); "
                         "a plugin may provide it")
    backend: StateBackend = factory(url)
    return backend


def open_existing(url: str | None = None) -> StateBackend | None:
    """The store `url` names for a command that only reads (`flowsh why`), or None when
    there is none yet: reading must not create one. A backend class says so with a
    `store_exists(url)` staticmethod (the built-in file stores); without one it is opened
    (a server's store exists once the server does)."""
    url = state_url(url)
    factory = plugins.registry("state_backends").get(url.split(":", 1)[0] if ":" in url else "")
    exists = getattr(factory, "store_exists", None)
    if exists is not None and not exists(url):
        return None
    return open_backend(url)


def check_liveness(backend: StateBackend, run: RunRecord, *, read_only: bool = False) -> RunRecord:
    """A `running` run whose runner is gone is marked `crashed` (and recorded so).

    `read_only`: the caller only reads (`status`, `history`). When the store cannot take the
    write for lack of space, the run is still shown `crashed`, with a warning that it was
    not recorded: a full disk is when an operator needs `status` most (docs/state.md).
    """
    if run.status != RUNNING:
        return run
    alive = runner_alive(flowsh_home() / "runs" / run.run_id, backend, run)
    if alive is None:  # not this host's run: judge by the heartbeat
        beat = run.heartbeat or run.started_at
        alive = time.time() - beat < STALE_AFTER
    if alive:
        return run
    # Read again: the runner may have written its end and let go of its lock between the
    # read of `run` and the look at the lock (a shared store makes that window real).
    full = backend.load_run(run.run_id)
    if full.status != RUNNING:
        return full
    full.status = CRASHED
    # Its last sign of life, so "took" stops growing (the runner never wrote an end).
    last = max([full.heartbeat or 0, full.started_at or 0,
                *(r.started_at or 0 for r in full.steps.values()),
                *(r.ended_at or 0 for r in full.steps.values())])
    full.ended_at = full.ended_at or last or None
    ended = [rec for rec in full.steps.values() if rec.status in (RUNNING, RETRYING)]
    for rec in ended:
        rec.status, rec.message = INTERRUPTED, "the runner died (crash)"
        rec.ended_at = rec.ended_at or full.ended_at
    try:
        for rec in ended:
            backend.save_step(full, rec)
        backend.update_run(full)
    except NoSpaceError as exc:
        if not read_only:
            raise
        from flowsh.plugins import warn

        cause = str(exc).split("; ", 1)[0]  # `…: cannot write state: No space left on device`
        warn(f"{cause}; run {full.run_id} is shown crashed (its runner is gone) but not "
             "recorded so until there is room")
        return full
    _log_crash(full, ended)
    return full


def _log_crash(run: RunRecord, ended: list[StepRecord]) -> None:
    """Tell the CSV and JSON Lines logs, once, right after the crash is recorded (rt11 #13:
    a monitoring pipeline that reads the CSV never saw a crash). Their paths are in the
    workflow file: without it (gone, broken) there is nowhere known to write."""
    from flowsh import monitorfiles, plugins

    pm = plugins.get_plugin_manager()
    enabled = {kind for kind, name in (("csv", "log_csv"), ("jsonl", "log_jsonl"))
               if pm.get_plugin(name) is not None}
    if not enabled or not run.file or not os.path.isfile(run.file):
        return
    try:
        from flowsh.loader import load_workflow

        workflow = load_workflow(run.file)
    except Exception:  # changed or broken since the run: its logs cannot be found
        return
    monitorfiles.log_crash(run, ended, workflow, enabled)

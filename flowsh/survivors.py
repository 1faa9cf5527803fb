"""Finding a step's processes wherever they went, and stopping what a dead runner left.

A process group is not enough: `setsid` and double-forked daemons leave it. So each step's
processes carry a token in their environment (FLOWSH_STEP_TOKEN, inherited by everything
they start) and the run's id (FLOWSH_RUN_ID); flowsh finds them through /proc/PID/environ.
The runner is a child subreaper, so such orphans re-parent to it rather than to init.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

TOKEN_VAR = "FLOWSH_STEP_TOKEN"
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux >= 3.4),
    so they stay findable and flowsh reaps them. False where the kernel does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# A `call:` step's child runner gives its own steps tokens of their own; the tokens of the
# call steps above it stay findable in this list (space-separated), inherited by all of them.
OUTER_TOKENS_VAR = "FLOWSH_CALL_TOKENS"


def tagged(var: str, value: str) -> list[int]:
    """Pids of processes (not this one) whose environment holds ``var=value`` (for the
    step token, also a process started by a child run the step runs: OUTER_TOKENS_VAR)."""
    needle = f"{var}={value}".encode()
    wanted = b"\0" + needle + b"\0"
    outer = f"\0{OUTER_TOKENS_VAR}=".encode() if var == TOKEN_VAR else None
    me, found = os.getpid(), []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue  # gone, or another user's
        # One substring search per process, not a split of every environment: this scan
        # runs at the end of every step that ran beside others (a foreach of 2,000 items
        # spent half its time splitting environments here).
        blob = b"\0" + environ + b"\0"
        if wanted in blob or (outer is not None and outer in blob and any(
                e.startswith(outer[1:]) and value.encode() in e[len(outer) - 1:].split()
                for e in blob.split(b"\0"))):
            found.append(int(name))
    return found


def signal_marked(pgid: int | None, var: str, value: str, sig: int) -> list[int]:
    """Send ``sig`` to the process group ``pgid``, then to each process marked
    ``var=value`` outside it (setsid'd, double-forked): once each, so a process that traps
    TERM runs its trap once (TIME-1). Return every marked pid found, in the group or not.

    A polite signal goes to a `call:` step's child run, never past it to the child's own
    steps: the child run stops them itself, with its grace period (they had TERM twice,
    and trapped it twice). Only while a runner is there to pass it on: a process whose
    child run's runner (or one between it and here) is gone, killed with -9, gets it from
    here (no one else would; its trap never ran). SIGKILL, the last word, reaches them
    all."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    found = tagged(var, value)
    relayed = set() if sig == signal.SIGKILL else _relayed(found)
    for pid in found:
        if pid in relayed:
            continue
        if pgid is not None:
            try:
                if os.getpgid(pid) == pgid:
                    continue  # had it from killpg
            except OSError:
                continue  # gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return found


def _relayed(pids: list[int]) -> set[int]:
    """Those of ``pids`` that a live runner among ``pids`` passes a signal on to: a `call:`
    child run's processes list the tokens of the call steps above them (OUTER_TOKENS_VAR),
    and the runner of each such child run carries its call step's token as its own
    (TOKEN_VAR). A token listed whose runner is not among ``pids`` is above the marked
    processes (or its runner is dead): no relay."""
    token_key, outer_key = f"{TOKEN_VAR}=".encode(), f"{OUTER_TOKENS_VAR}=".encode()
    marks: dict[int, tuple[bytes | None, list[bytes]]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue  # gone: relays nothing
        own, outer = None, []
        for entry in environ.split(b"\0"):
            if entry.startswith(token_key):
                own = entry[len(token_key):]
            elif entry.startswith(outer_key):
                outer = entry[len(outer_key):].split()
        marks[pid] = (own, outer)
    live = {own for own, _ in marks.values() if own}
    return {pid for pid, (own, outer) in marks.items()
            if any(t in live and t != own for t in outer)}


def children() -> set[int] | None:
    """This process's children (those of every thread), from /proc/self/task/*/children;
    None where that is not to be trusted: a kernel without the file (CONFIG_PROC_CHILDREN),
    or a thread that ended while we read (its children moved to another thread's list,
    perhaps one read already).

    The kernel's list may skip an entry when a child listed before it is reaped during the
    read; callers treat any pid they do not know as "something may be left", and the
    reaped one is such a pid (flowsh's loop reaps steps only while not reading here)."""
    me = os.getpid()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    found: set[int] = set()
    for tid in tids:
        try:
            fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # no such file here, or the thread ended
        try:
            # One read for the whole list where it fits: each new read starts the kernel's
            # walk again by position.
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            return None
        finally:
            os.close(fd)
        found.update(int(pid) for pid in b"".join(chunks).split())
    found.discard(me)
    return found


def zombie(pid: int) -> bool:
    """Whether `pid` has exited and waits to be reaped (what it started moved on already).
    False for a pid gone altogether: reaped by someone meanwhile, which is what may make
    `children` skip another (see there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"


def stop_leftovers(run_id: str, grace: float) -> list[int]:
    """Stop every process still carrying FLOWSH_RUN_ID=run_id (TERM, then KILL after
    `grace`): what a dead runner started but could not record (killed between starting a
    step and saving its pid). Only for a run no live runner owns."""
    found = tagged("FLOWSH_RUN_ID", run_id)
    if found:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in tagged("FLOWSH_RUN_ID", run_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            end = time.monotonic() + grace
            while time.monotonic() < end and tagged("FLOWSH_RUN_ID", run_id):
                time.sleep(0.05)
    return found


def stop_orphan(pid: int, run_id: str, grace: float) -> bool:
    """Stop the process group `pid` if it is still a step of run `run_id` (its environment
    says FLOWSH_RUN_ID=run_id, so a recycled pid is never touched): TERM, then KILL after
    `grace`. Returns whether there was something to stop."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    if f"FLOWSH_RUN_ID={run_id}".encode() not in environ.split(b"\0"):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # The group, then what left it (setsid, double fork) still carrying the run's id:
        # each once (TIME-1).
        signal_marked(pid, "FLOWSH_RUN_ID", run_id, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                if not tagged("FLOWSH_RUN_ID", run_id):
                    return True
            time.sleep(0.05)
    return True

"""Concurrency pools shared by every flowsh process on a host (docs/semantics.md POOL).

A pool of size N is N slot files, ``$FLOWSH_HOME/pools/<name>/0`` .. ``<N-1>``; holding a
slot is holding an exclusive `flock` on one of them. The kernel drops a flock when the last
descriptor of its open file goes, so a runner that crashes or is killed with SIGKILL frees
its slots with nothing to clean up. The exported bash script takes the same locks with
flock(1) on the same files (templates/bash/runtime.sh.j2, `flowsh_pool_take`), and
`flowsh wrap --pool` with this module, so all three share one pool.

There is no wake-up when another process lets a slot go (flock has none short of blocking
on one file, which would wait for slot 0 while slot 1 is free), so waiters try every slot
again each POLL seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flowsh.state import ensure_private_dir, flowsh_home

# How often a waiter tries the slots again: short against a step's length, long enough
# that a hundred waiters cost nothing measurable.
POLL = 0.1


class RemoteSlots(Protocol):
    """Slots a state backend shares between hosts (PostgreSQL advisory locks: POOL-8).
    Slot I is held when both the host's slot file I and the backend's lock I are."""

    def try_lock(self, pool: str, index: int) -> bool: ...
    def unlock(self, pool: str, index: int) -> None: ...
    def close(self) -> None: ...

    def keep_fds(self) -> tuple[int, ...]:
        """Descriptors a slot's keeper holds with the slot file, so that other hosts see
        the slot held while its step runs on after the runner (PostgreSQL: the socket of
        the session holding the advisory locks, which the server keeps while it is open)."""
        ...


def pool_dir(name: str, home: Path | None = None) -> Path:
    return (home or flowsh_home()) / "pools" / name


# The keeper of a slot whose step runs on this host: it inherits the slot file's open
# descriptor (one open file, one flock) and exits when the step's process group (or, for a
# `keep_children` step, its main process) is gone. The runner ends it when the attempt
# ends. It is in the runner's process group, as the exported script's job shells are in
# the script's: a runner killed alone with SIGKILL leaves it holding the slot for as long
# as the step it left behind runs (a resume stops the orphan, which ends the keeper); a
# kill of the runner's whole group takes it too and frees the slot (POOL-1). Ctrl-C is
# the runner's to handle: the keeper ignores it. bash, not Python: a few milliseconds to
# start, and its checks fork one `sleep` a second, without the slot's descriptor (FD>&-):
# a sleep holding it outlived the keeper's kill at release by up to a second, and the
# next step waited for a slot its run had given back. With a backend sharing the slots
# between hosts, it also holds that backend's connection (RemoteSlots.keep_fds): a runner
# killed alone would otherwise take the advisory lock along and let another host in beside
# the step it left running (POOL-1, POOL-8).
# It is started before the step (Slot.prepare) and told what to watch on its stdin once
# the step runs: started after it, a runner killed while the keeper was still being
# forked (a loaded host) freed the slot under a running step. A runner killed before it
# says closes the pipe: the keeper ends, as the slot would have with it.
_KEEPER = ("trap '' INT QUIT; IFS= read -r t || exit 0; "
           "while kill -0 -- \"$t\" 2>/dev/null; do sleep 1 {closes}; done")
KEEPER_NAME = "flowsh-pool-keeper"


class Slot:
    """One held slot: the open, flocked slot file. `release` (or the death of the process
    and of its keeper) lets it go."""

    def __init__(self, pool: str, index: int, fd: int,
                 remote: RemoteSlots | None = None) -> None:
        self.pool, self.index, self._fd, self._remote = pool, index, fd, remote
        self._keeper: subprocess.Popen[bytes] | None = None
        self._target = ""  # what the keeper watches: "-PGID" or "PID"
        self._kept: tuple[tuple[int, int], ...] = ()  # the remote's sockets it holds

    def prepare(self) -> None:
        """Start the keeper before the step starts: it holds the slot from now on, and
        waits to be told what to watch (keep_for), or ends if it is not (drop_keeper)."""
        if self._fd >= 0 and self._keeper is None:
            self._keeper, self._kept = self._spawn()

    def keep_for(self, pid: int, *, group: bool) -> None:
        """Hold the slot also in a keeper watching process group `pid` (`group`) or
        process `pid`. Best effort: without bash the runner alone holds it, as before."""
        if self._fd < 0 or self._target:
            return
        self._target = f"-{pid}" if group else str(pid)
        if self._keeper is None:
            self._keeper, self._kept = self._spawn()
        if self._keeper is not None:
            self._aim(self._keeper)

    def drop_keeper(self) -> None:
        """The attempt runs elsewhere (no local process to watch): the keeper goes."""
        if self._keeper is not None and not self._target:
            self._stop(self._keeper)
            self._keeper = None

    def _aim(self, keeper: subprocess.Popen[bytes]) -> None:
        assert keeper.stdin is not None
        with contextlib.suppress(OSError):  # it died: the runner holds the slot alone
            keeper.stdin.write(self._target.encode() + b"\n")
            keeper.stdin.close()

    @staticmethod
    def _stop(keeper: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            keeper.kill()
        keeper.wait()
        if keeper.stdin is not None:
            with contextlib.suppress(OSError):
                keeper.stdin.close()

    def renew(self) -> None:
        """The remote's connection was opened again (the server dropped the one the keeper
        holds): a keeper holding the new one takes over, before the old one goes, so
        that the slot file's lock never lapses. Else a runner killed alone after the
        drop let other hosts in beside its step again (POOL-1)."""
        if self._keeper is None or self._remote is None or self._fd < 0:
            return
        if _identify(self._remote.keep_fds()) == self._kept:
            return
        keeper, kept = self._spawn()
        if keeper is None:
            return
        if self._target:
            self._aim(keeper)
        old, self._keeper, self._kept = self._keeper, keeper, kept
        self._stop(old)

    def _spawn(self) -> tuple[subprocess.Popen[bytes] | None, tuple[tuple[int, int], ...]]:
        remote = self._remote.keep_fds() if self._remote is not None else ()
        fds = (self._fd, *remote)
        closes = " ".join(f"{fd}>&-" for fd in fds)
        import shutil  # only a run that holds a pool slot needs it

        try:
            return subprocess.Popen(
                # bash from the runner's PATH: the keeper's own is the bare default, and
                # bash may live elsewhere (/usr/local/bin, NixOS)
                [shutil.which("bash") or "bash", "-c", _KEEPER.format(closes=closes),
                 KEEPER_NAME],
                pass_fds=fds,
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={"PATH": os.defpath}), _identify(remote)
        except OSError:
            return None, ()

    def release(self) -> None:
        if self._fd >= 0:
            try:
                if self._keeper is not None:
                    # Reaped before the slot counts as free: its descriptor is the lock's too.
                    self._stop(self._keeper)
                    self._keeper = None
                if self._remote is not None:
                    self._remote.unlock(self.pool, self.index)
            finally:
                os.close(self._fd)  # closing the last descriptor drops the flock
                self._fd = -1


def _identify(fds: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Which open files `fds` are (a new socket may get the number of a closed one)."""
    got = []
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            got.append((st.st_dev, st.st_ino))
    return tuple(got)


def try_take(name: str, size: int, home: Path | None = None,
             remote: RemoteSlots | None = None) -> Slot | None:
    """A free slot of pool `name` (size `size`), or None when all `size` are held (on this
    host, or through `remote` on another)."""
    where = ensure_private_dir(pool_dir(name, home))
    for index in range(size):
        # Not inherited by steps (O_CLOEXEC, Python's default): the runner (and its keeper,
        # Slot.keep_for) holds the slot for the attempt, a daemon a step leaves behind never.
        fd = os.open(where / str(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            elsewhere = remote is not None and not remote.try_lock(name, index)
        except BaseException:
            os.close(fd)
            raise
        if elsewhere:
            os.close(fd)  # another host holds slot `index`: try the next one
            continue
        return Slot(name, index, fd, remote)
    return None


def take(name: str, size: int, *, on_wait: Callable[[], None] | None = None,
         stop: Callable[[], bool] | None = None, home: Path | None = None) -> Slot | None:
    """Wait for a slot of `name`: `on_wait` is called once, when none is free at first;
    returns None if `stop()` turns true while waiting."""
    slot = try_take(name, size, home)
    if slot is not None:
        return slot
    if on_wait is not None:
        on_wait()
    while slot is None:
        if stop is not None and stop():
            return None
        time.sleep(POLL)
        slot = try_take(name, size, home)
    return slot


class PoolQueue:
    """The steps of one run waiting for a pool slot, in the order they asked, and the
    slots its running attempts hold. The engine asks `ready()` each pass of its loop; a
    step is only queued until it gets a slot, so it holds none (POOL-4)."""

    def __init__(self, sizes: dict[str, int], remote: RemoteSlots | None = None) -> None:
        self.sizes, self.remote = sizes, remote
        self.queue: list[str] = []  # step names, first come first served within the run
        self.pool_of: dict[str, str] = {}
        self.held: dict[str, Slot] = {}

    def acquire(self, step: str, pool: str) -> bool:
        """Take a slot for `step` now (True), or queue it (False)."""
        if pool not in self.pool_of.values():  # else an earlier step of this run goes first
            slot = try_take(pool, self.sizes[pool], remote=self.remote)
            if slot is not None:
                self._hold(step, slot)
                return True
        if step not in self.pool_of:
            self.queue.append(step)
            self.pool_of[step] = pool
        return False

    def ready(self) -> list[str]:
        """Queued steps that got a slot now, in queue order (they hold it from here)."""
        for held in self.held.values():
            held.renew()  # cheap unless the remote's connection is a new one
        got: list[str] = []
        full: set[str] = set()
        for step in list(self.queue):
            pool = self.pool_of[step]
            if pool in full:
                continue  # an earlier step of this run waits for it: it goes first
            slot = try_take(pool, self.sizes[pool], remote=self.remote)
            if slot is None:
                full.add(pool)
                continue
            self.queue.remove(step)
            del self.pool_of[step]
            self._hold(step, slot)
            got.append(step)
        return got

    def drop(self, step: str) -> None:
        """`step` no longer waits (skipped or interrupted before it got a slot)."""
        if step in self.queue:
            self.queue.remove(step)
            del self.pool_of[step]

    def prepare(self, step: str) -> None:
        """`step`'s attempt is about to start: its slot's keeper starts first (Slot.prepare)."""
        slot = self.held.get(step)
        if slot is not None:
            slot.prepare()

    def keep_for(self, step: str, pid: int | None, *, group: bool) -> None:
        """`step`'s attempt runs as `pid` on this host: its slot outlives a killed runner
        for as long as the attempt's processes do (Slot.keep_for). None: it runs on
        another host, and the prepared keeper goes."""
        slot = self.held.get(step)
        if slot is not None:
            if pid is None:
                slot.drop_keeper()
            else:
                slot.keep_for(pid, group=group)

    def release(self, step: str) -> None:
        slot = self.held.pop(step, None)
        if slot is not None:
            slot.release()

    def release_all(self) -> None:
        try:
            for step in list(self.held):
                self.release(step)
        finally:
            if self.remote is not None:
                self.remote.close()

    def _hold(self, step: str, slot: Slot) -> None:
        self.held[step] = slot

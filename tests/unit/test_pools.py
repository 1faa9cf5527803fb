"""flowsh.pools: slot files and flock, a run's queue of waiting steps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flowsh import pools


def test_at_most_size_slots_and_a_release_frees_one(home: Path) -> None:
    a, b = pools.try_take("db", 2), pools.try_take("db", 2)
    assert a is not None and b is not None and {a.index, b.index} == {0, 1}
    assert pools.try_take("db", 2) is None
    assert pools.try_take("other", 1) is not None  # pools are independent
    a.release()
    a.release()  # twice is harmless
    c = pools.try_take("db", 2)
    assert c is not None and c.index == a.index
    assert (home / "pools" / "db").stat().st_mode & 0o777 == 0o700


def test_a_smaller_size_uses_the_first_slots_only(home: Path) -> None:
    held = pools.try_take("db", 3)
    assert held is not None and held.index == 0
    assert pools.try_take("db", 1) is None  # slot 0 is the whole of a pool of 1
    assert pools.try_take("db", 3) is not None


def test_flock1_on_the_same_file_shares_the_slot(home: Path) -> None:
    """The exported script's side: flock(1) on $FLOWSH_HOME/pools/NAME/I."""
    held = pools.try_take("db", 1)
    assert held is not None
    path = home / "pools" / "db" / "0"
    assert subprocess.run(["flock", "-n", str(path), "true"]).returncode == 1
    held.release()
    assert subprocess.run(["flock", "-n", str(path), "true"]).returncode == 0


def test_a_dead_holder_frees_its_slot(home: Path) -> None:
    code = textwrap.dedent("""
        import os, sys
        from flowsh import pools
        slot = pools.try_take("db", 1)
        print("held" if slot else "none", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    assert pools.try_take("db", 1) is None
    proc.kill()
    proc.wait()
    assert pools.try_take("db", 1) is not None


def test_take_waits_and_says_so_once(home: Path) -> None:
    held = pools.try_take("db", 1)
    assert held is not None
    said: list[str] = []
    got: list[pools.Slot | None] = []
    waiter = threading.Thread(target=lambda: got.append(
        pools.take("db", 1, on_wait=lambda: said.append("waiting"))))
    waiter.start()
    while not said:
        waiter.join(0.01)
    held.release()
    waiter.join(10)
    assert said == ["waiting"] and got and got[0] is not None


def test_take_gives_up_when_told_to_stop(home: Path) -> None:
    held = pools.try_take("db", 1)
    assert held is not None
    assert pools.take("db", 1, stop=lambda: True) is None


def test_queue_first_come_first_served_within_a_run(home: Path) -> None:
    queue = pools.PoolQueue({"db": 1, "api": 1})
    assert queue.acquire("a", "db")
    assert not queue.acquire("b", "db")
    assert not queue.acquire("c", "db")
    assert queue.acquire("x", "api")  # another pool is not held up by db's queue
    assert queue.ready() == []
    queue.release("a")
    assert queue.ready() == ["b"]
    queue.drop("c")
    queue.release("b")
    assert queue.ready() == [] and queue.queue == []
    queue.release_all()
    assert pools.try_take("db", 1) is not None and pools.try_take("api", 1) is not None


def _free(name: str) -> bool:
    slot = pools.try_take(name, 1)
    if slot is None:
        return False
    slot.release()
    return True


def _until(cond: Callable[[], bool], what: str) -> None:
    import time

    end = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_keeper_holds_the_slot_past_its_runner_until_the_step_group_ends(
        home: Path) -> None:
    """rt15 HIGH: the runner's descriptor gone (as when it is killed with SIGKILL), the
    keeper holds the slot while the step's process group lives, and frees it after."""
    step = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        held = pools.try_take("db", 1)
        assert held is not None
        held.keep_for(step.pid, group=True)
        keeper = held._keeper
        assert keeper is not None
        os.close(held._fd)  # the runner's own descriptor: what its death closes
        held._fd, held._keeper = -1, None
        assert not _free("db")
        step.kill()
        step.wait()
        _until(lambda: _free("db"), "the keeper to let the slot go")
        keeper.wait(timeout=30)
    finally:
        if step.poll() is None:
            step.kill()


def test_release_ends_the_keeper_and_frees_the_slot_at_once(home: Path) -> None:
    """A daemon the step leaves running (keep_children) keeps nothing once the runner
    releases: the keeper is stopped and reaped before release returns."""
    step = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        held = pools.try_take("db", 1)
        assert held is not None
        held.keep_for(step.pid, group=False)
        keeper = held._keeper
        assert keeper is not None
        # Released while the keeper waits in its `sleep`: that child must not hold the
        # slot's descriptor (it outlived the keeper by up to a second).
        children = Path(f"/proc/{keeper.pid}/task/{keeper.pid}/children")
        deadline = time.monotonic() + 30
        while not children.read_text().split():
            assert time.monotonic() < deadline, "the keeper never started its sleep"
            time.sleep(0.01)
        held.release()
        assert keeper.returncode is not None
        assert _free("db")
    finally:
        step.kill()
        step.wait()

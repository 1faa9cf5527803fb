"""flowsh.placed: where remote attempts run, copied into step records (the Celery executor's
side is tested end to end with real workers in plugins/flowsh-celery/tests)."""

from __future__ import annotations

import pytest

from flowsh.errors import UsageError
from flowsh.executor import Placement
from flowsh.placed import apply, record, stop_remote
from flowsh.process import LocalExecutor
from flowsh.state import FAILED, RUNNING, RunRecord, StepRecord


def test_record_copies_a_placement_and_says_whether_anything_changed() -> None:
    rec = StepRecord(name="a", status=RUNNING, started_at=100.0)
    assert record(rec, None) is False
    where = Placement(task_id="t1", queue="db", queued_at=99.0)
    assert record(rec, where) is True
    assert (rec.task_id, rec.queue, rec.queued_at, rec.worker) == ("t1", "db", 99.0, None)
    assert rec.started_at == 100.0  # not started on a worker yet: the submission time stays
    assert record(rec, where) is False  # the same again changes nothing
    assert record(rec, Placement(task_id="t1", queue="db", worker="w1@h", started_at=101.5))
    assert rec.worker == "w1@h" and rec.started_at == 101.5 and rec.queue_wait == 2.5
    # A later placement without a worker keeps the one known.
    record(rec, Placement(task_id="t1", queue="db"))
    assert rec.worker == "w1@h"


def test_a_local_executor_places_nothing_and_has_nothing_remote_to_stop() -> None:
    executor = LocalExecutor()
    try:
        steps = {"a": StepRecord(name="a", status=RUNNING)}
        assert apply(executor, steps) == []
        prior = RunRecord(run_id="r", workflow="w", file=None, definition_hash="h", params={},
                          steps={"a": StepRecord(name="a", status=FAILED),
                                 "b": StepRecord(name="b", status=RUNNING)})
        assert stop_remote(executor, prior, 0.1) == []
    finally:
        executor.close()


def test_an_executor_that_cannot_reach_workers_refuses_a_run_left_on_them() -> None:
    """REMOTE-3: `flowsh resume --executor local` of a run whose runner died with attempts
    on Celery workers would start those steps again beside them; it is refused instead."""
    executor = LocalExecutor()
    try:
        prior = RunRecord(run_id="r1", workflow="w", file=None, definition_hash="h", params={},
                          steps={"a": StepRecord(name="a", status=FAILED, task_id="t0"),
                                 "b": StepRecord(name="b", status=RUNNING, task_id="t1",
                                                 queue="db")})
        with pytest.raises(UsageError, match=r"run r1 left step\(s\) b on remote workers "
                                             r"\(queue db\).*resume with the executor"):
            stop_remote(executor, prior, 0.1)
    finally:
        executor.close()

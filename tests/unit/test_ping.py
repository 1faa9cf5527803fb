"""flowsh.ping: healthchecks-style pings to a real HTTP server on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.ping import Pinger, PingOnStart, check_ping_url, output_tail, with_suffix
from flowsh.runopts import Reporter
from flowsh.state import StepRecord

from . import backend_cases as cases
from .loopback import serve


def test_check_ping_url() -> None:
    assert check_ping_url("https://hc-ping.com/uuid") == "https://hc-ping.com/uuid"
    with pytest.raises(UsageError, match="http"):
        check_ping_url("hc-ping.com/uuid")


@pytest.mark.parametrize(("url", "suffix", "want"), [
    ("https://h/p/uuid", "/start", "https://h/p/uuid/start"),
    ("https://h/p/uuid/", "/7", "https://h/p/uuid/7"),
    ("https://h/ping/key/backup?create=1", "/7", "https://h/ping/key/backup/7?create=1"),
    ("https://h/x", "", "https://h/x"),
])
def test_with_suffix_keeps_the_query(url: str, suffix: str, want: str) -> None:
    assert with_suffix(url, suffix) == want


def test_start_success_and_failure_pings(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"x" * 50 + b"the end\n")
    run = cases.record("p1")
    run.steps["a"] = StepRecord("a", log_path=str(log))
    with serve([200]) as srv:
        p = Pinger(srv.url + "/uuid?rid=1")
        seen: list[str] = []

        class Inner(Reporter):
            def run_started(self, run, wf) -> None:  # type: ignore[no-untyped-def]
                seen.append("started")

        reporter = PingOnStart(Inner(), p)
        reporter.run_started(run, None)  # type: ignore[arg-type]
        p.finished(run, 0)
        p.finished(run, 3)
    assert seen == ["started"]
    assert [r.path for r in srv.requests] == ["/uuid/start?rid=1", "/uuid?rid=1", "/uuid/3?rid=1"]
    assert srv.requests[1].body.endswith(b"the end\n")


def test_undeliverable_ping_is_only_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    with serve([500]) as srv:
        Pinger(srv.url + "/u").send("/1")
    assert "warning: --ping" in capsys.readouterr().err
    with serve([200], hang=True) as srv:
        t0 = time.monotonic()
        Pinger(srv.url + "/u", timeout=0.3).send()
        assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    # Whichever gives up first: the join (no answer within the time), or urllib's own
    # socket timeout on a loaded machine. Either way one warning, and the job goes on.
    assert "no answer within 0.3s" in err or "TimeoutError: timed out" in err, err


def test_output_tail(tmp_path: Path) -> None:
    run = cases.record("t1")
    (tmp_path / "a.log").write_bytes(b"A" * 10)
    (tmp_path / "b.log").write_bytes(b"B" * 10)
    run.steps["a"].log_path = str(tmp_path / "a.log")
    run.steps["b"].log_path = str(tmp_path / "b.log")
    assert output_tail(run) == b"A" * 10 + b"B" * 10
    assert output_tail(run, limit=15) == b"A" * 5 + b"B" * 10
    run.steps["b"].log_path = str(tmp_path / "gone.log")
    assert output_tail(run) == b"A" * 10


def test_ping_on_start_passes_everything_through() -> None:
    calls: list[str] = []

    class Inner(Reporter):
        wants_output = True

        def step_output(self, step: str, line: str) -> None:
            calls.append(line)

    inner = Inner()
    r = PingOnStart(inner, Pinger("http://127.0.0.1:9/never-called"))
    assert r.wants_output
    r.prefix = True
    assert inner.prefix is True and r.prefix is True
    r.step_output("s", "hello")
    assert calls == ["hello"]


def test_undeliverable_ping_warning_hides_the_checks_secret(
        capsys: pytest.CaptureFixture[str]) -> None:
    with serve([500]) as srv:
        Pinger(srv.url + "/0f4c1a2e-uuid-secret").send("/1")
    err = capsys.readouterr().err
    assert "warning: --ping" in err and "0f4c1a2e-uuid-secret" not in err

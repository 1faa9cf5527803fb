"""Routing (events -> severity -> routes -> channels), rendering, masking, isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.errors import NotFoundError, WorkflowError
from flowsh.model import Notify, Workflow
from flowsh.notify import (
    Alert,
    channels_for,
    check_notify,
    dispatch,
    events_of,
    log_tail,
    render,
)


class Recorder:
    """A notifier plugin type ``rec`` keeping what it was sent, per channel."""

    sent: dict[str, list[Alert]]

    def __init__(self) -> None:
        self.sent = {}

    @hookimpl
    def flowsh_register_notifiers(self, register: Any) -> None:
        outer = self

        class Rec:
            def __init__(self, channel: str, config: dict[str, Any]) -> None:
                self.channel = channel
                self.fail = config.get("fail")
                self.hang = config.get("hang")

            def send(self, alert: Alert) -> None:
                if self.hang:
                    import time

                    time.sleep(float(self.hang))
                if self.fail:
                    raise RuntimeError(str(self.fail))
                outer.sent.setdefault(self.channel, []).append(alert)

        register("rec", Rec)


@pytest.fixture
def rec() -> Recorder:
    r = Recorder()
    plugins.get_plugin_manager().register(r, name="recorder")
    return r


def _alert(severity: str = "critical", **kw: Any) -> Alert:
    return Alert(severity=severity, event="run_failed", workflow="etl", run_id="r1", **kw)


SEED = {
    "channels": {"sms": {"type": "rec"}, "mail": {"type": "rec"}},
    "routes": {"critical": ["sms", "mail"], "warning": ["mail"], "info": ["log"]},
    "events": {"run_failed": "critical", "step_retry": "warning", "run_succeeded": "info"},
}


@pytest.mark.parametrize(("severity", "expected"), [
    ("critical", {"sms", "mail"}),
    ("warning", {"mail"}),
])
def test_seed_alert_routing(rec, severity, expected):
    notify = Notify.model_validate(SEED)
    outcomes = dispatch(_alert(severity), notify)
    assert all(o.ok for o in outcomes)
    assert set(rec.sent) == expected


def test_info_goes_to_the_implicit_log_channel(rec, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSH_HOME", str(tmp_path))
    notify = Notify.model_validate(SEED)
    [out] = dispatch(_alert("info", message="all good"), notify)
    assert out.ok, out.error
    assert rec.sent == {}
    log = (tmp_path / "alerts.log").read_text()
    assert " INFO etl r1 [INFO] etl: run failed" in log
    assert (tmp_path / "alerts.log").stat().st_mode & 0o777 == 0o600


def test_events_default_and_no_routes_means_every_channel(rec):
    notify = Notify.model_validate({"channels": {"a": {"type": "rec"}, "b": {"type": "rec"}}})
    assert events_of(notify) == {"run_failed": "critical", "run_long": "warning",
                                 "run_late": "warning"}
    assert channels_for(notify, "info") == ["a", "b"]
    notify = Notify.model_validate({**SEED, "routes": {"critical": ["sms"]}})
    assert channels_for(notify, "warning") == []


def test_a_failing_or_hanging_channel_does_not_stop_the_others(rec, capsys):
    notify = Notify.model_validate({
        "channels": {"bad": {"type": "rec", "fail": "boom"},
                     "slow": {"type": "rec", "hang": "5", "timeout": "0.2s"},
                     "good": {"type": "rec"}},
    })
    outcomes = {o.channel: o for o in dispatch(_alert(), notify)}
    assert outcomes["good"].ok and set(rec.sent) == {"good"}
    assert outcomes["bad"].error == "boom"
    assert outcomes["slow"].error == "timed out after 0.2s"
    err = capsys.readouterr().err
    assert "notify channel 'bad' failed to send run_failed alert: boom" in err


def test_errors_are_reported_once(rec, capsys):
    notify = Notify.model_validate({"channels": {"bad": {"type": "rec", "fail": "down"}}})
    dispatch(_alert(), notify)
    dispatch(_alert(), notify)
    assert capsys.readouterr().err.count("'bad' failed") == 1


def test_unknown_channel_and_type():
    notify = Notify.model_validate({"channels": {"x": {"type": "emial"}},
                                    "routes": {"critical": ["x", "nope"]}})
    outcomes = dispatch(_alert(), notify, quiet=True)
    assert "unknown notifier type 'emial' (did you mean 'email'?)" in outcomes[0].error
    assert "unknown notify channel 'nope'" in outcomes[1].error
    from flowsh.notify import channel_config

    with pytest.raises(NotFoundError):
        channel_config(notify, "nope")


def test_render_default_template_carries_the_facts():
    alert = _alert(step="load", exit_code=3, duration=75.0, host="db1",
                   log_tail="line a\nERROR b", message="step 'load' exited 3")
    out = render(alert, {"type": "log"}, "mail")
    assert out.subject == "[CRITICAL] etl: run failed (step load, exit 3) on db1"
    for fact in ("step 'load' exited 3", "Run:       r1", "Step:      load",
                 "Exit code: 3", "Duration:  1m15s", "Host:      db1", "ERROR b"):
        assert fact in out.text


def test_template_override_per_channel(tmp_path):
    (tmp_path / "sms.j2").write_text("{{ workflow }}/{{ step }} rc={{ exit_code }}")
    alert = _alert(step="load", exit_code=3, file=str(tmp_path / "etl.yaml"))
    out = render(alert, {"type": "command", "template": "sms.j2",
                         "subject": "ALERT {{ severity }}"}, "sms")
    assert out.text == "etl/load rc=3\n"
    assert out.subject == "ALERT critical"


def test_masking_covers_every_text_field():
    from flowsh.secrets import Masker

    alert = _alert(message="token tok-9999 leaked", log_tail="using tok-9999")
    out = render(alert, {"type": "log"}, "mail", Masker(["tok-9999"]))
    for text in (out.text, out.message, out.log_tail):
        assert "tok-9999" not in text and "***" in text


def test_log_tail_reads_the_end(tmp_path):
    p = tmp_path / "step.log"
    p.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(str(p), lines=3) == "line 97\nline 98\nline 99"
    assert log_tail(str(tmp_path / "missing")) == ""


def _workflow_file(tmp_path: Path, notify_yaml: str) -> Workflow:
    from flowsh.loader import load_workflow

    p = tmp_path / "etl.yaml"
    p.write_text("steps:\n  - name: a\n    run: 'true'\nnotify:\n" + notify_yaml)
    return load_workflow(p)


def test_check_notify_points_at_the_bad_key(tmp_path):
    wf = _workflow_file(tmp_path, (
        "  channels:\n"
        "    mail:\n"
        "      type: email\n"
        "      to: ops@example.com\n"
        "      prot: 25\n"
    ))
    with pytest.raises(WorkflowError) as exc:
        check_notify(wf)
    assert str(exc.value) == (
        f"{tmp_path / 'etl.yaml'}:9:7: notify channel 'mail' key 'prot': unknown key "
        "(did you mean 'port'?)"
    )


def test_check_notify_unknown_route_channel(tmp_path):
    wf = _workflow_file(tmp_path, "  routes:\n    critical: [pager]\n")
    with pytest.raises(WorkflowError, match=r"etl.yaml:6:16: notify.routes.critical: "
                                            r"unknown notify channel 'pager'"):
        check_notify(wf)


def test_check_notify_bad_template(tmp_path):
    (tmp_path / "t.j2").write_text("{% if %}")
    wf = _workflow_file(tmp_path, "  channels:\n    l: {type: log, template: t.j2}\n")
    with pytest.raises(WorkflowError, match="notify channel 'l' key 'template': template error"):
        check_notify(wf)

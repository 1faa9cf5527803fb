"""The email notifier against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from flowsh.errors import WorkflowError
from flowsh.model import Notify
from flowsh.notify import Alert, dispatch
from tests.notify_servers import (  # noqa: F401 (fixtures)
    _smtp,
    silent_server_fixture,
    smtp_auth_fixture,
    smtp_refusing_fixture,
    smtp_server_fixture,
)


def _alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(severity="critical", event="run_failed", workflow="etl",
                                   run_id="20260101-abc", step="load", exit_code=3,
                                   message="step 'load' exited 3",
                                   log_tail="COPY failed: password=hunter2-secret")
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def _notify(**mail: object) -> Notify:
    return Notify.model_validate({"channels": {"mail": {"type": "email", **mail}},
                                  "routes": {"critical": ["mail"]}})


def test_mail_is_received(smtp_server):
    notify = _notify(to=["ops@example.com", "dba@example.com"], host=smtp_server.host,
                     port=smtp_server.port, **{"from": "etl@example.com"})
    [out] = dispatch(_alert(), notify)
    assert out.ok, out.error
    [(envelope, msg)] = smtp_server.messages
    assert envelope.mail_from == "etl@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dba@example.com"]
    assert msg["Subject"] == "[CRITICAL] etl: run failed (step load, exit 3) on " + _alert().host
    body = msg.get_content()
    assert "Run:       20260101-abc" in body and "COPY failed" in body
    assert msg["X-Flowsh-Severity"] == "critical"


def test_secrets_are_masked_in_the_mail(smtp_server):
    from flowsh.secrets import Masker

    notify = _notify(to="ops@example.com", host=smtp_server.host, port=smtp_server.port)
    [out] = dispatch(_alert(), notify, masker=Masker(["hunter2-secret"]))
    assert out.ok, out.error
    body = smtp_server.messages[0][1].get_content()
    assert "hunter2" not in body and "password=***" in body


def test_refusing_server_is_reported_not_raised(smtp_refusing, capsys):
    notify = _notify(to="ops@example.com", host=smtp_refusing.host, port=smtp_refusing.port)
    [out] = dispatch(_alert(), notify)
    assert not out.ok and "relaying denied" in out.error
    assert smtp_refusing.messages == []
    assert "notify channel 'mail' failed to send run_failed alert" in capsys.readouterr().err


def test_silent_server_times_out(silent_server):
    host, port = silent_server
    notify = _notify(to="ops@example.com", host=host, port=port, timeout="0.3s")
    [out] = dispatch(_alert(), notify)
    assert not out.ok
    assert "timed out" in out.error


def test_auth_from_env(smtp_auth, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    notify = _notify(to="ops@example.com", host=smtp_auth.host, port=smtp_auth.port,
                     username="ops", password_env="SMTP_PASSWORD")
    [out] = dispatch(_alert(), notify)
    assert out.ok, out.error
    assert smtp_auth.auth == [("ops", "PLAIN")] or smtp_auth.auth[0][0] == "ops"
    assert len(smtp_auth.messages) == 1


def test_wrong_password_fails(smtp_auth, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-pass")
    notify = _notify(to="ops@example.com", host=smtp_auth.host, port=smtp_auth.port,
                     username="ops", password_env="SMTP_PASSWORD")
    [out] = dispatch(_alert(), notify)
    assert not out.ok and "wrong-pass" not in out.error, out.error
    assert "535" in out.error
    assert smtp_auth.messages == []


def test_missing_password_env_is_reported(smtp_auth, monkeypatch):
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    notify = _notify(to="ops@example.com", host=smtp_auth.host, port=smtp_auth.port,
                     username="ops", password_env="SMTP_PASSWORD")
    [out] = dispatch(_alert(), notify)
    assert not out.ok and "$SMTP_PASSWORD" in out.error


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return crt, key


def test_starttls_with_private_ca(cert):
    crt, key = cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    server = _smtp(users={"ops": "pw-over-tls"}, tls=ctx)
    rec = next(server)
    try:
        import os

        os.environ["TLS_PW"] = "pw-over-tls"
        notify = _notify(to="ops@example.com", host=rec.host, port=rec.port,
                         security="starttls", ca_file=str(crt), username="ops",
                         password_env="TLS_PW")
        [out] = dispatch(_alert(), notify)
        assert out.ok, out.error
        assert len(rec.messages) == 1 and rec.auth[0][0] == "ops"
        # Without the CA the certificate is refused: no silent downgrade.
        notify = _notify(to="ops@example.com", host=rec.host, port=rec.port,
                         security="starttls")
        [out] = dispatch(_alert(), notify)
        assert not out.ok and "CERTIFICATE_VERIFY_FAILED" in out.error
    finally:
        del os.environ["TLS_PW"]
        next(server, None)


@pytest.mark.parametrize(("config", "key"), [
    ({}, "to"),
    ({"to": "not-an-address"}, "to"),
    ({"to": "a@b.c", "port": "smtp"}, "port"),
    ({"to": "a@b.c", "security": "tls"}, "security"),
    ({"to": "a@b.c", "pasword_env": "X"}, "pasword_env"),
    ({"to": "a@b.c", "timeout": "soon"}, "timeout"),
])
def test_bad_config_names_channel_and_key(config, key):
    from flowsh.plugins import registry

    with pytest.raises(WorkflowError, match=f"notify channel 'mail' key '{key}'"):
        registry("notifiers")["email"]("mail", config)

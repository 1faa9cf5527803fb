"""The user config file: $XDG_CONFIG_HOME/flowsh/config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsh.config import config_path, load_user_config, merge
from flowsh.errors import WorkflowError


def _write(home: Path, text: str) -> Path:
    p = home / "config" / "flowsh" / "config.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_missing_or_empty_file_is_empty_config(home):
    assert config_path() == home / "config" / "flowsh" / "config.yaml"
    assert load_user_config() == {}
    _write(home, "\n# nothing yet\n")
    assert load_user_config() == {}


def test_valid_config(home):
    _write(home, """\
notify:
  channels:
    mail: {type: email, to: ops@example.com}
  routes: {critical: [mail]}
defaults: {retries: 2, timeout: 1h}
state: sqlite:///tmp/x.db
""")
    cfg = load_user_config()
    assert cfg["notify"]["channels"]["mail"]["to"] == "ops@example.com"
    assert cfg["defaults"]["retries"] == 2 and cfg["state"] == "sqlite:///tmp/x.db"


def test_flowsh_config_env_wins(tmp_path, monkeypatch):
    p = tmp_path / "other.yaml"
    p.write_text("state: json:///tmp/s\n")
    monkeypatch.setenv("FLOWSH_CONFIG", str(p))
    assert load_user_config() == {"state": "json:///tmp/s"}


@pytest.mark.parametrize(("text", "where", "message"), [
    ("notfy: {}\n", ":1:1:", "unknown key 'notfy' in the flowsh config (did you mean 'notify'?)"),
    ("notify:\n  routes: {urgent: [mail]}\n", ":2:", "key 'notify.routes.urgent'"),
    ("defaults:\n  retries: many\n", ":2:12:", "key 'defaults.retries'"),
    ("notify:\n  events: {run_failed: loud}\n", ":2:", "notify.events.run_failed"),
    ("state: [1]\n", ":1:8:", "key 'state': must be a state URL string"),
    ("notify: [\n", ":", "malformed YAML"),
])
def test_errors_name_file_line_and_key(home, text, where, message):
    p = _write(home, text)
    with pytest.raises(WorkflowError) as exc:
        load_user_config()
    assert str(exc.value).startswith(f"{p}{where}")
    assert message in str(exc.value)


def test_merge_workflow_wins():
    user = {"channels": {"mail": {"type": "email", "to": "a@x", "host": "smtp"}},
            "routes": {"critical": ["mail"]}}
    wf = {"channels": {"mail": {"to": "b@x"}}, "routes": {"critical": ["sms"]}}
    assert merge(user, wf) == {
        "channels": {"mail": {"type": "email", "to": "b@x", "host": "smtp"}},
        "routes": {"critical": ["sms"]},
    }

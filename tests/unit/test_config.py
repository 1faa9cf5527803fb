"""flowsh.config: the user config file, its location, validation and merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsh.config import config_path, load_user_config, merge
from flowsh.errors import WorkflowError


def test_config_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLOWSH_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "flowsh" / "config.yaml"
    monkeypatch.setenv("FLOWSH_CONFIG", str(tmp_path / "mine.yaml"))
    assert config_path() == tmp_path / "mine.yaml"
    monkeypatch.delenv("FLOWSH_CONFIG")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path() == Path("~/.config/flowsh/config.yaml").expanduser()


def test_missing_empty_and_comment_only_are_empty(tmp_path: Path) -> None:
    assert load_user_config(tmp_path / "none.yaml") == {}
    p = tmp_path / "c.yaml"
    p.write_text("")
    assert load_user_config(p) == {}
    p.write_text("# nothing yet\n")
    assert load_user_config(p) == {}


def test_valid_config(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("defaults:\n  retries: 2\n  timeout: 5m\nstate: sqlite:///tmp/x.db\n")
    assert load_user_config(p) == {"defaults": {"retries": 2, "timeout": "5m"},
                                   "state": "sqlite:///tmp/x.db"}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("defaults: {}\nnotfy: {}\n", 2, "unknown key 'notfy' in the flowsh config (did you mean 'notify'?)"),
    ("- a\n", 1, "must be a mapping"),
    ("state: 3\n", 1, "key 'state': must be a state URL string"),
    ("defaults:\n  retries: many\n", 2, "retries"),
    ("defaults:\n  retires: 2\n", 2, "unknown key 'retires'"),
    ("defaults: [1]\n", 1, "key 'defaults': must be a mapping"),
])
def test_invalid_config_names_file_and_line(tmp_path: Path, text: str, line: int,
                                            message: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(WorkflowError) as exc:
        load_user_config(p)
    assert exc.value.path == str(p) and exc.value.line == line
    assert message in str(exc.value)


def test_unreadable_config(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(WorkflowError, match="cannot read the flowsh config file"):
        load_user_config(p)


def test_merge_recursive_workflow_wins() -> None:
    user = {"defaults": {"retries": 2, "timeout": "5m"}, "notify": {"on": ["failure"]}}
    wf = {"defaults": {"retries": 0}, "notify": ["x"], "name": "w"}
    assert merge(user, wf) == {"defaults": {"retries": 0, "timeout": "5m"}, "notify": ["x"],
                               "name": "w"}
    assert user["defaults"] == {"retries": 2, "timeout": "5m"}  # inputs left alone

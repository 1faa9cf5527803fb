"""Minimal shared fixtures (the lead's conftest supersedes this one on merge)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("flowsh-home")
    monkeypatch.setenv("FLOWSH_HOME", str(home))
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "0")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    from flowsh import plugins

    plugins.reset()
    yield
    plugins.reset()

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _flowsh_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own FLOWSH_HOME and ignores installed third-party plugins."""
    monkeypatch.setenv("FLOWSH_HOME", str(tmp_path_factory.mktemp("flowsh-home")))
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "0")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))

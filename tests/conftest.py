from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _flowsh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FLOWSH_HOME", str(tmp_path / "flowsh-home"))
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "0")
    monkeypatch.delenv("FLOWSH_METRICS_PUSH", raising=False)
    from flowsh import plugins

    plugins.reset()
    yield
    plugins.reset()

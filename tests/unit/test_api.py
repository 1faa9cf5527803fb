"""flowsh.api: the plugin author's surface, lazily loaded, each name the real object."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import flowsh.api as api


def test_every_exported_name_resolves() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name


def test_names_are_the_internal_objects() -> None:
    from flowsh.durations import parse_duration
    from flowsh.plugins import reset
    from flowsh.process import LocalExecutor
    from flowsh.secrets import Masker

    assert api.parse_duration is parse_duration
    assert api.LocalExecutor is LocalExecutor
    assert api.Masker is Masker
    assert api.reset_plugins is reset  # the one renamed name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'engine'"):
        api.engine  # noqa: B018


def test_importing_api_loads_nothing_heavy() -> None:
    code = ("import sys; import flowsh.api; from flowsh.api import hookimpl; "
            "print(' '.join(m for m in ('flowsh.engine', 'flowsh.notify', 'flowsh.loader', "
            "'yaml', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_all_is_unique() -> None:
    assert len(set(api.__all__)) == len(api.__all__)


def test_every_name_in_all_is_documented() -> None:
    from pathlib import Path

    doc = (Path(importlib.import_module("flowsh").__file__).parent.parent / "docs" / "plugins.md")
    text = doc.read_text()
    missing = [n for n in api.__all__ if n not in text]
    assert missing == []

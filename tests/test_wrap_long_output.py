"""Hundreds of MB through a wrapped step: flowsh's memory stays flat (peak RSS, not time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_wrap", ROOT / "scripts" / "bench_wrap.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("quiet", [False, True])
def test_200mb_of_output_with_flat_memory(quiet: bool) -> None:
    b = bench()
    small = b.measure_long_output(2, quiet_on_success=quiet)
    big = b.measure_long_output(200, quiet_on_success=quiet)
    assert big["exit_code"] == small["exit_code"] == 0
    assert big["log_bytes"] == 200_000_000  # all of it reached the step log
    assert big["peak_rss_mb"] < 200
    # 100x the output, about the same memory: nothing grows with the output.
    assert big["peak_rss_mb"] - small["peak_rss_mb"] < 30, (small, big)


def test_one_endless_line_is_passed_on_in_pieces() -> None:
    b = bench()
    big = b.measure_long_output(100, newlines=False)
    assert big["exit_code"] == 0
    assert big["peak_rss_mb"] < 200
    assert big["log_bytes"] >= 100_000_000  # the pieces, plus a newline after each

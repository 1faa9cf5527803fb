"""Tests mirror the source tree (issue 12): every module under flowsh/ has a test file.

* ``flowsh/<m>.py``          -> ``tests/test_<m>.py`` or ``tests/unit/test_<m>.py``
* ``flowsh/builtin/<m>.py``  -> ``tests/test_<m>.py`` or ``tests/unit/test_builtin_<m>.py``
* ``flowsh/commands/<m>.py`` -> ``tests/test_<m>*.py`` (end-to-end, through the CLI) or
  ``tests/unit/test_commands_<m>.py``, or an entry in COVERED_END_TO_END naming the
  end-to-end tests that drive it.
* ``flowsh/web/<m>.py``      -> ``tests/unit/test_web_<m>.py``, or the package's end-to-end
  tests (WEB_END_TO_END, against a real server process).
* any other package under flowsh/ fails until it gets a rule here.

A new module without a test file fails here, naming the file to write.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "flowsh"
EXEMPT = {"__init__", "__main__"}

# Command modules whose sub-commands are covered by end-to-end tests with other names.
COVERED_END_TO_END = {
    "core": ["test_cli.py", "test_engine.py", "test_firsthour_small.py"],  # run resume retry validate graph schema
    "importer": ["test_firsthour_script.py", "test_seed_run.py"],  # flowsh import
    "runs": ["test_cli.py", "test_firsthour_status.py", "test_monitor_logs.py"],  # status history logs prune
    "stats": ["test_monitor_e2e.py", "test_monitor_stats.py"],  # flowsh stats
    "serve": ["test_web_api.py", "test_web_schema.py"],  # flowsh serve (the web UI and API)
}

# flowsh/web/ (the web UI) is tested as a whole against a real server process; a module of
# it may also get tests/unit/test_web_<m>.py.
WEB_END_TO_END = ["test_web_api.py", "test_web_schema.py", "test_web_browser.py"]
KNOWN_PACKAGES = {"builtin", "commands", "web"}


def _modules(sub: str = "") -> list[str]:
    return sorted(p.stem for p in (PACKAGE / sub).glob("*.py") if p.stem not in EXEMPT)


def _has_tests(path: Path) -> bool:
    """A test file that holds at least one test function (an empty file is no test)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            return True
    return False


def _found(candidates: list[Path]) -> list[Path]:
    return [p for p in candidates if p.is_file() and _has_tests(p)]


@pytest.mark.parametrize("module", _modules())
def test_core_module_has_a_test_file(module: str) -> None:
    want = [TESTS / f"test_{module}.py", TESTS / "unit" / f"test_{module}.py"]
    assert _found(want), (f"flowsh/{module}.py has no tests: write tests/unit/test_{module}.py "
                          "(see tests/unit/test_mirror.py)")


@pytest.mark.parametrize("module", _modules("builtin"))
def test_builtin_module_has_a_test_file(module: str) -> None:
    want = [TESTS / f"test_{module}.py", TESTS / "unit" / f"test_builtin_{module}.py"]
    assert _found(want), (f"flowsh/builtin/{module}.py has no tests: write "
                          f"tests/unit/test_builtin_{module}.py")


@pytest.mark.parametrize("module", _modules("commands"))
def test_command_module_is_covered(module: str) -> None:
    named = [*TESTS.glob(f"test_{module}*.py"), TESTS / "unit" / f"test_commands_{module}.py"]
    listed = [TESTS / name for name in COVERED_END_TO_END.get(module, [])]
    assert _found(named) or (listed and len(_found(listed)) == len(listed)), (
        f"flowsh/commands/{module}.py has no tests: write tests/test_{module}.py (end to end) "
        f"or tests/unit/test_commands_{module}.py, or name its end-to-end tests in "
        "COVERED_END_TO_END")


def test_every_subpackage_is_mirrored() -> None:
    """A new package under flowsh/ needs a rule here (and its tests), not silence."""
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages - {"templates"} <= KNOWN_PACKAGES, packages - KNOWN_PACKAGES


@pytest.mark.parametrize("module", _modules("web"))
def test_web_module_is_covered(module: str) -> None:
    unit = _found([TESTS / "unit" / f"test_web_{module}.py"])
    e2e = _found([TESTS / name for name in WEB_END_TO_END])
    assert unit or len(e2e) == len(WEB_END_TO_END), (
        f"flowsh/web/{module}.py has no tests: write tests/unit/test_web_{module}.py")


def test_the_explicit_list_names_only_real_modules() -> None:
    """An entry for a removed or renamed command module would excuse nothing: keep it honest."""
    assert set(COVERED_END_TO_END) <= set(_modules("commands"))


def test_unit_files_mirror_a_module() -> None:
    """The other way round: a unit test file named after no module is a leftover."""
    helpers = {"__init__", "backend_cases", "loopback", "test_mirror"}
    modules = set(_modules()) | {f"builtin_{m}" for m in _modules("builtin")} | \
        {f"commands_{m}" for m in _modules("commands")} | {f"web_{m}" for m in _modules("web")}
    stray = [p.name for p in (TESTS / "unit").glob("*.py")
             if p.stem not in helpers and p.stem.removeprefix("test_") not in modules]
    assert stray == []
